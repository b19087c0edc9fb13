package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/internal/testkit"
)

func TestPurgeKeyAndNamespace(t *testing.T) {
	ctx := context.Background()
	mem := NewMemory(MemoryOptions{MaxBytes: 1 << 20})
	c, err := New(Options{Store: &Tiered{Front: mem, Back: NewMemory(MemoryOptions{MaxBytes: 1 << 20})}, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace("team:a") != "team:a" {
		t.Fatal("an unpurged namespace changed its name")
	}
	body := []byte(`{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}`)
	k, _, err := NewKey(c.Namespace("team:a"), "chat", "m", body)
	if err != nil {
		t.Fatal(err)
	}
	e := &Entry{Created: time.Now(), Body: []byte("answer"), Expires: time.Now().Add(time.Hour)}
	c.Put(ctx, k, e)
	if c.Get(ctx, k) == nil {
		t.Fatal("not stored")
	}
	if err := c.Purge(ctx, k); err != nil {
		t.Fatal(err)
	}
	if c.Get(ctx, k) != nil {
		t.Fatal("a purged key still answers (a tier kept it)")
	}
	if _, err := mem.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatal("the front tier kept the purged entry")
	}
	c.Put(ctx, k, e)
	if g, err := c.PurgeNamespace(ctx, "team:a"); g != 1 || err != nil {
		t.Fatalf("generation %d; want 1", g)
	}
	k2, _, _ := NewKey(c.Namespace("team:a"), "chat", "m", body)
	if k2 == k || c.Get(ctx, k2) != nil {
		t.Fatal("the purged namespace still answers")
	}
	if kb, _, _ := NewKey(c.Namespace("team:b"), "chat", "m", body); kb == k2 {
		t.Fatal("namespaces collide")
	}
}

func TestNamespaceAllocatesNothing(t *testing.T) {
	c, _ := New(Options{Store: NewMemory(MemoryOptions{MaxBytes: 1 << 20}), Registry: prometheus.NewRegistry()})
	if n := testing.AllocsPerRun(100, func() { _ = c.Namespace("team:a") }); n != 0 {
		t.Fatalf("Namespace allocates %v times before any purge", n)
	}
	_, _ = c.PurgeNamespace(context.Background(), "team:a")
	if n := testing.AllocsPerRun(100, func() { _ = c.Namespace("team:a"); _ = c.Namespace("team:b") }); n != 0 {
		t.Fatalf("Namespace allocates %v times after a purge", n)
	}
}

// TestPurgeNamespaceReachesReplicas: two replicas' caches, memory in front
// of one Redis; a namespace purged through one is purged in the other
// within its sync interval, and a purged key is gone from both.
func TestPurgeNamespaceReachesReplicas(t *testing.T) {
	rc, prefix := testRedis(t)
	ctx := context.Background()
	replica := func(sync time.Duration) *Cache {
		c, err := New(Options{Store: &Tiered{Front: NewMemory(MemoryOptions{MaxBytes: 1 << 20}),
			Back: NewRedis(rc, RedisOptions{Prefix: prefix, Timeout: time.Second})},
			Registry: prometheus.NewRegistry(), GenerationSync: sync})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	a, b := replica(0), replica(20*time.Millisecond)
	body := []byte(`{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}`)
	e := &Entry{Created: time.Now(), Body: []byte("answer"), Expires: time.Now().Add(time.Hour)}
	k, _, _ := NewKey(a.Namespace("team:x"), "chat", "m", body)
	a.Put(ctx, k, e)
	if b.Get(ctx, k) == nil {
		t.Fatal("replica b does not see a's entry")
	}
	if err := a.Purge(ctx, k); err != nil {
		t.Fatal(err)
	}
	// b's memory tier still holds its copy: a key purge reaches the shared
	// tier and the local one of the replica asked.
	if _, err := a.opts.Store.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a still has the purged key: %v", err)
	}
	if g, err := a.PurgeNamespace(ctx, "team:x"); err != nil || g != 1 {
		t.Fatalf("PurgeNamespace = %d, %v", g, err)
	}
	testkit.Eventually(t, 5*time.Second, "replica b to take up the purge", func() bool { return b.Namespace("team:x") != "team:x" })
	if a.Namespace("team:x") != b.Namespace("team:x") {
		t.Fatalf("replicas disagree: %q vs %q", a.Namespace("team:x"), b.Namespace("team:x"))
	}
	if kb, _, _ := NewKey(b.Namespace("team:x"), "chat", "m", body); kb == k || b.Get(ctx, kb) != nil {
		t.Fatal("replica b still answers from the purged namespace")
	}
	// A third replica started later takes the generation up at once.
	c := replica(time.Hour)
	testkit.Eventually(t, 5*time.Second, "a new replica to take up the generation", func() bool {
		return c.Namespace("team:x") == a.Namespace("team:x")
	})
}

// TestPurgeKeyReachesReplicasMemory: a single key purged through one
// replica leaves the other replica's memory tier within its sync interval,
// so that replica no longer answers it.
func TestPurgeKeyReachesReplicasMemory(t *testing.T) {
	rc, prefix := testRedis(t)
	ctx := context.Background()
	const sync = 100 * time.Millisecond
	var fronts []*Memory
	replica := func() *Cache {
		front := NewMemory(MemoryOptions{MaxBytes: 1 << 20})
		fronts = append(fronts, front)
		c, err := New(Options{Store: &Tiered{Front: front, Back: NewRedis(rc, RedisOptions{Prefix: prefix, Timeout: time.Second})},
			Registry: prometheus.NewRegistry(), GenerationSync: sync})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	a, b := replica(), replica()
	e := &Entry{Created: time.Now(), Body: []byte("answer"), Expires: time.Now().Add(time.Hour)}
	k, other := keyOf(21), keyOf(22)
	a.Put(ctx, k, e)
	a.Put(ctx, other, e)
	if b.Get(ctx, k) == nil || b.Get(ctx, other) == nil {
		t.Fatal("replica b does not see a's entries")
	}
	if _, err := fronts[1].Get(ctx, k); err != nil {
		t.Fatal("b's memory tier did not keep its copy")
	}
	if err := a.Purge(ctx, k); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	testkit.Eventually(t, 2*time.Second, "replica b to drop the purged key", func() bool { return b.Get(ctx, k) == nil })
	if d := time.Since(began); d > time.Second {
		t.Fatalf("replica b dropped the key after %v; want within a second", d)
	}
	if b.Get(ctx, other) == nil {
		t.Fatal("replica b lost an entry that was not purged")
	}
	// Many purges in one interval all arrive (one read covers PurgeLogLen).
	var keys []Key
	for i := range 50 {
		k := keyOf(100 + i)
		keys = append(keys, k)
		a.Put(ctx, k, e)
		_ = b.Get(ctx, k)
	}
	for _, k := range keys {
		if err := a.Purge(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, 2*time.Second, "replica b to drop 50 purged keys", func() bool {
		for _, k := range keys {
			if _, err := fronts[1].Get(ctx, k); err == nil {
				return false
			}
		}
		return true
	})
}
