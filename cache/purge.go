package cache

import (
	"context"
	"errors"
	"maps"
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

// Generations is a shared Store that keeps the namespaces' purge
// generations, so a purge through one replica reaches them all. Redis and
// Tiered (over Redis) are Generations.
type Generations interface {
	// BumpGeneration increments ns's generation and returns the new one.
	BumpGeneration(ctx context.Context, ns string) (uint64, error)
	// Generations returns every namespace's generation.
	Generations(ctx context.Context) (map[string]uint64, error)
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

// gensKey is the hash of namespace generations; its name holds letters
// that no hex entry key has.
func (r *Redis) gensKey() string { return r.opts.Prefix + "namespace-generations" }

// BumpGeneration increments ns's generation in the shared hash.
func (r *Redis) BumpGeneration(ctx context.Context, ns string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	g, err := r.c.HIncrBy(ctx, r.gensKey(), ns, 1).Result()
	return uint64(max(g, 0)), err
}

// Generations reads every namespace's generation from the shared hash.
func (r *Redis) Generations(ctx context.Context) (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	h, err := r.c.HGetAll(ctx, r.gensKey()).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(h))
	for ns, v := range h {
		if g, err := strconv.ParseUint(v, 10, 64); err == nil {
			out[ns] = g
		}
	}
	return out, nil
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

// BumpGeneration passes to Back.
func (t *Tiered) BumpGeneration(ctx context.Context, ns string) (uint64, error) {
	if g, ok := t.Back.(Generations); ok {
		return g.BumpGeneration(ctx, ns)
	}
	return 0, ErrNoGenerations
}

// Generations passes to Back.
func (t *Tiered) Generations(ctx context.Context) (map[string]uint64, error) {
	if g, ok := t.Back.(Generations); ok {
		return g.Generations(ctx)
	}
	return nil, ErrNoGenerations
}

// ErrNoDelete means the cache's store cannot delete entries.
var ErrNoDelete = errors.New("cache: the store cannot delete entries")

// ErrNoGenerations means a store keeps no shared generations.
var ErrNoGenerations = errors.New("cache: the store keeps no namespace generations")

// Purge removes the entry under k (see Namespace for the namespace a key is
// built from).
// A purge through a Tiered store is also logged in the shared store, so
// the other replicas drop their memory copies within
// Options.GenerationSync (purgelog.go).
func (c *Cache) Purge(ctx context.Context, k Key) error {
	d, ok := c.opts.Store.(Deleter)
	if !ok {
		return ErrNoDelete
	}
	if err := d.Delete(ctx, k); err != nil {
		return err
	}
	if _, l, ok := c.purgeLog(); ok {
		return l.LogPurge(ctx, k)
	}
	return nil
}

// sharedGenerations returns the store's shared generations, if it keeps
// them.
func (c *Cache) sharedGenerations() (Generations, bool) {
	g, ok := c.opts.Store.(Generations)
	if t, tiered := c.opts.Store.(*Tiered); tiered {
		_, ok = t.Back.(Generations)
	}
	return g, ok
}

// PurgeNamespace makes every entry of namespace ns unreachable: keys are
// built from Namespace(ns), which changes with each purge, so the old
// entries are never asked for again and age out by their TTL (memory: by
// eviction). With a shared store the generation lives there too, and the
// other replicas take it up within Options.GenerationSync; with a memory
// store it is this process's own. It returns the new generation.
func (c *Cache) PurgeNamespace(ctx context.Context, ns string) (uint64, error) {
	var g uint64
	if gs, ok := c.sharedGenerations(); ok {
		var err error
		if g, err = gs.BumpGeneration(ctx, ns); err != nil {
			return 0, err
		}
	}
	c.genMu.Lock()
	defer c.genMu.Unlock()
	next := map[string]generation{}
	if cur := c.gens.Load(); cur != nil {
		maps.Copy(next, *cur)
	}
	next[ns] = newGeneration(ns, max(g, next[ns].n+1))
	c.gens.Store(&next)
	c.opts.Logger.Info("cache namespace purged", "namespace", ns, "generation", next[ns].n)
	return next[ns].n, nil
}

// merge takes up generations read from the shared store (never going back).
func (c *Cache) merge(remote map[string]uint64) {
	c.genMu.Lock()
	defer c.genMu.Unlock()
	cur := c.gens.Load()
	changed := false
	for ns, g := range remote {
		if cur == nil || (*cur)[ns].n < g {
			changed = true
			break
		}
	}
	if !changed {
		return
	}
	next := map[string]generation{}
	if cur != nil {
		maps.Copy(next, *cur)
	}
	for ns, g := range remote {
		if g > next[ns].n {
			next[ns] = newGeneration(ns, g)
		}
	}
	c.gens.Store(&next)
}

// SyncGenerations fetches the shared store's generations now.
func (c *Cache) SyncGenerations(ctx context.Context) error {
	gs, ok := c.sharedGenerations()
	if !ok {
		return ErrNoGenerations
	}
	remote, err := gs.Generations(ctx)
	if err != nil {
		return err
	}
	c.merge(remote)
	return nil
}

// startGenerationSync starts the loop that takes up other replicas' purges.
func (c *Cache) startGenerationSync() {
	if _, ok := c.sharedGenerations(); !ok || c.opts.GenerationSync <= 0 {
		return
	}
	c.wg.Go(func() {
		// A store that is down is retried by the loop; store errors are
		// counted by requests. The first read goes through the whole purge
		// log (at most PurgeLogLen keys), against a memory still empty.
		_ = c.SyncGenerations(context.Background())
		_ = c.SyncPurges(context.Background())
		t := time.NewTicker(c.opts.GenerationSync)
		defer t.Stop()
		for {
			select {
			case <-c.stop:
				return
			case <-t.C:
				_ = c.SyncGenerations(context.Background())
				_ = c.SyncPurges(context.Background())
			}
		}
	})
}

// Close stops the generation sync loop, if any, and waits for it.
func (c *Cache) Close() {
	c.stopOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

// generation is a purged namespace's generation and the name its keys are
// built from.
type generation struct {
	n    uint64
	name string
}

func newGeneration(ns string, n uint64) generation {
	return generation{n: n, name: ns + "\x00gen" + strconv.FormatUint(n, 10)}
}

// Namespace returns the name keys of namespace ns are built from: ns itself
// until the namespace is first purged, then ns with its generation. It
// allocates nothing: an atomic load while nothing was ever purged, and a map
// lookup after.
func (c *Cache) Namespace(ns string) string {
	gens := c.gens.Load()
	if gens == nil {
		return ns
	}
	if g, ok := (*gens)[ns]; ok {
		return g.name
	}
	return ns
}
