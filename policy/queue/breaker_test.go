package queue

import (
	"testing"
	"time"
)

func TestBreakerOpensHalfOpensAndCloses(t *testing.T) {
	var states []int
	b := NewBreaker(BreakerOptions{Ratio: 0.5, MinCalls: 10, Window: 10 * time.Second, Cooldown: 5 * time.Second},
		func(s int) { states = append(states, s) })
	now := time.Unix(1_000_000, 0)
	// 9 failures: below MinCalls, still closed.
	for range 9 {
		if ok, _ := b.Allow(now); !ok {
			t.Fatal("refused while closed")
		}
		b.Done(now, true)
	}
	if b.State() != BreakerClosed {
		t.Fatal("opened before MinCalls")
	}
	b.Allow(now)
	b.Done(now, true) // the 10th: ratio 1 >= 0.5
	if b.State() != BreakerOpen {
		t.Fatalf("state %d after 10 of 10 failed, want open", b.State())
	}
	ok, wait := b.Allow(now.Add(time.Second))
	if ok || wait != 4*time.Second {
		t.Fatalf("open: allow=%v wait=%v, want refused for 4s", ok, wait)
	}
	// After the cooldown calls go again; the first to end decides.
	later := now.Add(5 * time.Second)
	if ok, _ := b.Allow(later); !ok {
		t.Fatal("a half-open call was refused")
	}
	b.Done(later, true) // it failed: open again
	if b.State() != BreakerOpen {
		t.Fatal("a failed probe did not reopen")
	}
	later = later.Add(5 * time.Second)
	b.Allow(later)
	b.Done(later, false)
	if b.State() != BreakerClosed {
		t.Fatal("a successful probe did not close")
	}
	want := []int{BreakerOpen, BreakerHalfOpen, BreakerOpen, BreakerHalfOpen, BreakerClosed}
	if len(states) != len(want) {
		t.Fatalf("state changes %v, want %v", states, want)
	}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("state changes %v, want %v", states, want)
		}
	}
}

func TestBreakerRatioBelowThresholdStaysClosed(t *testing.T) {
	b := NewBreaker(BreakerOptions{Ratio: 0.5, MinCalls: 10}, nil)
	now := time.Unix(1_000_000, 0)
	for i := range 100 {
		b.Allow(now)
		b.Done(now, i%3 == 0) // a third fail
	}
	if b.State() != BreakerClosed {
		t.Fatal("opened at a 33% failure ratio with a 50% threshold")
	}
	// Old calls leave the window: ten failures a minute later open it (they
	// would be 64 of 130 with the old calls still counted).
	for range 20 {
		b.Done(now, true)
	}
	if b.State() != BreakerClosed {
		t.Fatal("opened at 54 of 120 failed")
	}
	later := now.Add(time.Minute)
	for range 10 {
		b.Done(later, true)
	}
	if b.State() != BreakerOpen {
		t.Fatal("old calls still counted: ten of ten failures in the window did not open it")
	}
}
