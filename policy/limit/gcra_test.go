package limit

import "testing"

func TestNeedTakeStatus(t *testing.T) {
	r := Rule{Key: "k", Interval: 100, Burst: 5, Cost: 2} // tau = 500
	for _, c := range []struct {
		name            string
		tat, now        int64
		need            int64
		remaining, rest int64 // Status of Take(tat, now) when need <= 0
	}{
		{"empty bucket", 0, 1000, -300, 3, 200},
		{"full bucket, old tat", 900, 1000, -300, 3, 200},
		{"half used", 1300, 1000, 0, 0, 500},
		{"one unit over", 1400, 1000, 100, 0, 0},
	} {
		if got := Need(c.tat, c.now, &r); got != c.need {
			t.Errorf("%s: Need = %d, want %d", c.name, got, c.need)
		}
		if c.need > 0 {
			continue
		}
		rem, reset := Status(Take(c.tat, c.now, r.Interval, r.Cost), c.now, &r)
		if rem != c.remaining || reset != c.rest {
			t.Errorf("%s: Status after Take = %d, %d; want %d, %d", c.name, rem, reset, c.remaining, c.rest)
		}
	}
}

func TestStatusFloor(t *testing.T) {
	r := Rule{Interval: 100, Burst: 5}
	for _, c := range []struct{ tat, remaining, reset int64 }{
		{0, 5, 0}, {1001, 4, 1}, {1100, 4, 100}, {1101, 3, 101}, {1500, 0, 500}, {1600, 0, 600},
	} {
		rem, reset := Status(c.tat, 1000, &r)
		if rem != c.remaining || reset != c.reset {
			t.Errorf("Status(%d) = %d, %d; want %d, %d", c.tat, rem, reset, c.remaining, c.reset)
		}
	}
}

func TestRefund(t *testing.T) {
	for _, c := range []struct{ tat, n, want int64 }{
		{1500, 2, 1300}, // partial refund
		{1500, 9, 1000}, // never below full (now)
		{900, 1, 900},   // already full: unchanged
	} {
		if got := Refund(c.tat, 1000, 100, c.n); got != c.want {
			t.Errorf("Refund(%d, n=%d) = %d, want %d", c.tat, c.n, got, c.want)
		}
	}
}

func TestVerdict(t *testing.T) {
	rules := []Rule{
		{Interval: 100, Burst: 5, Cost: 1},
		{Interval: 10, Burst: 2, Cost: 3}, // cost > burst
	}
	var d Decision
	v := newVerdict()
	v.rule(0, &rules[0], 1700, 1000) // need 300
	v.decide(0, &d)
	if d.Allowed || d.RetryAfter != 300 || d.Limiting != 0 {
		t.Errorf("over by 300: %s", show(d))
	}
	v.decide(300, &d)
	if !d.Allowed || d.Wait != 300 || d.Limiting != 0 {
		t.Errorf("MaxWait 300: %s", show(d))
	}
	v.lease(2, 500)
	v.decide(300, &d)
	if d.Allowed || d.RetryAfter != 500 || d.Limiting != 2 || d.Wait != 0 {
		t.Errorf("lease full: %s", show(d))
	}
	v.rule(1, &rules[1], 0, 1000)
	v.decide(300, &d)
	if d.Allowed || d.RetryAfter != -1 || d.Limiting != 1 {
		t.Errorf("never: %s", show(d))
	}
}
