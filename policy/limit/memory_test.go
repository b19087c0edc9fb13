package limit

import (
	"context"
	"testing"
	"time"

	"sluice/internal/testkit"
)

func (m *Memory) entries() (tats, leaseSets int) {
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		tats, leaseSets = tats+len(s.tats), leaseSets+len(s.leases)
		s.mu.Unlock()
	}
	return tats, leaseSets
}

// TestMemorySweep: sweeping drops only what is full or expired, and a swept
// store decides exactly as before.
func TestMemorySweep(t *testing.T) {
	m := NewMemory(MemoryOptions{SweepInterval: -1})
	defer m.Close()
	l := []Lease{{Key: "conc", Limit: 1, TTL: sec}}
	reserve(t, m, Request{Rules: []Rule{{Key: "short", Interval: ms, Burst: 5, Cost: 1}}, Leases: l, LeaseID: "a", Now: t0})
	reserve(t, m, Request{Rules: []Rule{{Key: "long", Interval: sec, Burst: 5, Cost: 5}}, Now: t0})
	if tats, sets := m.entries(); tats != 2 || sets != 1 {
		t.Fatalf("before sweep: %d buckets, %d lease sets", tats, sets)
	}
	m.Sweep(t0 + sec) // "short" is full and lease "a" expired; "long" is not full
	if tats, sets := m.entries(); tats != 1 || sets != 0 {
		t.Fatalf("after sweep: %d buckets, %d lease sets", tats, sets)
	}
	d := reserve(t, m, Request{Rules: []Rule{{Key: "long", Interval: sec, Burst: 5}}, Now: t0 + sec})
	if d.Remaining[0] != 1 || d.Reset[0] != 4*sec {
		t.Fatalf("swept too much: %s", show(d))
	}
}

// TestMemorySweeper: the background loop runs and Close stops it.
func TestMemorySweeper(t *testing.T) {
	m := NewMemory(MemoryOptions{SweepInterval: 5 * time.Millisecond})
	reserve(t, m, Request{Rules: []Rule{{Key: "k", Interval: ms, Burst: 1, Cost: 1}}}) // full again in 1 ms
	testkit.Eventually(t, 5*time.Second, "the sweeper to drop a full bucket", func() bool { tats, _ := m.entries(); return tats == 0 })
	m.Close()
	m.Close() // idempotent
	if err := m.Release(context.Background(), nil, ""); err != nil {
		t.Fatal(err) // still usable
	}
}

func TestShardOfSpreads(t *testing.T) {
	var hit [numShards]int
	for i := range 6400 {
		hit[shardOf("u:user"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676))+":rpm")]++
	}
	for i, n := range hit {
		if n < 50 || n > 150 {
			t.Errorf("shard %d got %d of 6400 keys", i, n)
		}
	}
}
