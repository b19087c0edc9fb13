package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testRedis returns a client for the Redis in SLUICE_TEST_REDIS_ADDR and a
// key prefix unique to this test; the test's keys are deleted at the end.
func testRedis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis: skipped under -short")
	}
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("SLUICE_TEST_REDIS_ADDR is not set (source scripts/services.sh; start_redis)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	prefix := fmt.Sprintf("sluice-test:%s:%d:cache:", t.Name(), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Keys(ctx, prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		_ = c.Close()
	})
	return c, prefix
}

func TestRedisStoreIntegration(t *testing.T) {
	rc, prefix := testRedis(t)
	ctx := context.Background()
	r := NewRedis(rc, RedisOptions{Prefix: prefix, Timeout: time.Second})
	if _, err := r.Get(ctx, keyOf(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a new key = %v, want ErrNotFound", err)
	}
	if err := r.Set(ctx, keyOf(1), []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	v, err := r.Get(ctx, keyOf(1))
	if err != nil || string(v) != "v1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	ttl := rc.PTTL(ctx, prefix+keyOf(1).String()).Val()
	if ttl <= 50*time.Second || ttl > time.Minute {
		t.Errorf("key TTL %v, want about 1m (key %s)", ttl, prefix+keyOf(1).String())
	}
	// Two caches (two replicas) on one Redis: one stores, the other hits.
	a := newTestCache(t, &Tiered{Front: NewMemory(MemoryOptions{}), Back: r})
	b := newTestCache(t, &Tiered{Front: NewMemory(MemoryOptions{}), Back: NewRedis(rc, RedisOptions{Prefix: prefix})})
	a.Put(ctx, keyOf(2), &Entry{Created: time.Now(), Expires: time.Now().Add(time.Minute), Body: []byte(`{"ok":true}`)})
	if e := b.Get(ctx, keyOf(2)); e == nil || string(e.Body) != `{"ok":true}` {
		t.Fatalf("replica b missed replica a's entry")
	}
	// A corrupt value in Redis is a counted miss.
	rc.Set(ctx, prefix+keyOf(3).String(), "SLC\x01garbage", time.Minute)
	if b.Get(ctx, keyOf(3)) != nil {
		t.Errorf("corrupt Redis entry served")
	}
}

func TestRedisDownIsMiss(t *testing.T) {
	// A port nothing listens on: every call fails fast.
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 50 * time.Millisecond})
	defer rc.Close()
	c := newTestCache(t, NewRedis(rc, RedisOptions{Prefix: "sluice-test:down:", Timeout: 50 * time.Millisecond}))
	ctx := context.Background()
	c.Put(ctx, keyOf(1), &Entry{Created: time.Now(), Expires: time.Now().Add(time.Minute), Body: []byte(`{}`)})
	start := time.Now()
	if c.Get(ctx, keyOf(1)) != nil {
		t.Fatal("hit with Redis down")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a miss with Redis down took %v", d)
	}
	if c.m.StoreErrors == nil {
		t.Fatal("no store error counter")
	}
}
