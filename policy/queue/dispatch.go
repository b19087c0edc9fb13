package queue

import (
	"context"
	"time"
)

// leasePoll is how often a dispatcher retries when the upstream's
// concurrency slots are all held and none is released in this process
// (another replica holds them and Redis does not tell when it frees one).
const leasePoll = 50 * time.Millisecond

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch grants waiting tickets in deficit round robin order as the
// budget allows, sleeping until the budget's next slot, a new arrival or a
// released concurrency slot.
func (s *Scheduler) dispatch() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		sleep, ok := s.step()
		if !ok {
			return
		}
		if sleep == 0 {
			continue
		}
		if sleep > 0 {
			timer.Reset(sleep)
		}
		select {
		case <-s.stop:
			s.closeAll()
			return
		case <-s.wake:
		case <-s.released:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// step grants at most one ticket. It returns how long to sleep (0: go on at
// once; < 0: until woken) and false when closed.
func (s *Scheduler) step() (time.Duration, bool) {
	select {
	case <-s.stop:
		s.closeAll()
		return 0, false
	default:
	}
	now := time.Now()
	s.mu.Lock()
	// Waiting tickets are scanned only once the earliest deadline passed;
	// sleep no longer than that deadline, to expire it on time.
	if !now.Before(s.nextExpire) {
		s.nextExpire = s.expire(now)
	}
	if !now.Before(s.nextSweep) {
		s.sweep(now)
	}
	cap := s.nextExpire.Sub(now) + time.Millisecond
	if s.held(now) {
		d := time.Until(time.UnixMicro(s.pauseUntil))
		if g := time.Until(s.nextGrant); g > d {
			d = g
		}
		s.mu.Unlock()
		return min(max(d, time.Millisecond), cap), true
	}
	// A retry slot that came due is reserved before any waiting request
	// (slots.go); otherwise sleep no longer than until the next one does.
	slot, next := s.nextSlot(now)
	if slot != nil {
		s.mu.Unlock()
		return min(s.reserveSlot(slot), cap), true
	}
	if !next.IsZero() {
		cap = min(cap, next.Sub(now)+time.Millisecond)
	}
	t := s.pick()
	s.mu.Unlock()
	if t == nil {
		if !next.IsZero() {
			return cap, true
		}
		return -1, true
	}
	// The store call runs unlocked; a Cancel meanwhile marks t ended.
	ok, retry := s.tryGrant(t)
	if !ok {
		if retry > 0 {
			return min(retry, cap), true
		}
		// A full concurrency set (or a store error): wait for a release
		// here, or poll for one held elsewhere.
		return min(leasePoll, cap), true
	}
	now = time.Now()
	s.mu.Lock()
	if t.state.Load() != ticketWaiting {
		// Cancelled while its capacity was being reserved: give it back.
		s.mu.Unlock()
		if t.store != nil {
			_ = t.store.Cancel(context.Background(), &t.req)
		}
		return 0, true
	}
	s.served(t)
	s.record(t.Flow, now)
	s.pace(t, now)
	t.Waited = now.Sub(t.enqueued)
	t.state.Store(ticketGranted)
	s.mu.Unlock()
	s.granted(t, now)
	s.o.Metrics.waiting(t.Tier, -1)
	s.o.Metrics.outcome(t.Tier, "served")
	s.o.Metrics.wait(t.Tier, t.Waited)
	close(t.ready)
	return 0, true
}

// expire ends the tickets whose deadline passed and returns the earliest
// deadline left (now + an hour when none). s.mu held.
func (s *Scheduler) expire(now time.Time) time.Time {
	var late []*Ticket
	next := now.Add(time.Hour)
	for _, lv := range s.levels {
		for _, f := range lv.flows {
			for t := f.head; t != nil; t = t.next {
				if now.After(t.Deadline) {
					late = append(late, t)
				} else if t.Deadline.Before(next) {
					next = t.Deadline
				}
			}
		}
	}
	for _, t := range late {
		s.endWaiting(t, ErrExpired)
	}
	return next
}

// endWaiting fails a waiting ticket. s.mu held.
func (s *Scheduler) endWaiting(t *Ticket, err error) {
	s.remove(t)
	t.state.Store(ticketEnded)
	t.err = err
	t.Waited = time.Since(t.enqueued)
	s.o.Metrics.waiting(t.Tier, -1)
	if err == ErrExpired {
		s.o.Metrics.outcome(t.Tier, "expired")
	} else {
		s.o.Metrics.outcome(t.Tier, "shutdown")
	}
	close(t.ready)
}

func (s *Scheduler) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Shutting down: no other replica may claim our slots now. The book
	// is left alone once it fails (each call would wait its timeout).
	shared := s.o.Slots != nil && !s.failing.Load()
	for _, b := range s.slots {
		if b.gone {
			continue
		}
		g := s.dropSlot(b)
		if shared {
			unclaimed, err := s.o.Slots.DropSlot(context.Background(), s.bookName, b.flow, b.at.UnixMicro())
			shared = err == nil
			if !unclaimed && err == nil && g != nil {
				Release(g) // claimed elsewhere: in use
				continue
			}
		}
		if g != nil && g.store != nil {
			// The reserved slots go back before the store closes.
			_ = g.store.Cancel(context.Background(), &g.req)
		}
	}
	s.slots = nil
	clear(s.bookings)
	for len(s.levels) > 0 {
		f := s.levels[0].flows[0]
		s.endWaiting(f.head, ErrClosed)
	}
}
