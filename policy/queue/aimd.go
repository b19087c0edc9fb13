package queue

import (
	"time"
)

// minFactor is the lowest drain factor AIMD cuts to: a quarter of the
// budget, so a long storm does not leave the queue crawling afterwards.
const minFactor = 0.25

// held reports grants held back by a pause or AIMD pacing. s.mu held.
func (s *Scheduler) held(now time.Time) bool {
	return now.UnixMicro() < s.pauseUntil || now.Before(s.nextGrant)
}

// pace holds the next grant back while the drain factor is below 1: the
// budget's own bucket spaces grants by one slot at full rate, and this adds
// the rest of a slot at the reduced rate. s.mu held.
func (s *Scheduler) pace(t *Ticket, now time.Time) {
	if s.factor >= 1 {
		return
	}
	full := s.slot(t, 1)
	s.nextGrant = now.Add(s.slot(t, s.factor) - full)
}

// Throttled tells the scheduler the upstream answered 429 or 503 to a call
// made with key (its index in Options.Keys). In a pool of several keys that
// key rests for retryAfter (0: one second) while the others go on. With one
// key, or when every key rests, grants pause for retryAfter and the drain
// rate halves (at most once per pause window), down to minFactor of the
// budget.
func (s *Scheduler) Throttled(key int, retryAfter time.Duration) {
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	retryAfter = min(retryAfter, time.Minute)
	now := time.Now()
	if n := len(s.o.Keys); n > 1 && key >= 0 && key < n {
		until := now.Add(retryAfter).UnixMicro()
		s.rest[key].Store(until)
		all := true
		for i := range s.rest {
			if s.rest[i].Load() <= now.UnixMicro() {
				all = false
			}
		}
		if !all {
			return
		}
	}
	s.mu.Lock()
	s.pauseUntil = max(s.pauseUntil, now.Add(retryAfter).UnixMicro())
	if now.Sub(s.lastCut) > retryAfter {
		s.factor = max(s.factor/2, minFactor)
		s.lastCut = now
	}
	f := s.factor
	s.mu.Unlock()
	if m := s.o.Metrics; m != nil {
		m.factor.WithLabelValues(s.o.Name).Set(f)
	}
	s.kick()
}

// Succeeded tells the scheduler a call got an answer that was not a 429 or
// 503: the drain rate grows back by 5% of the budget per success.
func (s *Scheduler) Succeeded() {
	s.mu.Lock()
	if s.factor >= 1 {
		s.mu.Unlock()
		return
	}
	s.factor = min(s.factor+0.05, 1)
	f := s.factor
	s.mu.Unlock()
	if m := s.o.Metrics; m != nil {
		m.factor.WithLabelValues(s.o.Name).Set(f)
	}
}

// Factor is the current drain factor (1 = full budget).
func (s *Scheduler) Factor() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.factor
}
