package queue

import (
	"context"
	"errors"
	"sluice/policy/limit"
	"strings"
	"sync"
	"sync/atomic"
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

// TestBreakerHalfOpenLetsOneProbe: once the cooldown ends, ten callers
// arriving together get one probe through; the others are refused until the
// probe ends, and the probe's answer decides.
func TestBreakerHalfOpenLetsOneProbe(t *testing.T) {
	for _, probeFails := range []bool{false, true} {
		b := NewBreaker(BreakerOptions{Ratio: 0.5, MinCalls: 1, Cooldown: 5 * time.Second}, nil)
		now := time.Unix(1_000_000, 0)
		b.Allow(now)
		b.Done(now, true)
		if b.State() != BreakerOpen {
			t.Fatal("one of one failed did not open")
		}
		later := now.Add(5 * time.Second)
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if ok, wait := b.Allow(later); ok {
					allowed.Add(1)
				} else if wait <= 0 {
					t.Errorf("refused at half-open with wait %v, want > 0", wait)
				}
			})
		}
		wg.Wait()
		if n := allowed.Load(); n != 1 {
			t.Fatalf("%d of 10 callers passed at half-open, want exactly 1 probe", n)
		}
		if b.State() != BreakerHalfOpen {
			t.Fatalf("state %d while the probe runs, want half-open", b.State())
		}
		b.Done(later.Add(time.Second), probeFails)
		end := later.Add(time.Second)
		ok, _ := b.Allow(end)
		if probeFails {
			if b.State() != BreakerOpen || ok {
				t.Fatalf("failed probe: state %d allow %v, want open and refused", b.State(), ok)
			}
		} else {
			if b.State() != BreakerClosed || !ok {
				t.Fatalf("successful probe: state %d allow %v, want closed and allowed", b.State(), ok)
			}
		}
	}
}

// TestBreakerLostProbeIsReplaced: a probe that never reports (its request
// expired in the queue, its client left) does not hold the breaker
// half-open forever: after a cooldown another probe goes.
func TestBreakerLostProbeIsReplaced(t *testing.T) {
	b := NewBreaker(BreakerOptions{Ratio: 0.5, MinCalls: 1, Cooldown: 5 * time.Second}, nil)
	now := time.Unix(1_000_000, 0)
	b.Allow(now)
	b.Done(now, true)
	half := now.Add(5 * time.Second)
	if ok, _ := b.Allow(half); !ok {
		t.Fatal("no probe at half-open")
	}
	if ok, wait := b.Allow(half.Add(time.Second)); ok || wait != 4*time.Second {
		t.Fatalf("second caller while the probe runs: allow=%v wait=%v, want refused for 4s", ok, wait)
	}
	if ok, _ := b.Allow(half.Add(5 * time.Second)); !ok {
		t.Fatal("a lost probe was not replaced after a cooldown")
	}
	if ok, _ := b.Allow(half.Add(6 * time.Second)); ok {
		t.Fatal("a second replacement probe went while the first runs")
	}
}

// stallStore fails every Reserve; the probe's Reserves wait for release.
type stallStore struct {
	limit.Store
	probing chan struct{} // closed at the probe's first Reserve
	release chan struct{}
	once    sync.Once
}

func (s *stallStore) Reserve(_ context.Context, req *limit.Request, _ *limit.Decision) error {
	if len(req.Rules) == 1 && strings.HasSuffix(req.Rules[0].Key, ":probe") {
		s.once.Do(func() { close(s.probing) })
		<-s.release
	}
	return errors.New("store down")
}

// TestCloseWaitsForProbe: the goroutine that probes a failing shared store
// belongs to its Scheduler: Close returns only after it ended.
func TestCloseWaitsForProbe(t *testing.T) {
	st := &stallStore{probing: make(chan struct{}), release: make(chan struct{})}
	s := New(Options{Name: "probe", Budget: Budget{RPM: 600}, Store: st,
		Fallback: limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})})
	if now, err := s.Acquire(NewTicket()); !now || err != nil {
		t.Fatalf("the fallback did not grant: %v %v", now, err)
	}
	select {
	case <-st.probing:
	case <-time.After(5 * time.Second):
		t.Fatal("no probe of the failing store")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while the probe still ran")
	case <-time.After(100 * time.Millisecond):
	}
	close(st.release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the probe ended")
	}
}
