//go:build !race

package limit

import (
	"context"
	"testing"
)

// TestMemoryAllocs: admission, settlement and release on existing keys
// allocate nothing (the race detector adds allocations, hence the tag).
func TestMemoryAllocs(t *testing.T) {
	m := NewMemory(MemoryOptions{SweepInterval: -1})
	defer m.Close()
	ctx := context.Background()
	req := benchRequest("alice")
	var d Decision
	if err := m.Reserve(ctx, &req, &d); err != nil { // creates the keys, sizes d
		t.Fatal(err)
	}
	denied := req
	denied.Rules = append([]Rule(nil), req.Rules...)
	denied.Rules[2].Cost = denied.Rules[2].Burst + 1
	allocs := testing.AllocsPerRun(1000, func() {
		req.Now++
		_ = m.Reserve(ctx, &req, &d)
		_ = m.Adjust(ctx, req.Rules[1], -10)
		_ = m.Release(ctx, req.Leases, req.LeaseID)
		_ = m.Reserve(ctx, &denied, &d)
		_ = m.Cancel(ctx, &req)
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per admission cycle, want 0", allocs)
	}
}

// redisAllocBudget is the recorded allocation budget of one Redis Reserve
// (go-redis argument boxing, the reply, the timeout context); see
// BenchmarkRedisReserve. Raise it only with a reason.
const redisAllocBudget = 60

func TestRedisAllocBudget(t *testing.T) {
	s := newRedisStore(t, newRedisClient(t))
	ctx := context.Background()
	req := benchRequest("bob")
	var d Decision
	allocs := testing.AllocsPerRun(200, func() {
		if err := s.Reserve(ctx, &req, &d); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Redis Reserve: %v allocs/op (budget %d)", allocs, redisAllocBudget)
	if allocs > redisAllocBudget {
		t.Fatalf("Redis Reserve makes %v allocs/op, over the budget of %d", allocs, redisAllocBudget)
	}
}
