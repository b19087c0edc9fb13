package limit

import (
	"context"
	"testing"
	"time"
)

// eachOwners runs f against fresh memory and Redis owner records.
func eachOwners(t *testing.T, f func(t *testing.T, o Owners)) {
	t.Run("memory", func(t *testing.T) { f(t, NewMemoryOwners()) })
	t.Run("redis", func(t *testing.T) {
		c := newRedisClient(t)
		s := newRedisStore(t, c) // its prefix's keys are deleted at the end
		o, ok := OwnersFor(s).(*RedisOwners)
		if !ok {
			t.Fatalf("OwnersFor(*Redis) = %T; want *RedisOwners", OwnersFor(s))
		}
		o.prefix = s.prefix + "own:" // inside the test's prefix, so cleaned up
		f(t, o)
	})
}

func TestOwners(t *testing.T) {
	eachOwners(t, func(t *testing.T, o Owners) {
		ctx := context.Background()
		if err := o.Own(ctx, "team:a", "file-1", "batch_1", ""); err != nil {
			t.Fatal(err)
		}
		if err := o.Own(ctx, "team:b", "file-2", "file-1"); err != nil { // file-1 stays a's
			t.Fatal(err)
		}
		ids := []string{"file-1", "batch_1", "file-2", "file-3"}
		got := make([]string, len(ids))
		if err := o.Lookup(ctx, ids, got); err != nil {
			t.Fatal(err)
		}
		want := []string{"team:a", "team:a", "team:b", ""}
		for i := range ids {
			if got[i] != want[i] {
				t.Errorf("owner of %s = %q; want %q", ids[i], got[i], want[i])
			}
		}
		if err := o.Lookup(ctx, ids, got[:1]); err == nil {
			t.Error("Lookup with fewer owners than ids: no error")
		}
	})
}

func TestOwnersRedisTTL(t *testing.T) {
	c := newRedisClient(t)
	s := newRedisStore(t, c)
	o := NewRedisOwners(c, s.prefix+"own:", time.Second)
	ctx := context.Background()
	if err := o.Own(ctx, "team:a", "file-ttl"); err != nil {
		t.Fatal(err)
	}
	c.PExpire(ctx, s.prefix+"own:file-ttl", time.Minute)
	got := []string{""}
	if err := o.Lookup(ctx, []string{"file-ttl"}, got); err != nil || got[0] != "team:a" {
		t.Fatalf("Lookup: %q %v", got[0], err)
	}
	if ttl := c.PTTL(ctx, s.prefix+"own:file-ttl").Val(); ttl < OwnerTTL-time.Minute {
		t.Fatalf("TTL after a lookup: %v; want refreshed to about %v", ttl, OwnerTTL)
	}
}

func TestOwnersMemoryExpiry(t *testing.T) {
	o := NewMemoryOwners()
	now := time.Unix(1000, 0)
	o.now = func() time.Time { return now }
	ctx := context.Background()
	_ = o.Own(ctx, "team:a", "file-1")
	now = now.Add(OwnerTTL - time.Hour)
	got := []string{""}
	_ = o.Lookup(ctx, []string{"file-1"}, got) // refreshes
	now = now.Add(OwnerTTL - time.Hour)
	if _ = o.Lookup(ctx, []string{"file-1"}, got); got[0] != "team:a" {
		t.Fatalf("owner after a refreshing lookup: %q; want team:a", got[0])
	}
	now = now.Add(OwnerTTL + time.Second)
	if _ = o.Lookup(ctx, []string{"file-1"}, got); got[0] != "" {
		t.Fatalf("owner after the TTL: %q; want none", got[0])
	}
	_ = o.Own(ctx, "team:b", "file-1") // expired: a new owner may take it
	if _ = o.Lookup(ctx, []string{"file-1"}, got); got[0] != "team:b" {
		t.Fatalf("owner after expiry and a new Own: %q; want team:b", got[0])
	}
}

func TestOwnersForPrefix(t *testing.T) {
	r := NewRedis(nil, RedisOptions{Prefix: "x:rl:"})
	if o := OwnersFor(r).(*RedisOwners); o.prefix != "x:own:" {
		t.Fatalf("prefix %q; want x:own:", o.prefix)
	}
	if _, ok := OwnersFor(NewMemory(MemoryOptions{SweepInterval: -1})).(*MemoryOwners); !ok {
		t.Fatal("OwnersFor(*Memory) is not in memory")
	}
}
