package limit

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// These tests run against both stores (eachStore) on an explicit timeline.

func TestBurstThenRate(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		r := Rule{Key: "u:a:rpm", Interval: sec, Burst: 5, Cost: 1} // 60/min, burst 5
		for i := range 5 {
			d := reserve(t, s, Request{Rules: []Rule{r}, Now: t0})
			if !d.Allowed || d.Remaining[0] != int64(4-i) || d.Reset[0] != int64(i+1)*sec {
				t.Fatalf("request %d of the burst: %s", i, show(d))
			}
		}
		d := reserve(t, s, Request{Rules: []Rule{r}, Now: t0})
		if d.Allowed || d.RetryAfter != sec || d.Limiting != 0 || d.Remaining[0] != 0 || d.Reset[0] != 5*sec {
			t.Fatalf("request over the burst: %s", show(d))
		}
		// after that: one per second, exactly
		if d = reserve(t, s, Request{Rules: []Rule{r}, Now: t0 + sec - 1}); d.Allowed {
			t.Fatalf("1 µs early: %s", show(d))
		}
		if d = reserve(t, s, Request{Rules: []Rule{r}, Now: t0 + sec}); !d.Allowed || d.Wait != 0 || d.Limiting != -1 {
			t.Fatalf("after one interval: %s", show(d))
		}
		// idle for a long time: the bucket is full again, not fuller
		d = reserve(t, s, Request{Rules: []Rule{{Key: r.Key, Interval: sec, Burst: 5}}, Now: t0 + 3600*sec})
		if !d.Allowed || d.Remaining[0] != 5 || d.Reset[0] != 0 {
			t.Fatalf("cost 0 after an hour: %s", show(d))
		}
	})
}

// TestRetryAfterExact: a denied request retried exactly RetryAfter µs later is
// admitted, and one µs earlier it is still denied, for random bucket states,
// several rules (the longest decides), leases and MaxWait.
func TestRetryAfterExact(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		rng := rand.New(rand.NewPCG(1, 2))
		ctx := context.Background()
		checked := 0
		for iter := range 200 {
			key := func(name string) string { return name + ":" + string(rune('a'+iter%26)) + string(rune('a'+iter/26)) }
			rules := []Rule{
				{Key: key("rpm"), Interval: 1 + rng.Int64N(100*ms), Burst: 1 + rng.Int64N(5)},
				{Key: key("tpm"), Interval: 1 + rng.Int64N(ms), Burst: 1 + rng.Int64N(5000)},
				{Key: key("tpd"), Interval: 1 + rng.Int64N(10*ms), Burst: 1 + rng.Int64N(500)},
			}
			leases := []Lease{{Key: key("conc"), Limit: 1 + rng.Int64N(3), TTL: 1 + rng.Int64N(sec)}}
			now := int64(t0)
			// fill the buckets with earlier traffic
			for j := range 1 + rng.IntN(8) {
				for i := range rules {
					rules[i].Cost = rng.Int64N(rules[i].Burst + 1)
				}
				d := reserve(t, s, Request{Rules: rules, Leases: leases, LeaseID: "fill" + string(rune('0'+j)), Now: now})
				_ = d
				now += rng.Int64N(50 * ms)
			}
			for i := range rules {
				rules[i].Cost = rng.Int64N(rules[i].Burst + 1)
			}
			req := Request{Rules: rules, Leases: leases, LeaseID: "probe", MaxWait: rng.Int64N(3) * rng.Int64N(100*ms), Now: now}
			d := reserve(t, s, req)
			if d.Allowed {
				if err := s.Cancel(ctx, &req); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if d.RetryAfter <= 0 {
				t.Fatalf("denied without a positive RetryAfter: %s", show(d))
			}
			early := req
			early.Now = now + d.RetryAfter - 1
			if e := reserve(t, s, early); e.Allowed || e.Limiting != d.Limiting {
				t.Fatalf("iter %d: retried 1 µs before RetryAfter: first %s, then %s", iter, show(d), show(e))
			}
			exact := req
			exact.Now = now + d.RetryAfter
			if e := reserve(t, s, exact); !e.Allowed || e.Wait > req.MaxWait {
				t.Fatalf("iter %d: retried exactly RetryAfter later: first %s, then %s", iter, show(d), show(e))
			}
			checked++
		}
		if checked < 50 {
			t.Fatalf("only %d of 200 random cases were denials; the test needs more", checked)
		}
	})
}

// TestLongestRuleDecides: with two denying rules, RetryAfter comes from the
// one that needs longer, and waiting that long admits the request.
func TestLongestRuleDecides(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		rpm := Rule{Key: "rpm", Interval: sec, Burst: 1, Cost: 1}
		tpm := Rule{Key: "tpm", Interval: ms, Burst: 1000, Cost: 1000}
		reserve(t, s, Request{Rules: []Rule{rpm, tpm}, Now: t0}) // both empty now
		tpm.Cost = 600                                           // needs 600 ms; rpm needs 1 s... at t0+0.5s:
		d := reserve(t, s, Request{Rules: []Rule{tpm, rpm}, Now: t0 + 500*ms})
		if d.Allowed || d.Limiting != 1 || d.RetryAfter != 500*ms {
			t.Fatalf("rpm should decide: %s", show(d))
		}
		tpm.Cost = 1000 // now tpm needs 1000 ms - 500 ms = 500 ms too: a tie goes to index 0
		if d = reserve(t, s, Request{Rules: []Rule{tpm, rpm}, Now: t0 + 500*ms}); d.Limiting != 0 || d.RetryAfter != 500*ms {
			t.Fatalf("tie: %s", show(d))
		}
		if d = reserve(t, s, Request{Rules: []Rule{tpm, rpm}, Now: t0 + sec}); !d.Allowed {
			t.Fatalf("after RetryAfter: %s", show(d))
		}
	})
}

func TestAllOrNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		a := Rule{Key: "a", Interval: ms, Burst: 10, Cost: 3}
		b := Rule{Key: "b", Interval: ms, Burst: 2, Cost: 2}
		l := Lease{Key: "l", Limit: 5, TTL: sec}
		reserve(t, s, Request{Rules: []Rule{b}, Now: t0}) // b is now empty
		d := reserve(t, s, Request{Rules: []Rule{a, b}, Leases: []Lease{l}, LeaseID: "r1", Now: t0})
		if d.Allowed || d.Limiting != 1 || d.RetryAfter != 2*ms || d.Remaining[0] != 10 || d.Reset[0] != 0 {
			t.Fatalf("denied by rule 2: %s", show(d))
		}
		a.Cost, b.Cost = 0, 0
		d = reserve(t, s, Request{Rules: []Rule{a, b}, Now: t0})
		if d.Remaining[0] != 10 || d.Reset[0] != 0 {
			t.Fatalf("rule 1 was touched by a denied request: %s", show(d))
		}
		// and the lease was not taken: 5 others fit
		for i := range 5 {
			if d = reserve(t, s, Request{Leases: []Lease{l}, LeaseID: string(rune('A' + i)), Now: t0}); !d.Allowed {
				t.Fatalf("lease %d: %s", i, show(d))
			}
		}
		// and a denial by a lease leaves the rules untouched
		a.Cost = 4
		if d = reserve(t, s, Request{Rules: []Rule{a}, Leases: []Lease{l}, LeaseID: "r2", Now: t0}); d.Allowed || d.Limiting != 1 || d.RetryAfter != sec {
			t.Fatalf("denied by lease: %s", show(d))
		}
		if d = reserve(t, s, Request{Rules: []Rule{a}, Now: t0}); d.Remaining[0] != 6 {
			t.Fatalf("rule after a lease denial: %s", show(d))
		}
	})
}

func TestLeases(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		ctx := context.Background()
		l := []Lease{{Key: "conc", Limit: 2, TTL: 10 * sec}}
		for i, id := range []string{"r1", "r2"} {
			if d := reserve(t, s, Request{Leases: l, LeaseID: id, Now: t0 + int64(i)*sec}); !d.Allowed {
				t.Fatalf("%s: %s", id, show(d))
			}
		}
		d := reserve(t, s, Request{Leases: l, LeaseID: "r3", Now: t0 + 2*sec})
		if d.Allowed || d.Limiting != 0 || d.RetryAfter != 8*sec {
			t.Fatalf("third lease: %s", show(d))
		}
		// a lease never released frees itself after its TTL
		if d = reserve(t, s, Request{Leases: l, LeaseID: "r3", Now: t0 + 10*sec - 1}); d.Allowed {
			t.Fatalf("1 µs before r1 expires: %s", show(d))
		}
		if d = reserve(t, s, Request{Leases: l, LeaseID: "r3", Now: t0 + 10*sec}); !d.Allowed {
			t.Fatalf("when r1 expires: %s", show(d))
		}
		// release frees a slot at once
		if err := s.Release(ctx, l, "r2"); err != nil {
			t.Fatal(err)
		}
		if d = reserve(t, s, Request{Leases: l, LeaseID: "r4", Now: t0 + 10*sec}); !d.Allowed {
			t.Fatalf("after releasing r2: %s", show(d))
		}
		if d = reserve(t, s, Request{Leases: l, LeaseID: "r5", Now: t0 + 10*sec}); d.Allowed {
			t.Fatalf("r3 and r4 hold both slots: %s", show(d))
		}
		// limit 0 never admits
		if d = reserve(t, s, Request{Leases: []Lease{{Key: "off", Limit: 0, TTL: sec}}, LeaseID: "x", Now: t0}); d.Allowed || d.RetryAfter != -1 || d.Limiting != 0 {
			t.Fatalf("limit 0: %s", show(d))
		}
	})
}

// TestMaxWaitCancel: an over-budget request within MaxWait reserves a future
// slot; Cancel gives that slot back to the next request.
func TestMaxWaitCancel(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		ctx := context.Background()
		r := []Rule{{Key: "rpm", Interval: sec, Burst: 1, Cost: 1}}
		l := []Lease{{Key: "conc", Limit: 10, TTL: 5 * sec}}
		reserve(t, s, Request{Rules: r, Now: t0})
		b := Request{Rules: r, Leases: l, LeaseID: "b", MaxWait: 5 * sec, Now: t0}
		d := reserve(t, s, b)
		if !d.Allowed || d.Wait != sec || d.Limiting != 0 || d.Reset[0] != 2*sec {
			t.Fatalf("b waits 1 s: %s", show(d))
		}
		if d = reserve(t, s, Request{Rules: r, MaxWait: 5 * sec, Now: t0}); !d.Allowed || d.Wait != 2*sec {
			t.Fatalf("c waits 2 s: %s", show(d))
		}
		if d = reserve(t, s, Request{Rules: r, MaxWait: 2*sec + 999*ms, Now: t0}); d.Allowed || d.RetryAfter != sec-999*ms {
			t.Fatalf("d would wait 3 s: %s", show(d))
		}
		b.Now = t0 + 100*ms // b's client leaves
		if err := s.Cancel(ctx, &b); err != nil {
			t.Fatal(err)
		}
		if d = reserve(t, s, Request{Rules: r, MaxWait: 5 * sec, Now: t0 + 100*ms}); !d.Allowed || d.Wait != 2*sec-100*ms {
			t.Fatalf("e takes b's place at the end of the queue: %s", show(d))
		}
		// b's lease was released by Cancel: 10 fit again
		for i := range 10 {
			if d = reserve(t, s, Request{Leases: l, LeaseID: string(rune('A' + i)), Now: t0 + 100*ms}); !d.Allowed {
				t.Fatalf("lease %d after cancel: %s", i, show(d))
			}
		}
	})
}

// TestWaitingLeaseStartsLater: a lease taken by a waiting request expires TTL
// after the request starts, not after it was reserved.
func TestWaitingLeaseStartsLater(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		r := []Rule{{Key: "rpm", Interval: sec, Burst: 1, Cost: 1}}
		l := []Lease{{Key: "conc", Limit: 1, TTL: sec}}
		reserve(t, s, Request{Rules: r, Now: t0})
		if d := reserve(t, s, Request{Rules: r, Leases: l, LeaseID: "w", MaxWait: 2 * sec, Now: t0}); !d.Allowed || d.Wait != sec {
			t.Fatalf("waiting request: %s", show(d))
		}
		if d := reserve(t, s, Request{Leases: l, LeaseID: "x", Now: t0 + sec}); d.Allowed || d.RetryAfter != sec {
			t.Fatalf("lease of the waiting request should live until t0+2s: %s", show(d))
		}
	})
}

func TestAdjust(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		ctx := context.Background()
		r := Rule{Key: "tpm", Interval: ms, Burst: 1000, Cost: 400}
		reserve(t, s, Request{Rules: []Rule{r}, Now: t0})
		read := func(now int64) Decision {
			return reserve(t, s, Request{Rules: []Rule{{Key: r.Key, Interval: r.Interval, Burst: r.Burst}}, Now: now})
		}
		// the response used 100 tokens: refund 300
		if err := s.AdjustAt(ctx, r, -300, t0); err != nil {
			t.Fatal(err)
		}
		if d := read(t0); d.Remaining[0] != 900 || d.Reset[0] != 100*ms {
			t.Fatalf("after refund: %s", show(d))
		}
		// a refund never makes the bucket fuller than full
		if err := s.AdjustAt(ctx, r, -5000, t0); err != nil {
			t.Fatal(err)
		}
		if d := read(t0); d.Remaining[0] != 1000 || d.Reset[0] != 0 {
			t.Fatalf("after over-refund: %s", show(d))
		}
		// a charge beyond the burst puts the bucket in debt
		if err := s.AdjustAt(ctx, r, 1500, t0); err != nil {
			t.Fatal(err)
		}
		if d := read(t0); d.Remaining[0] != 0 || d.Reset[0] != 1500*ms {
			t.Fatalf("after charge: %s", show(d))
		}
		r.Cost = 1
		if d := reserve(t, s, Request{Rules: []Rule{r}, Now: t0}); d.Allowed || d.RetryAfter != 501*ms {
			t.Fatalf("in debt: %s", show(d))
		}
		// Adjust on the store's own clock works too
		if err := s.Adjust(ctx, Rule{Key: "own", Interval: ms, Burst: 1}, 1); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSpecialRules(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		rules := []Rule{
			{Key: "off", Interval: 0, Cost: 5},              // disabled
			{Key: "big", Interval: ms, Burst: 10, Cost: 11}, // can never fit
			{Key: "free", Interval: ms, Burst: 10, Cost: 0}, // reads only
		}
		d := reserve(t, s, Request{Rules: rules, Now: t0})
		want := Decision{RetryAfter: -1, Limiting: 1, Remaining: []int64{-1, 10, 10}, Reset: []int64{0, 0, 0}}
		if !equalDecision(d, want) {
			t.Fatalf("got %s, want %s", show(d), show(want))
		}
		// cost 0 never denies, even on a bucket in debt
		if err := s.AdjustAt(context.Background(), rules[2], 50, t0); err != nil {
			t.Fatal(err)
		}
		if d = reserve(t, s, Request{Rules: rules[2:], Now: t0}); !d.Allowed || d.Remaining[0] != 0 || d.Reset[0] != 50*ms {
			t.Fatalf("cost 0 in debt: %s", show(d))
		}
		// a request with no limits at all is allowed
		if d = reserve(t, s, Request{Now: t0}); !d.Allowed || d.Limiting != -1 || len(d.Remaining) != 0 {
			t.Fatalf("no limits: %s", show(d))
		}
		// store clock (Now 0) works
		if d = reserve(t, s, Request{Rules: rules[2:]}); !d.Allowed {
			t.Fatalf("store clock: %s", show(d))
		}
	})
}

func TestInvalid(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		ctx := context.Background()
		for _, req := range []Request{
			{Rules: []Rule{{Key: "k", Interval: -1}}},
			{Rules: []Rule{{Key: "k", Interval: 1, Burst: 0}}},
			{Rules: []Rule{{Key: "k", Interval: 2, Burst: MaxSpan}}},
			{Rules: []Rule{{Key: "k", Interval: 1, Burst: 1, Cost: -1}}},
			{Leases: []Lease{{Key: "l", Limit: 1, TTL: 1}}},
			{Leases: []Lease{{Key: "l", Limit: 1, TTL: 0}}, LeaseID: "x"},
			{Leases: []Lease{{Key: "l", Limit: -1, TTL: 1}}, LeaseID: "x"},
			{MaxWait: -1},
			{Now: -1},
		} {
			var d Decision
			if err := s.Reserve(ctx, &req, &d); !errors.Is(err, ErrInvalid) {
				t.Errorf("Reserve(%+v) = %v, want ErrInvalid", req, err)
			}
		}
		if err := s.AdjustAt(ctx, Rule{Key: "k", Interval: 2, Burst: 1}, MaxSpan, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("huge adjust = %v, want ErrInvalid", err)
		}
	})
}

// TestConcurrentReserve: many goroutines draw from the same buckets at the
// same instant; exactly Burst are admitted (no lost update, no double take).
func TestConcurrentReserve(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		rules := []Rule{{Key: "shared", Interval: sec, Burst: 50, Cost: 1}, {Key: "other", Interval: sec, Burst: 1000, Cost: 1}}
		leases := []Lease{{Key: "conc", Limit: 1000, TTL: sec}}
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				var d Decision
				for i := range 25 {
					req := Request{Rules: rules, Leases: leases, LeaseID: string(rune('a'+g)) + string(rune('a'+i)), Now: t0}
					if err := s.Reserve(context.Background(), &req, &d); err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						admitted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if n := admitted.Load(); n != 50 {
			t.Fatalf("admitted %d of 200, want exactly the burst, 50", n)
		}
		d := reserve(t, s, Request{Rules: []Rule{{Key: "other", Interval: sec, Burst: 1000}}, Now: t0})
		if d.Remaining[0] != 950 {
			t.Fatalf("the other rule was taken %d times, want 50", 1000-d.Remaining[0])
		}
	})
}

func equalDecision(a, b Decision) bool {
	return a.Allowed == b.Allowed && a.Wait == b.Wait && a.RetryAfter == b.RetryAfter &&
		a.Limiting == b.Limiting && slices.Equal(a.Remaining, b.Remaining) && slices.Equal(a.Reset, b.Reset)
}

// TestSettle: one step refunds (or charges) every token rule by the same
// delta and releases the leases, in both stores alike, on the real clock.
func TestSettle(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		ctx := context.Background()
		tpm := Rule{Key: "settle:tpm", Interval: 6 * ms, Burst: 1000, Cost: 900} // 10,000/min
		tpd := Rule{Key: "settle:tpd", Interval: 86 * ms, Burst: 5000, Cost: 900}
		conc := []Lease{{Key: "settle:conc", Limit: 1, TTL: 60 * sec}}
		start := time.Now()
		d := reserve(t, s, Request{Rules: []Rule{tpm, tpd}, Leases: conc, LeaseID: "a"})
		if !d.Allowed || d.Remaining[0] != 100 {
			t.Fatalf("reserve 900: %s", show(d))
		}
		// used 100 of the 900: refund 800 to both rules, free the slot
		tpm.Cost, tpd.Cost = -800, -800
		if err := s.Settle(ctx, []Rule{tpm, tpd}, conc, "a"); err != nil {
			t.Fatal(err)
		}
		probe := Request{Rules: []Rule{{Key: tpm.Key, Interval: tpm.Interval, Burst: tpm.Burst}, {Key: tpd.Key, Interval: tpd.Interval, Burst: tpd.Burst}},
			Leases: conc, LeaseID: "b"}
		d = reserve(t, s, probe)
		// the real clock refills one token per 6 ms meanwhile: a loaded
		// machine may take longer than that between the two steps
		refill := time.Since(start).Microseconds()/tpm.Interval + 1
		if !d.Allowed || d.Remaining[0] < 899 || d.Remaining[0] > 900+refill || d.Remaining[1] < 4899 {
			t.Fatalf("after settling: %s", show(d))
		}
		// charging more than reserved pushes the bucket past full use
		tpm.Cost = 2000
		if err := s.Settle(ctx, []Rule{tpm}, conc, "b"); err != nil {
			t.Fatal(err)
		}
		d = reserve(t, s, Request{Rules: []Rule{{Key: tpm.Key, Interval: tpm.Interval, Burst: tpm.Burst, Cost: 1}}})
		if d.Allowed || d.RetryAfter <= 0 {
			t.Fatalf("after an over-charge: %s", show(d))
		}
	})
}

// TestWindowCounter: a rule with Until counts units over a window that
// nothing refills; a spent counter denies until the window ends whatever
// the wait allowed; Settle charges and refunds each rule by its own delta.
func TestWindowCounter(t *testing.T) {
	eachStore(t, func(t *testing.T, s timedStore) {
		ctx := context.Background()
		now := time.Now().UnixMicro()
		until := now + 3600*sec
		spend := Rule{Key: "spend:day", Interval: 1, Burst: 1000, Cost: 700, Until: until}
		tpm := Rule{Key: "spend:tpm", Interval: ms, Burst: 100000, Cost: 500}
		d := reserve(t, s, Request{Rules: []Rule{tpm, spend}})
		if !d.Allowed || d.Remaining[1] != 300 || d.Reset[1] < 3599*sec || d.Reset[1] > 3600*sec {
			t.Fatalf("reserve 700 of 1000: %s", show(d))
		}
		spend.Cost = 400
		d = reserve(t, s, Request{Rules: []Rule{tpm, spend}, MaxWait: 7200 * sec})
		if d.Allowed || d.Limiting != 1 || d.RetryAfter < 3599*sec || d.RetryAfter > 3600*sec {
			t.Fatalf("400 more of 300 left, waiting up to 2 h: %s", show(d))
		}
		// the answer cost 100 of the 700 reserved; tokens refund by another delta
		tpm.Cost, spend.Cost = -450, -600
		if err := s.Settle(ctx, []Rule{tpm, spend}, nil, ""); err != nil {
			t.Fatal(err)
		}
		spend.Cost = 0
		d = reserve(t, s, Request{Rules: []Rule{{Key: tpm.Key, Interval: tpm.Interval, Burst: tpm.Burst}, spend}})
		if d.Remaining[1] != 900 || d.Remaining[0] < 99950 {
			t.Fatalf("after settling -450 tokens and -600 spend: %s", show(d))
		}
		// a window that has ended is skipped and takes no charge
		old := Rule{Key: "spend:old", Interval: 1, Burst: 10, Cost: 50, Until: now - sec}
		if err := s.Settle(ctx, []Rule{old}, nil, ""); err != nil {
			t.Fatal(err)
		}
		old.Cost = 5
		if d = reserve(t, s, Request{Rules: []Rule{old}}); !d.Allowed || d.Remaining[0] != -1 {
			t.Fatalf("a counter whose window ended: %s", show(d))
		}
		old.Until = until
		if d = reserve(t, s, Request{Rules: []Rule{old}}); !d.Allowed || d.Remaining[0] != 5 {
			t.Fatalf("the late charge reached a counter: %s", show(d))
		}
	})
}
