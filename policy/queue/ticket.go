package queue

import (
	"context"
	"sluice/policy/limit"
	"sync"
	"sync/atomic"
	"time"
)

// Ticket is one request's claim on the provider's capacity, from Acquire to
// Done or Cancel. Fields before the first blank line are set by the caller.
type Ticket struct {
	// Flow is the fairness unit: the user's bucket scope.
	Flow string
	// Tier labels metrics.
	Tier string
	// Weight is the flow's share (>= 1), from the tier.
	Weight int64
	// Priority orders levels strictly: higher is served first. Default 0.
	Priority int
	// Tokens is the request's token reservation (estimate + allowance).
	Tokens int64
	// ID is the request id; it names the concurrency lease.
	ID string
	// Deadline is the latest time the request may be granted.
	Deadline time.Time

	// Key is the index in Options.Keys of the key granted.
	Key int
	// Waited is how long the ticket waited in the queue.
	Waited time.Duration
	// Position is how many requests were ahead when it was queued (0 when
	// granted at once); set also on ErrWouldExceed.
	Position int
	// ETA is the expected wait when queued, or the Retry-After of a
	// rejection.
	ETA time.Duration
	// Slots is how many other requests this replica granted while the
	// ticket waited: its wait in service slots.
	Slots uint64
	// Seq numbers the grants of the scheduler, from 1.
	Seq uint64
	// RetrySlot is, on a rejection, the slot booked for the user's retry
	// (slots.go): ETA points at it. Zero when none was booked.
	RetrySlot time.Time
	// NoSlot reports a rejection whose wait exceeded MaxSlotWait: no slot,
	// and the client should not retry on its own.
	NoSlot bool
	// Claimed reports a ticket that came for its user's slot and was put
	// ahead of newcomers.
	Claimed bool

	s        *Scheduler
	seq      uint64 // grants made before it was queued
	f        *flow
	cost     int64
	enqueued time.Time
	ready    chan struct{}
	err      error
	state    atomic.Int32 // ticketWaiting, ticketGranted, ticketDone
	req      limit.Request
	dec      limit.Decision
	store    limit.Store  // where the grant was reserved
	next     *Ticket      // in its flow's FIFO
	lead     int64        // µs the reservation may wait for the budget (a retry slot's)
	inQueue  bool         // linked in its flow
	settle   []limit.Rule // scratch for Done
}

const (
	ticketWaiting int32 = iota
	ticketGranted
	ticketEnded // cancelled, expired or closed while waiting
)

// Ready is closed when the ticket is granted or fails; then Err tells.
func (t *Ticket) Ready() <-chan struct{} { return t.ready }

// Err is nil for a granted ticket, else why it was not granted. Valid after
// Ready is closed.
func (t *Ticket) Err() error { return t.err }

var ticketPool = sync.Pool{New: func() any { return new(Ticket) }}

// NewTicket returns a zeroed Ticket from a pool; Done or a failed Acquire
// returns it.
func NewTicket() *Ticket {
	t := ticketPool.Get().(*Ticket)
	return t
}

func (t *Ticket) reset() {
	rules, leases, rem, res, settle := t.req.Rules[:0], t.req.Leases[:0], t.dec.Remaining[:0], t.dec.Reset[:0], t.settle[:0]
	*t = Ticket{}
	t.req.Rules, t.req.Leases, t.dec.Remaining, t.dec.Reset, t.settle = rules, leases, rem, res, settle
}

// Release returns a ticket that was never acquired, or whose Acquire
// failed, to the pool.
func Release(t *Ticket) {
	t.reset()
	ticketPool.Put(t)
}

// Acquire asks for capacity. It returns true when the ticket was granted at
// once (no queue, capacity free). Otherwise the ticket is queued (wait on
// Ready, then check Err) or, with an error, rejected up front: ErrQueueFull,
// ErrWouldExceed (t.ETA is the expected wait, t.Position the requests
// ahead), or ErrClosed.
func (s *Scheduler) Acquire(t *Ticket) (bool, error) {
	t.s = s
	t.cost = 1
	if s.tokens {
		t.cost = max(t.Tokens, 1)
	}
	if t.Weight < 1 {
		t.Weight = 1
	}
	now := time.Now()
	t.enqueued = now
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, ErrClosed
	}
	if len(s.bookings) > 0 && s.claim(t, now) {
		// The user's slot, its capacity reserved: granted at once.
		s.record(t.Flow, now)
		s.mu.Unlock()
		s.granted(t, now)
		return true, nil
	}
	// A request that may not wait is not held back by a pause after an
	// upstream 429 either: it goes to the provider (budget permitting) and
	// its client gets the provider's own answer. A retry slot due for its
	// reservation goes first.
	if s.waiting == 0 && (!s.held(now) || !now.Before(t.Deadline)) && !s.slotDue(now) {
		// Nobody waits: try the budget on the caller's goroutine, outside
		// the lock (a Redis round trip must not hold up other requests). A
		// request queued meanwhile may be overtaken by this one: a race of
		// microseconds, not a fairness problem.
		s.mu.Unlock()
		ok, _ := s.tryGrant(t)
		if ok {
			s.mu.Lock()
			s.pace(t, now)
			if now.Before(s.contendedUntil) {
				s.record(t.Flow, now) // users waited lately: count who is served
			}
			s.mu.Unlock()
			s.granted(t, now)
			return true, nil
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false, ErrClosed
		}
	}
	t.Position, t.ETA = s.estimate(t, now)
	if s.o.Slots != nil && !t.Claimed && !s.failing.Load() && s.claimRemote(t, now) {
		// It would wait or be turned away, but the user was booked a slot
		// on another replica, whose capacity that replica reserved.
		s.record(t.Flow, now)
		s.mu.Unlock()
		s.granted(t, now)
		return true, nil
	}
	if s.closed {
		s.mu.Unlock()
		return false, ErrClosed
	}
	var err error
	switch {
	case s.waiting >= s.o.MaxQueue:
		err = ErrQueueFull
	case t.Claimed:
		t.Position, t.ETA = 0, 0 // served next
	case now.Add(t.ETA).After(t.Deadline):
		err = ErrWouldExceed
	}
	if err != nil {
		s.mu.Unlock()
		s.book(t)
		s.o.Metrics.outcome(t.Tier, "rejected")
		return false, err
	}
	t.ready = make(chan struct{})
	t.seq = s.grantSeq.Load()
	s.push(t)
	s.mu.Unlock()
	s.o.Metrics.waiting(t.Tier, 1)
	s.kick()
	return false, nil
}

// granted records a grant made at now for a ticket queued at t.enqueued.
func (s *Scheduler) granted(t *Ticket, now time.Time) {
	t.Waited = now.Sub(t.enqueued)
	t.state.Store(ticketGranted)
	t.Seq = s.grantSeq.Add(1)
	if t.ready != nil {
		t.Slots = t.Seq - 1 - t.seq
	}
	n := s.inFlight.Add(1)
	if s.mGrants != nil {
		s.mGrants.Inc()
		s.mInFlight.Set(float64(n))
	}
}

// Cancel withdraws a ticket whose client left: a waiting ticket leaves the
// queue (no capacity was taken); a granted one gives its reservation back.
// It reports whether the ticket was still waiting. The ticket must not be
// used afterwards.
func (s *Scheduler) Cancel(t *Ticket) bool {
	s.mu.Lock()
	if t.state.Load() == ticketWaiting {
		// Still queued (or being tried by the dispatcher, which then gives
		// back what it reserved). Not pooled: the dispatcher may hold it.
		t.state.Store(ticketEnded)
		if t.inQueue {
			s.remove(t)
		}
		s.mu.Unlock()
		s.o.Metrics.waiting(t.Tier, -1)
		s.o.Metrics.outcome(t.Tier, "abandoned")
		s.kick()
		return true
	}
	s.mu.Unlock()
	if t.state.Load() == ticketGranted && t.store != nil {
		if err := t.store.Cancel(context.Background(), &t.req); err != nil {
			s.log.Warn("provider budget cancel failed", "upstream", s.o.Name, "error", err)
		}
		s.finished(t)
	}
	Release(t)
	return false
}

// Done ends a granted ticket: the token reservation is settled from the
// answer's usage (actual < 0: keep it) and the concurrency slot released.
func (s *Scheduler) Done(t *Ticket, actual int64) {
	if t.store != nil {
		settle := t.settle[:0]
		if actual >= 0 && s.tokens {
			for _, r := range t.req.Rules {
				if r.Key[len(r.Key)-4:] == ":tpm" {
					r.Cost = actual - r.Cost // the delta to settle
					settle = append(settle, r)
				}
			}
		}
		t.settle = settle
		if len(settle) > 0 || len(t.req.Leases) > 0 {
			if err := t.store.Settle(context.Background(), settle, t.req.Leases, t.req.LeaseID); err != nil {
				s.log.Warn("provider budget settle failed", "upstream", s.o.Name, "error", err)
			}
		}
	}
	s.finished(t)
	Release(t)
}

func (s *Scheduler) finished(t *Ticket) {
	n := s.inFlight.Add(-1)
	if s.mInFlight != nil {
		s.mInFlight.Set(float64(n))
	}
	if len(t.req.Leases) > 0 {
		select {
		case s.released <- struct{}{}:
		default:
		}
	}
}
