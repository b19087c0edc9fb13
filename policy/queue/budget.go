package queue

import (
	"context"
	"sluice/policy/limit"
	"time"
)

// tryGrant reserves t's cost from the budget, trying the keys in a
// weighted rotation. It reports success; on failure the second result is
// the shortest retry-after over the keys (0: unknown, a full concurrency
// set or a store error). Called without s.mu.
func (s *Scheduler) tryGrant(t *Ticket) (bool, time.Duration) {
	n := len(s.o.Keys)
	start := s.pickKey()
	var wait int64 = -1
	nowUs := time.Now().UnixMicro()
	for i := 0; i < n; i++ {
		k := (start + i) % len(s.o.Keys)
		if r := s.rest[k].Load(); r > nowUs {
			if wait < 0 || r-nowUs < wait {
				wait = r - nowUs
			}
			continue // the key answered 429 and rests
		}
		ok, err := s.reserve(t, k)
		if err != nil {
			return false, 0
		}
		if ok {
			t.Key = k
			return true, 0
		}
		ra := t.dec.RetryAfter
		if t.dec.Limiting >= len(t.req.Rules) {
			// A full concurrency set: its retry-after is a lease's expiry,
			// not when a call ends. Wait for a release instead.
			ra = 0
		}
		if ra >= 0 && (wait < 0 || ra < wait) {
			wait = ra
		}
	}
	if wait < 0 {
		wait = 0
	}
	return false, time.Duration(wait) * time.Microsecond
}

// pickKey is the first key to try: a weighted rotation over the pool.
func (s *Scheduler) pickKey() int {
	if len(s.o.Keys) == 1 {
		return 0
	}
	var total int64
	for _, k := range s.o.Keys {
		total += k.Weight
	}
	x := int64(s.pickSeq.Add(1) % uint64(total))
	for i, k := range s.o.Keys {
		if x < k.Weight {
			return i
		}
		x -= k.Weight
	}
	return 0
}

// reserve tries key k's rules and leases for t on the store (or its
// fallback while the store fails).
func (s *Scheduler) reserve(t *Ticket, k int) (bool, error) {
	store, rules, leases := s.o.Store, s.rules[k], s.leases[k]
	if s.o.Fallback != nil && s.failing.Load() {
		store, rules, leases = s.o.Fallback, s.fbRules[k], s.fbLeases[k]
	}
	if len(rules) == 0 && len(leases) == 0 {
		t.store = nil
		return true, nil
	}
	s.fill(t, rules, leases)
	err := store.Reserve(context.Background(), &t.req, &t.dec)
	if err != nil && store == s.o.Store && s.o.Fallback != nil {
		if !s.failing.Swap(true) {
			s.log.Error("provider budget store failing; using local budgets divided by replicas", "upstream", s.o.Name, "error", err)
			s.probing.Go(s.probe)
		}
		store = s.o.Fallback
		s.fill(t, s.fbRules[k], s.fbLeases[k])
		err = store.Reserve(context.Background(), &t.req, &t.dec)
	}
	if err != nil {
		s.log.Error("provider budget reservation failed", "upstream", s.o.Name, "error", err)
		return false, err
	}
	t.store = store
	return t.dec.Allowed, nil
}

func (s *Scheduler) fill(t *Ticket, rules []limit.Rule, leases []limit.Lease) {
	t.req.Rules = append(t.req.Rules[:0], rules...)
	for i := range t.req.Rules {
		if t.req.Rules[i].Cost == 0 { // a tpm rule
			t.req.Rules[i].Cost = min(max(t.Tokens, 1), t.req.Rules[i].Burst)
		}
	}
	t.req.Leases = append(t.req.Leases[:0], leases...)
	t.req.LeaseID = t.ID
	t.req.MaxWait = t.lead
}

// probe checks the shared store every second until it answers again.
func (s *Scheduler) probe() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var d limit.Decision
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			req := limit.Request{Rules: []limit.Rule{{Key: "up:{" + s.o.Name + "}:probe", Interval: 1, Burst: 1, Cost: 0}}}
			if s.o.Store.Reserve(context.Background(), &req, &d) == nil {
				s.failing.Store(false)
				s.log.Info("provider budget store answers again", "upstream", s.o.Name)
				return
			}
		}
	}
}
