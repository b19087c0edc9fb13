package queue

import (
	"time"
)

// flow is one user's FIFO of waiting tickets.
type flow struct {
	name       string
	head, tail *Ticket
	n          int
	deficit    int64
	visited    bool // got its quantum in the current visit
	weight     int64
	prio       int
	active     bool
}

// level is one priority's ring of active flows (a slice used as a queue).
type level struct {
	prio  int
	flows []*flow
}

// estimate is the expected wait of a new ticket and the requests ahead of
// it: with deficit round robin every active flow is served in turn, so the
// ticket waits for its own flow's queue and, per own request, one round of
// the others (by weight). s.mu held.
func (s *Scheduler) estimate(t *Ticket, now time.Time) (int, time.Duration) {
	own := 0
	if f := s.flows[t.Flow]; f != nil {
		own = f.n
	}
	var others float64
	ahead := own
	for _, lv := range s.levels {
		if lv.prio < t.Priority {
			continue
		}
		for _, f := range lv.flows {
			if f.name == t.Flow {
				continue
			}
			if lv.prio > t.Priority {
				others += float64(f.n)
				ahead += f.n
				continue
			}
			// A flow of the same level is served min(its queue, rounds)
			// times before our request; each round gives it weight/ours.
			share := float64(f.weight) / float64(t.Weight)
			n := min(float64(f.n), float64(own+1)*share)
			others += n
			ahead += int(n)
		}
	}
	slot := s.slot(t, s.factor)
	eta := time.Duration((float64(own+1) + others) * float64(slot))
	// Retry slots booked within the wait come first (slots.go).
	if len(s.slots) > 0 {
		d, n := s.slotsAhead(now.Add(eta))
		eta += d
		ahead += n
	}
	if p := time.UnixMicro(s.pauseUntil); p.After(now) {
		eta += p.Sub(now)
	}
	return ahead, eta
}

// slot is the time one grant of t's size takes from the budget at drain
// factor f.
func (s *Scheduler) slot(t *Ticket, f float64) time.Duration {
	var slot int64 // µs
	for _, r := range s.rules[0] {
		c := r.Cost
		if r.Cost == 0 { // tpm
			c = t.cost
		}
		slot = max(slot, c*r.Interval)
	}
	return time.Duration(float64(slot)/f) * time.Microsecond
}

// push appends t to its flow, activating the flow. s.mu held.
func (s *Scheduler) push(t *Ticket) {
	f := s.flows[t.Flow]
	if f == nil {
		f = &flow{name: t.Flow, prio: t.Priority}
		s.flows[t.Flow] = f
	}
	// A flow keeps the level it waits at while active (a claimed slot's
	// ticket joins its user's flow where it is).
	f.weight = t.Weight
	if !f.active {
		f.prio = t.Priority
	}
	t.f = f
	if f.tail == nil {
		f.head = t
	} else {
		f.tail.next = t
	}
	f.tail = t
	t.inQueue = true
	if t.Deadline.Before(s.nextExpire) {
		s.nextExpire = t.Deadline
	}
	f.n++
	s.waiting++
	if !f.active {
		f.active = true
		s.insert(s.levelOf(f.prio), f, t.enqueued)
	}
	s.contendedUntil = t.enqueued.Add(2 * serviceHalfLife)
}

func (s *Scheduler) levelOf(prio int) *level {
	i := 0
	for ; i < len(s.levels); i++ {
		if s.levels[i].prio == prio {
			return s.levels[i]
		}
		if s.levels[i].prio < prio {
			break
		}
	}
	lv := &level{prio: prio}
	s.levels = append(s.levels, nil)
	copy(s.levels[i+1:], s.levels[i:])
	s.levels[i] = lv
	return lv
}

// remove takes t out of its flow (cancel, expiry). s.mu held.
func (s *Scheduler) remove(t *Ticket) {
	if !t.inQueue {
		return
	}
	t.inQueue = false
	f := t.f
	var prev *Ticket
	for c := f.head; c != nil; prev, c = c, c.next {
		if c != t {
			continue
		}
		if prev == nil {
			f.head = c.next
		} else {
			prev.next = c.next
		}
		if f.tail == c {
			f.tail = prev
		}
		c.next = nil
		f.n--
		s.waiting--
		break
	}
	if f.n == 0 {
		s.deactivate(f)
	}
}

func (s *Scheduler) deactivate(f *flow) {
	f.active, f.deficit, f.visited = false, 0, false
	for i, lv := range s.levels {
		if lv.prio != f.prio {
			continue
		}
		for j, g := range lv.flows {
			if g == f {
				lv.flows = append(lv.flows[:j], lv.flows[j+1:]...)
				break
			}
		}
		if len(lv.flows) == 0 {
			s.levels = append(s.levels[:i], s.levels[i+1:]...)
		}
		break
	}
	delete(s.flows, f.name)
}

// pick returns the ticket deficit round robin serves next, without removing
// it: the highest priority level's front flow, once its deficit (topped up
// by one quantum per visit) covers its head's cost; flows that cannot pay
// move to the back of the ring. s.mu held.
func (s *Scheduler) pick() *Ticket {
	if len(s.levels) == 0 {
		return nil
	}
	lv := s.levels[0]
	for {
		f := lv.flows[0]
		if !f.visited {
			f.deficit += f.weight * s.o.Quantum
			f.visited = true
		}
		if f.head.cost <= f.deficit {
			return f.head
		}
		f.visited = false
		lv.flows = append(lv.flows[1:], f)
	}
}

// served takes the head t out of its flow after a grant. s.mu held.
func (s *Scheduler) served(t *Ticket) {
	f := t.f
	f.deficit -= t.cost
	t.inQueue = false
	f.head = t.next
	if f.head == nil {
		f.tail = nil
	}
	t.next = nil
	f.n--
	s.waiting--
	if f.n == 0 {
		s.deactivate(f)
	}
}
