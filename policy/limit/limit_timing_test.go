package limit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
)

// benchRequest is a typical admission: requests/min, tokens/min (a 1,500-token
// reservation), tokens/day and a concurrency slot.
func benchRequest(user string) Request {
	return Request{
		Rules: []Rule{
			{Key: "u:" + user + ":rpm", Interval: 60 * sec / 600, Burst: 1_000_000, Cost: 1},
			{Key: "u:" + user + ":tpm", Interval: 60 * sec / 100_000, Burst: 1_000_000_000, Cost: 1500},
			{Key: "u:" + user + ":tpd", Interval: 86_400 * sec / 10_000_000, Burst: 1_000_000_000, Cost: 1500},
		},
		Leases:  []Lease{{Key: "u:" + user + ":conc", Limit: 1 << 40, TTL: 600 * sec}},
		LeaseID: "req-" + user,
		MaxWait: 5 * sec,
	}
}

// BenchmarkMemoryReserve: one admission and its release, existing keys.
func BenchmarkMemoryReserve(b *testing.B) {
	m := NewMemory(MemoryOptions{})
	defer m.Close()
	ctx := context.Background()
	req := benchRequest("alice")
	var d Decision
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Reserve(ctx, &req, &d); err != nil {
			b.Fatal(err)
		}
		_ = m.Release(ctx, req.Leases, req.LeaseID)
	}
}

// BenchmarkMemoryReserveParallel: many users on all cores (shard contention).
func BenchmarkMemoryReserveParallel(b *testing.B) {
	m := NewMemory(MemoryOptions{})
	defer m.Close()
	ctx := context.Background()
	reqs := make([]Request, 1024)
	for i := range reqs {
		reqs[i] = benchRequest("user" + strconv.Itoa(i))
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var d Decision
		req := reqs[next.Add(1)%int64(len(reqs))]
		for pb.Next() {
			if err := m.Reserve(ctx, &req, &d); err != nil {
				b.Fatal(err)
			}
			_ = m.Release(ctx, req.Leases, req.LeaseID)
		}
	})
}

// BenchmarkRedisReserve: one admission against the Redis of
// SLUICE_TEST_REDIS_ADDR (loopback), reporting round trips per admission
// (target 1).
func BenchmarkRedisReserve(b *testing.B) {
	c := newRedisClient(b)
	s := newRedisStore(b, c)
	ctx := context.Background()
	req := benchRequest("alice")
	var d Decision
	_ = s.Reserve(ctx, &req, &d) // loads the script
	h := &countHook{}
	c.AddHook(h)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Reserve(ctx, &req, &d); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(h.n.Load())/float64(b.N), "roundtrips/op")
}

// BenchmarkRedisSettle: Adjust then Release, as after a completed call.
func BenchmarkRedisSettle(b *testing.B) {
	c := newRedisClient(b)
	s := newRedisStore(b, c)
	ctx := context.Background()
	req := benchRequest("alice")
	var d Decision
	_ = s.Reserve(ctx, &req, &d)
	_ = s.Adjust(ctx, req.Rules[1], -1)
	_ = s.Release(ctx, req.Leases, req.LeaseID)
	h := &countHook{}
	c.AddHook(h)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Adjust(ctx, req.Rules[1], -1); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(ctx, req.Leases, req.LeaseID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(h.n.Load())/float64(b.N), "roundtrips/op")
}
