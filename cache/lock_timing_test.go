package cache

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkLeadShared is what a miss's flight costs with a shared store:
// Join takes the key's lock in Redis (SET NX, a renewal goroutine), Finish
// deletes it (a script); BenchmarkLeadLocal is the same without a shared
// store, for comparison (docs/performance.md).
func BenchmarkLeadShared(b *testing.B) {
	rc, prefix := testRedis(b)
	c, err := New(Options{Store: &Tiered{Front: NewMemory(MemoryOptions{MaxBytes: 1 << 20}),
		Back: NewRedis(rc, RedisOptions{Prefix: prefix, Timeout: time.Second})}, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchLead(b, c)
}

func BenchmarkLeadLocal(b *testing.B) {
	c, err := New(Options{Store: NewMemory(MemoryOptions{MaxBytes: 1 << 20}), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchLead(b, c)
}

func benchLead(b *testing.B, c *Cache) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		f, leader := c.Join(keyOf(i), false)
		if !leader || f.Remote() {
			b.Fatal("not a leader")
		}
		f.Finish(nil)
	}
}
