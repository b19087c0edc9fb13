package limit

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// numShards is the number of independently locked parts of a Memory store;
// 64 so that the set of shards a request touches fits one uint64 mask.
const numShards = 64

// DefaultSweepInterval is how often Memory drops full buckets and expired
// leases when MemoryOptions.SweepInterval is 0.
const DefaultSweepInterval = 10 * time.Second

// MemoryOptions configure NewMemory.
type MemoryOptions struct {
	// SweepInterval is the period of the background loop that deletes
	// buckets whose TAT has passed and leases that expired (they mean the
	// same as absent ones). 0 = DefaultSweepInterval; < 0 = no sweeping.
	SweepInterval time.Duration
}

// Memory is the in-process Store: 64 shards, each a mutex over a map of TATs
// and a map of lease sets. A request locks all of its shards in ascending
// order, so a multi-key reservation is atomic and cannot deadlock. Reserve on
// existing keys allocates nothing.
type Memory struct {
	shards [numShards]shard
	stop   chan struct{} // closed by Close to end the sweeper
	wg     sync.WaitGroup
	once   sync.Once
}

type shard struct {
	mu     sync.Mutex
	tats   map[string]int64            // bucket key → TAT (µs)
	leases map[string]map[string]int64 // lease key → lease id → expiry (µs)
	_      [40]byte                    // keep neighbouring mutexes on separate cache lines
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store and starts its sweeper; Close stops it.
func NewMemory(o MemoryOptions) *Memory {
	m := &Memory{stop: make(chan struct{})}
	for i := range m.shards {
		m.shards[i].tats = make(map[string]int64)
		m.shards[i].leases = make(map[string]map[string]int64)
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = DefaultSweepInterval
	}
	if o.SweepInterval > 0 {
		m.wg.Go(func() { m.sweepLoop(o.SweepInterval) })
	}
	return m
}

// Close stops the sweeper and waits for it. The store stays usable.
func (m *Memory) Close() {
	m.once.Do(func() { close(m.stop) })
	m.wg.Wait()
}

func (m *Memory) sweepLoop(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.Sweep(time.Now().UnixMicro())
		}
	}
}

// Sweep deletes buckets that are full at now (TAT <= now), leases that
// expired (expiry <= now) and empty lease sets. The sweeper calls it; tests
// may too.
func (m *Memory) Sweep(now int64) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		for k, tat := range s.tats {
			if tat <= now {
				delete(s.tats, k)
			}
		}
		for k, set := range s.leases {
			if prune(set, now) == 0 {
				delete(s.leases, k)
			}
		}
		s.mu.Unlock()
	}
}

// shardSeed keys the shard hash; random per process.
var shardSeed = maphash.MakeSeed()

// shard returns the shard of key.
func (m *Memory) shard(key string) *shard { return &m.shards[shardOf(key)] }

// shardOf hashes key with the runtime's string hash (no allocation).
func shardOf(key string) uint { return uint(maphash.String(shardSeed, key) % numShards) }

// lock locks the shards of the given rules and leases in ascending order and
// returns the mask to pass to unlock.
func (m *Memory) lock(rules []Rule, leases []Lease) uint64 {
	var mask uint64
	for i := range rules {
		if rules[i].Interval > 0 {
			mask |= 1 << shardOf(rules[i].Key)
		}
	}
	for i := range leases {
		mask |= 1 << shardOf(leases[i].Key)
	}
	for b := mask; b != 0; b &= b - 1 {
		m.shards[bits.TrailingZeros64(b)].mu.Lock()
	}
	return mask
}

func (m *Memory) unlock(mask uint64) {
	for b := mask; b != 0; b &= b - 1 {
		m.shards[bits.TrailingZeros64(b)].mu.Unlock()
	}
}

// clock returns t, or the local time in µs when t is 0.
func clock(t int64) int64 {
	if t != 0 {
		return t
	}
	return time.Now().UnixMicro()
}

// Reserve implements Store.
func (m *Memory) Reserve(_ context.Context, req *Request, d *Decision) error {
	if err := req.validate(); err != nil {
		return err
	}
	t := clock(req.Now)
	defer m.unlock(m.lock(req.Rules, req.Leases))

	v := newVerdict()
	for i := range req.Rules {
		if r := &req.Rules[i]; r.live(t) {
			v.rule(i, r, m.shard(r.Key).tats[r.Key], t)
		}
	}
	for j := range req.Leases {
		l := &req.Leases[j]
		live := prune(m.shard(l.Key).leases[l.Key], t)
		switch {
		case l.Limit == 0:
			v.neverAt(len(req.Rules) + j)
		case int64(live) >= l.Limit:
			e := kth(m.shard(l.Key).leases[l.Key], live-int(l.Limit))
			v.lease(len(req.Rules)+j, e-t)
		}
	}
	v.decide(req.MaxWait, d)

	at := t + d.Wait // when the request runs
	d.Remaining, d.Reset = d.Remaining[:0], d.Reset[:0]
	for i := range req.Rules {
		r := &req.Rules[i]
		if !r.live(t) {
			d.Remaining, d.Reset = append(d.Remaining, -1), append(d.Reset, 0)
			continue
		}
		s := m.shard(r.Key)
		tat := s.tats[r.Key] // read again: a key listed twice sees the first write
		if d.Allowed && r.Cost > 0 {
			tat = Take(tat, r.clockAt(at), r.Interval, r.Cost)
			s.tats[r.Key] = tat
		}
		rem, reset := Status(tat, r.clockAt(t), r)
		if r.Until > 0 {
			reset = r.Until - t
		}
		d.Remaining, d.Reset = append(d.Remaining, rem), append(d.Reset, reset)
	}
	if d.Allowed {
		for _, l := range req.Leases {
			s := m.shard(l.Key)
			set := s.leases[l.Key]
			if set == nil {
				set = make(map[string]int64)
				s.leases[l.Key] = set
			}
			set[req.LeaseID] = at + l.TTL
		}
	}
	return nil
}

// Adjust implements Store on the local clock.
func (m *Memory) Adjust(ctx context.Context, r Rule, delta int64) error {
	return m.AdjustAt(ctx, r, delta, 0)
}

// AdjustAt is Adjust at an explicit time now (µs; 0 = the local clock), for
// tests that replay a timeline.
func (m *Memory) AdjustAt(_ context.Context, r Rule, delta, at int64) error {
	if err := validateAdjust(&r, delta, at); err != nil || r.Interval == 0 || delta == 0 {
		return err
	}
	t := clock(at)
	s := m.shard(r.Key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(&r, delta, t)
	return nil
}

// settle moves the TAT of r's key by delta units (charge or refund, see
// gcra.go) and deletes it when the bucket is full; a counter whose window
// has ended is left alone. The shard must be locked.
func (s *shard) settle(r *Rule, delta, t int64) {
	if delta == 0 || !r.live(t) {
		return
	}
	t = r.clockAt(t)
	tat := s.tats[r.Key]
	if delta > 0 {
		tat = Take(tat, t, r.Interval, delta)
	} else {
		tat = Refund(tat, t, r.Interval, -delta)
	}
	if tat <= t {
		delete(s.tats, r.Key)
	} else {
		s.tats[r.Key] = tat
	}
}

// Cancel implements Store.
func (m *Memory) Cancel(_ context.Context, req *Request) error {
	if err := req.validate(); err != nil {
		return err
	}
	t := clock(req.Now)
	defer m.unlock(m.lock(req.Rules, req.Leases))
	for i := range req.Rules {
		if r := &req.Rules[i]; r.Cost <= r.Burst {
			m.shard(r.Key).settle(r, -r.Cost, t)
		}
	}
	for _, l := range req.Leases {
		delete(m.shard(l.Key).leases[l.Key], req.LeaseID)
	}
	return nil
}

// Settle implements Store: Adjust of each rule by its Cost, then Release.
func (m *Memory) Settle(_ context.Context, rules []Rule, leases []Lease, leaseID string) error {
	for i := range rules {
		if err := validateSettle(&rules[i]); err != nil {
			return err
		}
	}
	t := clock(0)
	defer m.unlock(m.lock(rules, leases))
	for i := range rules {
		r := &rules[i]
		m.shard(r.Key).settle(r, r.Cost, t)
	}
	for _, l := range leases {
		delete(m.shard(l.Key).leases[l.Key], leaseID)
	}
	return nil
}

// Release implements Store. An empty set stays until the sweeper drops it, so
// the next lease under the same key does not allocate.
func (m *Memory) Release(_ context.Context, leases []Lease, leaseID string) error {
	defer m.unlock(m.lock(nil, leases))
	for _, l := range leases {
		delete(m.shard(l.Key).leases[l.Key], leaseID)
	}
	return nil
}

// prune deletes the leases of set that expired at now (expiry <= now) and
// returns how many are live. set may be nil.
func prune(set map[string]int64, now int64) int {
	for id, e := range set {
		if e <= now {
			delete(set, id)
		}
	}
	return len(set)
}

// kth returns the k-th smallest expiry in set (0-based, k < len(set)):
// the expiry after which fewer than len(set)-k leases remain. Lease sets are
// small (<= Limit), so the quadratic scan beats sorting into a new slice.
func kth(set map[string]int64, k int) int64 {
	for _, e := range set {
		less, same := 0, 0
		for _, x := range set {
			if x < e {
				less++
			} else if x == e {
				same++
			}
		}
		if less <= k && k < less+same {
			return e
		}
	}
	return 0 // unreachable for k < len(set)
}
