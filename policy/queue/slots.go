package queue

import (
	"context"
	"math"
	"strconv"
	"time"

	"sluice/policy/limit"
)

// Retry slots make a rejection's retry-after a promise. A request the
// provider's capacity cannot take within its max wait is rejected, and its
// user is booked a slot at the end of the queue's timeline: when the
// requests waiting now, and the slots booked before, are expected to be
// served. The retry-after points at that time. Slots are booked one
// grant's time apart, and a newcomer's estimate counts the slots booked
// within its wait, so a slot delays no request already waiting beyond
// what it was told.
//
// A slot holds no capacity until it comes due: half a grant before its
// time, the dispatcher reserves the slot's cost in the budget (the
// budget's next opening, which the estimate says is the slot's; the one
// before is the last waiting request's), ahead of every waiting request,
// in the store, so that no newcomer and no other replica sharing the
// budget in Redis takes it. The user's retry, from slotEarly before the
// slot to its tolerance after, claims it: it is granted with that
// reservation at once, or, if the dispatcher has not reserved it yet, it
// waits ahead of every tier. One slot per user; a slot nobody claims is
// given back after its tolerance.
//
// With a shared book (Options.Slots: the Redis store), the slots are
// booked in Redis too, one grant apart across the replicas, and a retry
// claims its slot on whichever replica it reaches, once: with the
// reservation the owner made (its rules and lease rebuilt from the book),
// or ahead of every tier there. A newcomer's estimate counts only its own
// replica's slots. While the book fails, each replica books and claims
// its own, as without one.
const (
	// MaxSlotWait is the longest wait a slot is booked for: the official
	// SDKs ignore a retry-after over 60 s (they back off on their own), so
	// a longer wait is refused with Ticket.NoSlot instead.
	MaxSlotWait = 60 * time.Second
	// minSlotTolerance is the least time a retry may come late and still
	// claim its slot; the tolerance is max(1 s, 10 % of the wait).
	minSlotTolerance = time.Second
	// slotEarly is how early a retry may claim its slot (when its capacity
	// is not reserved yet, it then waits ahead of every tier for it).
	slotEarly = 100 * time.Millisecond
	// claimPriority is the level a claimed slot waits at when its
	// capacity is not reserved yet: above every tier.
	claimPriority = math.MaxInt32
	// serviceHalfLife is how fast what a user was granted is forgotten in
	// the order of waiting users (fairness over time).
	serviceHalfLife = time.Minute
	// sweepEvery bounds how often forgotten service records are dropped.
	sweepEvery = time.Second
)

// Outcomes of retry slots, the outcome label of sluice_retry_slots_total.
const (
	SlotBooked  = "booked"  // a rejection booked a slot
	SlotClaimed = "claimed" // the user's retry came within the tolerance
	SlotExpired = "expired" // nobody claimed it in time
	SlotRefused = "refused" // the wait exceeded MaxSlotWait: no slot, no retry
)

// booking is one user's slot, in s.slots (by at) and s.bookings (by flow).
type booking struct {
	flow      string
	at, until time.Time     // claimable from at-slotEarly to until
	span      time.Duration // the budget's time for one grant of its size
	tokens    int64         // the rejected request's token reservation
	id        string        // names the reservation's concurrency lease
	// grant holds the capacity the dispatcher reserved once the slot came
	// due (nil before); gone marks a slot claimed or expired.
	grant *Ticket
	gone  bool
}

// due is when the dispatcher reserves b's capacity: half a grant before
// its time, so that the budget's next opening, not the one before (the
// last waiting request's), is held for it, and no newcomer on any replica
// takes it at the slot's time.
func (b *booking) due() time.Time { return b.at.Add(-b.span / 2) }

// service is a user's grants, decayed with serviceHalfLife.
type service struct {
	v  float64
	at time.Time
}

// tolerance is how late after its slot a retry may come to claim it.
func tolerance(wait time.Duration) time.Duration { return max(minSlotTolerance, wait/10) }

// claim takes the slot t's user booked when t comes in the slot's window,
// on this replica or, with a shared book, on any. It reports whether t is
// granted at once, with the slot's reserved capacity; else a claimed t
// waits ahead of newcomers (t.Claimed). With a shared book, s.mu is let go
// for the book's round trip. s.mu held.
func (s *Scheduler) claim(t *Ticket, now time.Time) bool {
	b, ok := s.bookings[t.Flow]
	if !ok || now.Before(b.at.Add(-slotEarly)) || now.After(b.until) {
		return false
	}
	if s.o.Slots != nil {
		// Taken once, whichever replica the retry reaches: here only if
		// the book gives it (or cannot say).
		s.mu.Unlock()
		_, ok, err := s.o.Slots.ClaimSlot(context.Background(), s.bookName, t.Flow, now.UnixMicro(), slotEarly.Microseconds())
		s.mu.Lock()
		if !ok && err == nil {
			// Claimed on another replica, which took over the
			// reservation (if any): nothing to give back.
			if g := s.dropSlot(b); g != nil {
				Release(g)
			}
			return false
		}
	}
	s.slotOutcome(SlotClaimed)
	t.Claimed = true
	// The dispatcher may have dropped the slot meanwhile (its reservation
	// found the book's record claimed: by this request): then t waits
	// ahead of every tier, as for a slot not reserved yet.
	if !b.gone {
		if g := s.dropSlot(b); g != nil {
			s.takeOver(t, g)
			return true
		}
	}
	s.ahead(t, b.until)
	return false
}

// claimRemote claims, in the shared book, a slot t's user was booked on
// another replica, for a t that would otherwise wait or be rejected. It
// reports whether t is granted at once, with the reservation the owner
// made (its rules and lease rebuilt from the book's record); else a
// claimed t waits ahead of newcomers. s.mu is let go for the round trip.
// s.mu held.
func (s *Scheduler) claimRemote(t *Ticket, now time.Time) bool {
	s.mu.Unlock()
	sl, ok, err := s.o.Slots.ClaimSlot(context.Background(), s.bookName, t.Flow, now.UnixMicro(), slotEarly.Microseconds())
	s.mu.Lock()
	if !ok || err != nil {
		return false
	}
	s.slotOutcome(SlotClaimed)
	t.Claimed = true
	if b := s.bookings[t.Flow]; b != nil && b.at.UnixMicro() == sl.At {
		// Ours after all (claimed just as it came in its window).
		if g := s.dropSlot(b); g != nil {
			s.takeOver(t, g)
			return true
		}
	} else if sl.Reserved && sl.Key >= 0 && sl.Key < len(s.rules) {
		tokens := t.Tokens
		t.Tokens = sl.Tokens
		s.fill(t, s.rules[sl.Key], s.leases[sl.Key])
		t.Tokens = tokens
		t.req.LeaseID = slotLeaseID(t.Flow, sl.At)
		t.store, t.Key = s.o.Store, sl.Key
		return true
	}
	s.ahead(t, time.UnixMicro(sl.Until))
	return false
}

// ahead makes a claimed t, whose slot's capacity is not reserved yet,
// wait ahead of every newcomer until its window ends. s.mu held.
func (s *Scheduler) ahead(t *Ticket, until time.Time) {
	if f := s.flows[t.Flow]; f != nil {
		t.Priority = f.prio // the user already waits: behind their own requests
	} else {
		t.Priority = claimPriority
	}
	if t.Deadline.Before(until) {
		t.Deadline = until
	}
}

// slotLeaseID names a slot's concurrency lease: the same on every replica.
func slotLeaseID(flow string, at int64) string {
	return "slot:" + flow + ":" + strconv.FormatInt(at, 10)
}

// dropSlot takes b out of the book (claimed, expired, or taken
// elsewhere) and returns its reservation (nil when none), for the caller
// to hand over, give back or leave to whoever claimed it. s.mu held.
func (s *Scheduler) dropSlot(b *booking) *Ticket {
	b.gone = true
	if s.bookings[b.flow] == b {
		delete(s.bookings, b.flow)
	}
	g := b.grant
	b.grant = nil
	return g
}

// takeOver hands t the reservation g made for its slot: its rules, leases
// and lease id. s.mu held or not.
func (s *Scheduler) takeOver(t, g *Ticket) {
	t.req, g.req = g.req, t.req
	t.store, t.Key = g.store, g.Key
	Release(g)
}

// Book books a retry slot for t, which ended with ErrExpired (it waited
// its max wait in the queue): as for a rejection up front, t.ETA and
// t.RetrySlot then point at the slot, or t.NoSlot is set.
func (s *Scheduler) Book(t *Ticket) {
	t.ETA = 0
	s.book(t)
}

// book books a slot for the rejected t (or reports the one its user
// already has) and points t.ETA and t.RetrySlot at it: after t's expected
// wait (t.ETA, or an estimate when 0) and one grant after the last slot
// booked (on any replica, with a shared book). A slot past MaxSlotWait is
// refused (t.NoSlot, t.ETA the wait). A full book, or a shared book that
// fails, leaves t.ETA as the retry-after, with no promise.
func (s *Scheduler) book(t *Ticket) {
	now := time.Now()
	s.mu.Lock()
	if b, ok := s.bookings[t.Flow]; ok {
		s.mu.Unlock()
		t.RetrySlot, t.ETA = b.at, max(b.at.Sub(now), 0)
		return
	}
	eta := t.ETA
	if eta <= 0 {
		_, eta = s.estimate(t, now)
	}
	t.ETA = eta
	span := s.slot(t, s.factor)
	at := now.Add(eta)
	if last := s.booked.Add(span); last.After(at) {
		at = last
	}
	latest := now.Add(MaxSlotWait)
	if len(s.bookings) >= s.o.MaxQueue {
		s.mu.Unlock()
		return
	}
	until := at.Add(tolerance(at.Sub(now)))
	if s.o.Slots != nil && !s.failing.Load() {
		s.mu.Unlock()
		sl, out, err := s.o.Slots.BookSlot(context.Background(), s.bookName, t.Flow, at.UnixMicro(), span.Microseconds(),
			latest.UnixMicro(), minSlotTolerance.Microseconds(), now.UnixMicro(), s.replica)
		switch {
		case err != nil:
			// The book fails (with the budget's store): book here alone.
			s.log.Debug("retry slots: the shared book failed", "upstream", s.o.Name, "error", err)
		case out == limit.SlotExisting:
			t.RetrySlot, t.ETA = time.UnixMicro(sl.At), max(time.UnixMicro(sl.At).Sub(now), 0)
			return
		default:
			at, until = time.UnixMicro(sl.At), time.UnixMicro(sl.Until)
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if at.After(latest) {
		t.NoSlot, t.ETA = true, at.Sub(now)
		s.slotOutcome(SlotRefused)
		return
	}
	b := &booking{flow: t.Flow, at: at, until: until, span: span, tokens: t.Tokens,
		id: slotLeaseID(t.Flow, at.UnixMicro())}
	if old := s.bookings[t.Flow]; old != nil {
		// Replaced by the book's (a race of the user's own requests).
		if g := s.dropSlot(old); g != nil {
			s.giveBack(g)
		}
	}
	s.bookings[t.Flow] = b
	// In the order of their times (a slot booked meanwhile, while s.mu was
	// let go for the shared book, may come later).
	i := len(s.slots)
	for i > 0 && s.slots[i-1].at.After(at) {
		i--
	}
	s.slots = append(s.slots, nil)
	copy(s.slots[i+1:], s.slots[i:])
	s.slots[i] = b
	if at.After(s.booked) {
		s.booked = at
	}
	t.RetrySlot, t.ETA = at, at.Sub(now)
	s.slotOutcome(SlotBooked)
	s.kick() // the dispatcher wakes when the slot comes due
}

// slotsAhead is the budget time taken by the slots booked before
// horizon (each pushes the horizon by its span), and their number. s.mu
// held.
func (s *Scheduler) slotsAhead(horizon time.Time) (time.Duration, int) {
	var d time.Duration
	n := 0
	for _, b := range s.slots {
		if b.gone {
			continue
		}
		if b.at.After(horizon.Add(d)) {
			break
		}
		d += b.span
		n++
	}
	return d, n
}

// nextSlot drops the slots claimed or past their tolerance from the front
// of s.slots (an expired one gives back its reservation) and returns the
// first slot due for reservation (nil when none) and when the next one
// comes due or the next reserved one expires (zero when none). The slots
// are in the order of their times, so only the front is visited. s.mu
// held.
func (s *Scheduler) nextSlot(now time.Time) (*booking, time.Time) {
	for len(s.slots) > 0 && s.slots[0].gone {
		s.slots[0] = nil
		s.slots = s.slots[1:]
	}
	for i := 0; i < len(s.slots); i++ {
		b := s.slots[i]
		if b.gone {
			continue
		}
		if now.After(b.until) {
			s.expireSlot(b)
			continue
		}
		if b.grant != nil {
			continue // reserved, waiting for its claim or its expiry
		}
		if due := b.due(); now.Before(due) {
			next := due
			// A reserved slot before it may expire first.
			for _, r := range s.slots[:i] {
				if !r.gone && r.grant != nil && r.until.Before(next) {
					next = r.until
				}
			}
			return nil, next
		}
		return b, time.Time{}
	}
	var next time.Time
	for _, r := range s.slots {
		if !r.gone && r.grant != nil && (next.IsZero() || r.until.Before(next)) {
			next = r.until
		}
	}
	return nil, next
}

// slotDue reports whether a slot waits for its reservation: no request
// may then take the budget before the dispatcher reserves it. s.mu held.
func (s *Scheduler) slotDue(now time.Time) bool {
	if len(s.slots) == 0 {
		return false
	}
	b, _ := s.nextSlot(now)
	return b != nil
}

// reserveSlot reserves b's capacity (the dispatcher, without s.mu) and
// returns how long to sleep: 0 when reserved, else the budget's
// retry-after.
func (s *Scheduler) reserveSlot(b *booking) time.Duration {
	g := NewTicket()
	g.s, g.Flow, g.Tokens, g.ID = s, b.flow, b.tokens, b.id
	g.lead = b.span.Microseconds() // the next opening, within a grant's time
	g.cost = 1
	if s.tokens {
		g.cost = max(g.Tokens, 1)
	}
	ok, retry := s.tryGrant(g)
	if ok && s.o.Slots != nil {
		// Recorded in the shared book, so a retry on another replica
		// takes this reservation over; a slot claimed meanwhile is gone.
		marked, err := s.o.Slots.MarkSlot(context.Background(), s.bookName, b.flow, b.at.UnixMicro(), g.Key, b.tokens)
		if !marked && err == nil {
			s.mu.Lock()
			s.dropSlot(b)
			s.mu.Unlock()
			s.giveBack(g)
			return 0
		}
	}
	s.mu.Lock()
	if ok && !b.gone {
		b.grant = g
		s.mu.Unlock()
		return 0
	}
	s.mu.Unlock()
	if ok {
		s.giveBack(g) // claimed (and queued) or expired meanwhile
		return 0
	}
	Release(g)
	if retry <= 0 {
		retry = leasePoll
	}
	return retry
}

// expireSlot drops b, unclaimed past its tolerance, and gives back its
// reservation; with a shared book, only when the book still holds it (a
// retry on another replica may have claimed it, reservation and all).
// s.mu held.
func (s *Scheduler) expireSlot(b *booking) {
	g := s.dropSlot(b)
	if s.o.Slots == nil {
		if g != nil {
			s.giveBack(g)
		}
		s.slotOutcome(SlotExpired)
		return
	}
	go func() {
		unclaimed, err := s.o.Slots.DropSlot(context.Background(), s.bookName, b.flow, b.at.UnixMicro())
		if !unclaimed && err == nil {
			if g != nil {
				Release(g) // claimed elsewhere: the reservation is in use
			}
			return
		}
		s.slotOutcome(SlotExpired)
		if g != nil {
			s.giveBack(g)
		}
	}()
}

// giveBack returns a slot's unused reservation to its store, off the
// caller's goroutine (s.mu may be held; the store may be Redis).
func (s *Scheduler) giveBack(g *Ticket) {
	go func() {
		if g.store != nil {
			if err := g.store.Cancel(context.Background(), &g.req); err != nil {
				s.log.Warn("provider budget: giving back a retry slot failed", "upstream", s.o.Name, "error", err)
			}
		}
		Release(g)
	}()
}

// sweep drops the slots past their tolerance (counted expired) and the
// service records decayed to nothing. s.mu held.
func (s *Scheduler) sweep(now time.Time) {
	s.nextSweep = now.Add(sweepEvery)
	live := s.slots[:0]
	for _, b := range s.slots {
		if !b.gone && now.After(b.until) {
			s.expireSlot(b)
		}
		if !b.gone {
			live = append(live, b)
		}
	}
	clear(s.slots[len(live):])
	s.slots = live
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
