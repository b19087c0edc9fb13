package policy

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"sluice/policy/limit"
)

func benchAdmit(b *testing.B, store limit.Store, shared bool) {
	p, k := admitFixtureTB(b)
	l := NewLimiter(LimiterOptions{Store: store, Shared: shared, Registry: prometheus.NewRegistry()})
	defer l.Close()
	// Generous budgets: the benchmark measures admission, not rejection.
	pl := p.Plan(p.Principal(k, ""), k, "gpt-4o")
	pl.User = Limits{RPM: Rate{Limit: 1 << 40}, TPM: Rate{Limit: 1 << 40}, Concurrent: 1 << 20}
	ask := &Ask{Plan: pl, RequestID: "bench", Tokens: 500}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ad := l.Admit(ctx, p, ask)
		if ad.Outcome != Admitted {
			b.Fatalf("outcome %d", ad.Outcome)
		}
		l.Finish(ctx, ad, 300, 0)
	}
}

// BenchmarkLimiterMemory is one admission and its settlement (rpm, tpm and a
// concurrency slot) on the in-memory store.
func BenchmarkLimiterMemory(b *testing.B) {
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	benchAdmit(b, mem, false)
}

// roundTrips counts the commands a go-redis client sends.
type roundTrips struct{ n atomic.Int64 }

func (*roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// BenchmarkLimiterRedis is the same on Redis; it reports round trips per
// admission plus settlement (the target is 2: one each).
func BenchmarkLimiterRedis(b *testing.B) {
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		b.Skip("needs SLUICE_TEST_REDIS_ADDR (scripts/test.sh starts Redis)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr, Dialer: func(ctx context.Context, network, a string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}})
	defer c.Close()
	rt := &roundTrips{}
	c.AddHook(rt)
	store := limit.NewRedis(c, limit.RedisOptions{Prefix: "bench-admit:"})
	benchAdmit(b, store, false) // Finish inline, to count its round trip
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
}
