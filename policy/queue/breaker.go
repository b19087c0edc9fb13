package queue

import (
	"sync"
	"time"
)

// Breaker is an upstream's circuit breaker. Closed, it counts calls and
// failures in a rolling window; when at least MinCalls ended in the window
// and the failed share reaches Ratio it opens: calls are refused (the
// caller fails over or answers 503) for Cooldown. Then it is half-open:
// one call, the probe, goes through and the others are refused as while
// open; the first call to end decides: a success closes it, a failure opens
// it for another Cooldown. A probe that never ends (its request expired in
// the queue or its client left before the call) is replaced by another one
// after a Cooldown. Safe for concurrent use.
type Breaker struct {
	o     BreakerOptions
	mu    sync.Mutex
	state int
	until time.Time // end of the open period
	// probe is when the half-open state's probe may be replaced (zero: no
	// probe out yet).
	probe time.Time
	slots [breakerSlots]struct {
		at            int64 // window slot number (unix time / slot width)
		calls, failed int64
	}
	onState func(int)
}

// Breaker states, also the values of sluice_upstream_breaker_state.
const (
	BreakerClosed   = 0
	BreakerHalfOpen = 1
	BreakerOpen     = 2
)

// breakerSlots divide the rolling window.
const breakerSlots = 10

// BreakerOptions configure a Breaker; zero fields take the defaults.
type BreakerOptions struct {
	// Ratio is the failed share of calls that opens the breaker. Default
	// 0.5; a negative value disables the breaker.
	Ratio float64
	// MinCalls is how many calls the window needs before the ratio counts.
	// Default 20.
	MinCalls int64
	// Window is the rolling window the ratio is measured over. Default 10s.
	Window time.Duration
	// Cooldown is how long the breaker stays open. Default 10s.
	Cooldown time.Duration
}

// NewBreaker returns a closed breaker; onState (optional) hears every
// state change.
func NewBreaker(o BreakerOptions, onState func(state int)) *Breaker {
	if o.Ratio == 0 {
		o.Ratio = 0.5
	}
	if o.MinCalls <= 0 {
		o.MinCalls = 20
	}
	if o.Window <= 0 {
		o.Window = 10 * time.Second
	}
	if o.Cooldown <= 0 {
		o.Cooldown = 10 * time.Second
	}
	if onState == nil {
		onState = func(int) {}
	}
	return &Breaker{o: o, onState: onState}
}

// Allow reports whether a call may go now, and when it may not, how long
// until the breaker half-opens (or, half-open, until a lost probe is
// replaced). Half-open, the one call allowed is the probe.
func (b *Breaker) Allow(now time.Time) (ok bool, wait time.Duration) {
	if b.o.Ratio < 0 {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerOpen:
		if now.Before(b.until) {
			return false, b.until.Sub(now)
		}
		b.probe = time.Time{}
		b.set(BreakerHalfOpen)
		fallthrough
	case BreakerHalfOpen:
		if now.Before(b.probe) {
			return false, b.probe.Sub(now)
		}
		b.probe = now.Add(b.o.Cooldown)
	}
	return true, 0
}

// Done reports the end of a call: failed is a transport error,
// a timeout or a 5xx answer.
func (b *Breaker) Done(now time.Time, failed bool) {
	if b.o.Ratio < 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == BreakerHalfOpen {
		b.probe = time.Time{}
		if failed {
			b.until = now.Add(b.o.Cooldown)
			b.set(BreakerOpen)
		} else {
			b.slots = [breakerSlots]struct{ at, calls, failed int64 }{}
			b.set(BreakerClosed)
		}
		return
	}
	width := int64(b.o.Window) / breakerSlots
	at := now.UnixNano() / width
	s := &b.slots[at%breakerSlots]
	if s.at != at {
		s.at, s.calls, s.failed = at, 0, 0
	}
	s.calls++
	if failed {
		s.failed++
	}
	if b.state != BreakerClosed || !failed {
		return
	}
	var calls, fails int64
	for i := range b.slots {
		if at-b.slots[i].at < breakerSlots {
			calls += b.slots[i].calls
			fails += b.slots[i].failed
		}
	}
	if calls >= b.o.MinCalls && float64(fails) >= b.o.Ratio*float64(calls) {
		b.until = now.Add(b.o.Cooldown)
		b.set(BreakerOpen)
	}
}

// State is the breaker's state now.
func (b *Breaker) State() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

func (b *Breaker) set(state int) {
	if b.state != state {
		b.state = state
		b.onState(state)
	}
}
