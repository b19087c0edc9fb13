package cache

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	if g := c.PurgeNamespace("team:a"); g != 1 {
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

func TestNamespaceAllocatesNothingUnpurged(t *testing.T) {
	c, _ := New(Options{Store: NewMemory(MemoryOptions{MaxBytes: 1 << 20}), Registry: prometheus.NewRegistry()})
	if n := testing.AllocsPerRun(100, func() { _ = c.Namespace("team:a") }); n != 0 {
		t.Fatalf("Namespace allocates %v times", n)
	}
}
