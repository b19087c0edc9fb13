package cache

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Deleter is a Store that can drop one entry. Memory, Redis and Tiered are
// Deleters.
type Deleter interface {
	// Delete removes the entry under k; a missing entry is not an error.
	Delete(ctx context.Context, k Key) error
}

// Delete removes the entry under k.
func (m *Memory) Delete(_ context.Context, k Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.items[k]; n != nil {
		m.remove(n)
	}
	return nil
}

// Delete removes the entry under k from the shared store.
func (r *Redis) Delete(ctx context.Context, k Key) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	err := r.c.Del(ctx, r.key(k)).Err()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// Delete removes the entry under k from both tiers; the Back error, if any,
// is returned.
func (t *Tiered) Delete(ctx context.Context, k Key) error {
	_ = t.Front.Delete(ctx, k)
	if d, ok := t.Back.(Deleter); ok {
		return d.Delete(ctx, k)
	}
	return nil
}

// ErrNoDelete means the cache's store cannot delete entries.
var ErrNoDelete = errors.New("cache: the store cannot delete entries")

// Purge removes the entry under k (see Namespace for the namespace a key is
// built from).
func (c *Cache) Purge(ctx context.Context, k Key) error {
	d, ok := c.opts.Store.(Deleter)
	if !ok {
		return ErrNoDelete
	}
	return d.Delete(ctx, k)
}

// PurgeNamespace makes every entry of namespace ns unreachable: keys are
// built from Namespace(ns), which changes with each purge, so the old
// entries are never asked for again and age out by their TTL (memory: LRU
// eviction). It returns the namespace's new generation. The generation is
// per process: with a shared store, purge each replica.
func (c *Cache) PurgeNamespace(ns string) uint64 {
	c.genMu.Lock()
	defer c.genMu.Unlock()
	if c.gens == nil {
		c.gens = make(map[string]uint64)
	}
	c.gens[ns]++
	g := c.gens[ns]
	c.purged.Store(true)
	c.opts.Logger.Info("cache namespace purged", "namespace", ns, "generation", g, "at", time.Now().UTC())
	return g
}

// Namespace returns the name keys of namespace ns are built from: ns itself
// until the namespace is first purged, then ns with its generation. It
// costs an atomic load while nothing was ever purged.
func (c *Cache) Namespace(ns string) string {
	if !c.purged.Load() {
		return ns
	}
	c.genMu.Lock()
	g := c.gens[ns]
	c.genMu.Unlock()
	if g == 0 {
		return ns
	}
	return ns + "\x00gen" + strconv.FormatUint(g, 10)
}
