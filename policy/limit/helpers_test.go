package limit

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// t0 is the start of every test timeline (µs): the year 2096, so that the
// memory sweeper, which runs on the real clock, never treats a test bucket
// as full, and still far below 2^53.
const t0 = 4_000_000_000_000_000

const (
	ms  = int64(1000)    // µs
	sec = int64(1000000) // µs
)

// timedStore is a Store that also settles at an explicit time (both stores).
type timedStore interface {
	Store
	AdjustAt(ctx context.Context, r Rule, delta, now int64) error
}

// redisAddr returns the Redis that scripts/test.sh started. Without one the
// test fails (integration tests are part of the suite), unless -short.
func redisAddr(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis: skipped under -short")
	}
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		t.Fatal("SLUICE_TEST_REDIS_ADDR is not set: run the tests via scripts/test.sh, " +
			"which starts a Redis (scripts/services.sh start_redis), or pass -short to skip them")
	}
	return addr
}

func newRedisClient(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redisAddr(t)})
	t.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", c.Options().Addr, err)
	}
	return c
}

var prefixSeq atomic.Int64

// uniquePrefix returns a key prefix no other test (or test run) uses; tests
// never flush the database.
func uniquePrefix() string {
	return fmt.Sprintf("sluice:test:%d:%d:%d:", os.Getpid(), time.Now().UnixNano(), prefixSeq.Add(1))
}

// newRedisStore returns a Redis store under a fresh prefix whose keys are
// deleted when the test ends.
func newRedisStore(t testing.TB, c *redis.Client) *Redis {
	t.Helper()
	prefix := uniquePrefix()
	t.Cleanup(func() { deletePrefix(c, prefix) })
	return NewRedis(c, RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
}

func deletePrefix(c *redis.Client, prefix string) {
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

func newMemoryStore(t testing.TB) *Memory {
	m := NewMemory(MemoryOptions{})
	t.Cleanup(m.Close)
	return m
}

// eachStore runs f against a fresh Memory store and a fresh Redis store.
func eachStore(t *testing.T, f func(t *testing.T, s timedStore)) {
	t.Run("memory", func(t *testing.T) { f(t, newMemoryStore(t)) })
	t.Run("redis", func(t *testing.T) { f(t, newRedisStore(t, newRedisClient(t))) })
}

// reserve calls s.Reserve and fails the test on an error.
func reserve(t testing.TB, s Store, req Request) Decision {
	t.Helper()
	var d Decision
	if err := s.Reserve(context.Background(), &req, &d); err != nil {
		t.Fatalf("Reserve(%+v): %v", req, err)
	}
	return d
}

// show formats a Decision for failure messages.
func show(d Decision) string {
	return fmt.Sprintf("{allowed:%v wait:%d retry:%d limiting:%d remaining:%v reset:%v}",
		d.Allowed, d.Wait, d.RetryAfter, d.Limiting, d.Remaining, d.Reset)
}
