package limit

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisKeyExpiry: every key the store writes has a TTL: until the bucket
// is full (or the last lease expires) plus a 1 s margin.
func TestRedisKeyExpiry(t *testing.T) {
	c := newRedisClient(t)
	s := newRedisStore(t, c)
	ctx := context.Background()
	d := reserve(t, s, Request{ // server clock
		Rules:   []Rule{{Key: "tpm", Interval: sec, Burst: 100, Cost: 50}, {Key: "rpm", Interval: ms, Burst: 10, Cost: 5}},
		Leases:  []Lease{{Key: "conc", Limit: 5, TTL: 30 * sec}},
		LeaseID: "req-1",
	})
	if !d.Allowed || d.Reset[0] != 50*sec || d.Reset[1] != 5*ms {
		t.Fatalf("reserve: %s", show(d))
	}
	for _, c := range []struct {
		key      string
		min, max time.Duration
	}{
		{"tpm", 50 * time.Second, 51 * time.Second},
		{"rpm", 900 * time.Millisecond, 1005 * time.Millisecond},
		{"conc", 30 * time.Second, 31 * time.Second},
	} {
		ttl, err := s.c.(*redis.Client).PTTL(ctx, s.prefix+c.key).Result()
		if err != nil || ttl <= 0 || ttl < c.min-time.Second || ttl > c.max { // 1 s of slack for a slow machine
			t.Errorf("PTTL %s = %v (%v), want in [%v, %v]", c.key, ttl, err, c.min, c.max)
		}
	}
	// with an explicit (test) clock keys live at least a minute of real time
	reserve(t, s, Request{Rules: []Rule{{Key: "sim", Interval: 1, Burst: 1, Cost: 1}}, Now: t0})
	if ttl := c.PTTL(ctx, s.prefix+"sim").Val(); ttl < 59*time.Second || ttl > 60*time.Second {
		t.Errorf("PTTL of a simulated-time key = %v, want 60 s", ttl)
	}
	// a bucket refunded to full is deleted; the stored TAT is an integer string
	if err := s.AdjustAt(ctx, Rule{Key: "sim", Interval: 1, Burst: 1}, -1, t0); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, s.prefix+"sim").Val(); n != 0 {
		t.Errorf("full bucket still stored")
	}
	if v := c.Get(ctx, s.prefix+"tpm").Val(); strings.ContainsAny(v, ".eE") || len(v) != 16 {
		t.Errorf("TAT stored as %q, want 16 decimal digits", v)
	}
}

func TestRedisDefaultPrefix(t *testing.T) {
	c := newRedisClient(t)
	s := NewRedis(c, RedisOptions{})
	key := strings.TrimPrefix(uniquePrefix(), "sluice:test:") + "k"
	t.Cleanup(func() { c.Del(context.Background(), DefaultRedisPrefix+key) })
	reserve(t, s, Request{Rules: []Rule{{Key: key, Interval: ms, Burst: 1, Cost: 1}}})
	if n := c.Exists(context.Background(), DefaultRedisPrefix+key).Val(); n != 1 {
		t.Fatalf("key %q not under %q", key, DefaultRedisPrefix)
	}
}

// TestRedisScriptFlushed: after SCRIPT FLUSH (a restarted Redis) the store
// falls back from EVALSHA to EVAL.
func TestRedisScriptFlushed(t *testing.T) {
	c := newRedisClient(t)
	s := newRedisStore(t, c)
	r := []Rule{{Key: "k", Interval: ms, Burst: 2, Cost: 1}}
	reserve(t, s, Request{Rules: r, Now: t0})
	if err := c.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if d := reserve(t, s, Request{Rules: r, Now: t0}); !d.Allowed || d.Remaining[0] != 0 {
		t.Fatalf("after SCRIPT FLUSH: %s", show(d))
	}
}

// countHook counts the round trips a client makes.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// TestRedisRoundTrips: admitting a request with three rules and a lease is
// one round trip; so are settling, cancelling and releasing.
func TestRedisRoundTrips(t *testing.T) {
	c := newRedisClient(t)
	s := newRedisStore(t, c)
	ctx := context.Background()
	req := benchRequest("alice")
	h := &countHook{}
	c.AddHook(h)
	var d Decision
	for _, op := range []struct {
		name string
		f    func() error
	}{
		{"Reserve", func() error { return s.Reserve(ctx, &req, &d) }},
		{"Adjust", func() error { return s.Adjust(ctx, req.Rules[1], -100) }},
		{"Release", func() error { return s.Release(ctx, req.Leases, req.LeaseID) }},
		{"Cancel", func() error { return s.Cancel(ctx, &req) }},
	} {
		if err := op.f(); err != nil { // the first call of a script may also load it
			t.Fatalf("%s: %v", op.name, err)
		}
		h.n.Store(0)
		if err := op.f(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		if n := h.n.Load(); n != 1 {
			t.Errorf("%s took %d round trips, want 1", op.name, n)
		}
	}
}

// blockingRedis never answers until the context ends.
type blockingRedis struct{ redis.Scripter }

func (blockingRedis) EvalSha(ctx context.Context, _ string, _ []string, _ ...any) *redis.Cmd {
	<-ctx.Done()
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(ctx.Err())
	return cmd
}

func TestRedisTimeout(t *testing.T) {
	s := NewRedis(blockingRedis{}, RedisOptions{Timeout: 20 * time.Millisecond})
	start := time.Now()
	var d Decision
	err := s.Reserve(context.Background(), &Request{Rules: []Rule{{Key: "k", Interval: 1, Burst: 1, Cost: 1}}}, &d)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("took %v with a 20 ms timeout", el)
	}
}
