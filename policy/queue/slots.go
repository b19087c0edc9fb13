package queue

import (
	"context"
	"math"
	"time"

	"sluice/policy/limit"
)

// Retry slots make a rejection's retry-after a promise. A request the
// provider's capacity cannot take within its max wait is rejected, and its
// user is booked a slot: the request's cost is reserved in the budget's
// buckets at the first future time they can take it (the GCRA's future
// slot, the same reservation a waiting request makes), and the
// retry-after points at that time. Since the capacity is taken in the
// store, nobody else can use it: not a newcomer, not another replica
// sharing the budget in Redis. A retry from the same user (flow) from
// slotEarly before the slot to its tolerance after claims it: it is
// granted with what was reserved, ahead of every newcomer, with no store
// call (a concurrency budget's slot is still taken at the claim). One slot
// per user; a slot nobody claims is given back after its tolerance.
//
// The booking itself (who may claim) lives in the replica that made it:
// a retry that a load balancer sends to another replica is a newcomer
// there, and the booked capacity goes back after the tolerance. Route a
// user to one replica (by key) for the promise to hold across replicas.
const (
	// MaxSlotWait is the longest wait a slot is booked for: the official
	// SDKs ignore a retry-after over 60 s (they back off on their own), so
	// a longer wait is refused with Ticket.NoSlot instead.
	MaxSlotWait = 60 * time.Second
	// minSlotTolerance is the least time a retry may come early or late
	// and still claim its slot; the tolerance is max(1 s, 10 % of the
	// wait).
	minSlotTolerance = time.Second
	// slotEarly is how early a retry may claim its slot: a reserved slot
	// used this much early stays within the budget's burst.
	slotEarly = 100 * time.Millisecond
	// claimPriority is the level claimed slots wait at (for a concurrency
	// slot): above every tier.
	claimPriority = math.MaxInt32
	// serviceHalfLife is how fast what a user was granted is forgotten in
	// the order of waiting users (fairness over time).
	serviceHalfLife = time.Minute
	// sweepEvery bounds how often expired slots and forgotten service
	// records are dropped.
	sweepEvery = time.Second
)

// Outcomes of retry slots, the outcome label of sluice_retry_slots_total.
const (
	SlotBooked  = "booked"  // a rejection booked a slot
	SlotClaimed = "claimed" // the user's retry came within the tolerance
	SlotExpired = "expired" // nobody claimed it in time
	SlotRefused = "refused" // the wait exceeded MaxSlotWait: no slot, no retry
)

// booking is one user's slot: the capacity reserved in store (req's
// rules, with key's pool index) for at, claimable from at-slotEarly to
// until.
type booking struct {
	at, until time.Time
	req       limit.Request
	store     limit.Store
	key       int
}

// service is a user's grants, decayed with serviceHalfLife.
type service struct {
	v  float64
	at time.Time
}

// tolerance is how far from its slot a retry may come to claim it.
func tolerance(wait time.Duration) time.Duration { return max(minSlotTolerance, wait/10) }

// claim gives t the slot its user booked when t comes in the slot's
// window: t.prepaid holds the reservation, and t waits (for a concurrency
// slot only) at claimPriority. s.mu held.
func (s *Scheduler) claim(t *Ticket, now time.Time) {
	b, ok := s.bookings[t.Flow]
	if !ok || now.Before(b.at.Add(-slotEarly)) || now.After(b.until) {
		return
	}
	delete(s.bookings, t.Flow)
	s.slotOutcome(SlotClaimed)
	t.Claimed, t.prepaid = true, &b
	if f := s.flows[t.Flow]; f != nil {
		t.Priority = f.prio // the user already waits: behind their own requests
	} else {
		t.Priority = claimPriority
	}
	if t.Deadline.Before(b.until) {
		t.Deadline = b.until
	}
}

// grantPrepaid grants a claimed t with its slot's reservation. s.mu held.
func (s *Scheduler) grantPrepaid(t *Ticket) {
	b := t.prepaid
	t.req.Rules = append(t.req.Rules[:0], b.req.Rules...)
	t.req.Leases = t.req.Leases[:0]
	t.store, t.Key = b.store, b.key
	t.prepaid = nil
}

// giveBack returns a booking's unused reservation to its store, off the
// caller's goroutine (s.mu may be held; the store may be Redis).
func (s *Scheduler) giveBack(b *booking) {
	go func() {
		if err := b.store.Cancel(context.Background(), &b.req); err != nil {
			s.log.Warn("provider budget: giving back a retry slot failed", "upstream", s.o.Name, "error", err)
		}
	}()
}

// Book books a retry slot for t, which ended with ErrExpired (it waited
// its max wait in the queue): as for a rejection up front, t.ETA and
// t.RetrySlot then point at the slot, or t.NoSlot is set.
func (s *Scheduler) Book(t *Ticket) {
	t.ETA = 0
	s.book(t)
}

// book is called, without s.mu, for a rejected t: it books the user's
// slot (or reports the one already booked) and points t.ETA at it; a wait
// past MaxSlotWait marks t.NoSlot. A store error or a full book leaves
// the estimate as the retry-after, with no promise.
func (s *Scheduler) book(t *Ticket) {
	now := time.Now()
	s.mu.Lock()
	if b, ok := s.bookings[t.Flow]; ok && now.Before(b.until) {
		s.mu.Unlock()
		t.RetrySlot, t.ETA = b.at, max(b.at.Sub(now), 0)
		return
	}
	if len(s.bookings) >= s.o.MaxQueue {
		s.sweep(now)
	}
	full := len(s.bookings) >= s.o.MaxQueue
	s.mu.Unlock()
	if full {
		return
	}
	k := s.pickKey()
	store, rules := s.o.Store, s.rules[k]
	if s.o.Fallback != nil && s.failing.Load() {
		store, rules = s.o.Fallback, s.fbRules[k]
	}
	if len(rules) == 0 {
		return // a concurrency budget alone: no slot to reserve
	}
	b := booking{store: store, key: k}
	var dec limit.Decision
	s.fill(t, rules, nil)
	b.req.Rules = append([]limit.Rule(nil), t.req.Rules...)
	b.req.MaxWait = int64(MaxSlotWait / time.Microsecond)
	if err := store.Reserve(context.Background(), &b.req, &dec); err != nil {
		return
	}
	if !dec.Allowed {
		t.NoSlot = true
		if dec.RetryAfter > 0 {
			t.ETA = time.Duration(dec.RetryAfter) * time.Microsecond
		}
		s.slotOutcome(SlotRefused)
		return
	}
	wait := time.Duration(dec.Wait) * time.Microsecond
	b.at = now.Add(wait)
	b.until = b.at.Add(tolerance(wait))
	s.mu.Lock()
	if old, ok := s.bookings[t.Flow]; ok && now.Before(old.until) {
		// Another request of the user booked meanwhile: keep that one.
		s.mu.Unlock()
		s.giveBack(&b)
		t.RetrySlot, t.ETA = old.at, max(old.at.Sub(now), 0)
		return
	}
	s.bookings[t.Flow] = b
	s.mu.Unlock()
	t.RetrySlot, t.ETA = b.at, wait
	s.slotOutcome(SlotBooked)
}

// sweep drops the slots past their tolerance (counted expired) and the
// service records decayed to nothing. s.mu held.
func (s *Scheduler) sweep(now time.Time) {
	s.nextSweep = now.Add(sweepEvery)
	for flow, b := range s.bookings {
		if now.After(b.until) {
			delete(s.bookings, flow)
			s.giveBack(&b)
			s.slotOutcome(SlotExpired)
		}
	}
	for flow, sv := range s.service {
		if s.decayed(sv, now) < 0.01 {
			delete(s.service, flow)
		}
	}
}

// decayed is sv's value at now.
func (s *Scheduler) decayed(sv *service, now time.Time) float64 {
	return sv.v * math.Exp2(-float64(now.Sub(sv.at))/float64(serviceHalfLife))
}

// record counts a grant to flow in its service. s.mu held.
func (s *Scheduler) record(flow string, now time.Time) {
	sv := s.service[flow]
	if sv == nil {
		if len(s.service) >= s.o.MaxQueue {
			s.sweep(now)
			if len(s.service) >= s.o.MaxQueue {
				return
			}
		}
		sv = &service{}
		s.service[flow] = sv
	}
	sv.v, sv.at = s.decayed(sv, now)+1, now
}

// score orders waiting users: their recent grants over their weight; the
// least served first. s.mu held.
func (s *Scheduler) score(f *flow, now time.Time) float64 {
	sv := s.service[f.name]
	if sv == nil {
		return 0
	}
	return s.decayed(sv, now) / float64(f.weight)
}

// insert places a newly active flow in its level's ring before the first
// flow (after the one being served) that was granted more recently, so a
// user who got nothing lately is served before those who did. s.mu held.
func (s *Scheduler) insert(lv *level, f *flow, now time.Time) {
	if len(s.service) == 0 || len(lv.flows) < 2 {
		lv.flows = append(lv.flows, f)
		return
	}
	mine := s.score(f, now)
	for i := 1; i < len(lv.flows); i++ {
		if s.score(lv.flows[i], now) > mine {
			lv.flows = append(lv.flows, nil)
			copy(lv.flows[i+1:], lv.flows[i:])
			lv.flows[i] = f
			return
		}
	}
	lv.flows = append(lv.flows, f)
}

// slotOutcome counts a retry slot's outcome.
func (s *Scheduler) slotOutcome(o string) {
	if c := s.mSlots[o]; c != nil {
		c.Inc()
	}
}
