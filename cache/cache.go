package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Cache.
type Options struct {
	// Store keeps the entries. Required.
	Store Store
	// Memory is the local in-memory store inside Store (itself, or a Tiered's Front),
	// whose size the metrics report; nil when there is none.
	Memory *Memory
	// MaxEntryBytes bounds one stored answer; larger answers are not stored.
	// Default 1 MiB.
	MaxEntryBytes int
	// CoalesceWait bounds how long a request waits for an identical one in
	// flight before calling the provider itself. Default 30s.
	CoalesceWait time.Duration
	// Registry receives the sluice_cache_* metrics. Required.
	Registry prometheus.Registerer
	// Logger receives store errors, once per incident. Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// GenerationSync is how often namespace purges made through other
	// replicas are fetched from a shared store (purge.go), and single-key
	// purges dropped from the memory tier (purgelog.go); 0: never. Only
	// used when Store keeps generations (Redis, or Tiered over Redis); Close
	// stops the loop.
	GenerationSync time.Duration
	// LockTTL is the TTL of the shared lock a replica holds while it calls
	// the provider for a key (lock.go), renewed every third of it while the
	// call runs: a replica that dies mid-call holds other replicas' requests
	// at most this long. Only used with a shared store. Default 5s.
	LockTTL time.Duration
}

// Cache is the response cache: a store of encoded entries, the flights of
// identical requests in progress, and their metrics.
type Cache struct {
	opts    Options
	flights *Group
	m       *Metrics
	// storeDown is set while the store fails, so an outage is logged once.
	storeDown atomic.Bool
	// gens holds the generation of each purged namespace (purge.go), an
	// immutable map replaced whole under genMu; nil until a first purge.
	gens  atomic.Pointer[map[string]generation]
	genMu sync.Mutex
	// purges is where the sync loop stopped reading the shared purge log
	// (purgelog.go).
	purges purgeCursor
	// stop ends the generation sync loop, wg waits for it.
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Defaults of Options.
const (
	DefaultMaxEntryBytes = 1 << 20
	DefaultCoalesceWait  = 30 * time.Second
)

// New returns a Cache on o.Store and registers its metrics.
func New(o Options) (*Cache, error) {
	if o.Store == nil || o.Registry == nil {
		return nil, errors.New("cache: Store and Registry are required")
	}
	if o.MaxEntryBytes <= 0 {
		o.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if o.CoalesceWait <= 0 {
		o.CoalesceWait = DefaultCoalesceWait
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockTTL <= 0 {
		o.LockTTL = DefaultLockTTL
	}
	c := &Cache{opts: o, flights: NewGroup(), stop: make(chan struct{})}
	c.m = newMetrics(o.Registry, o.Memory)
	o.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cache_store_up",
		Help: "1 while the cache store answers; 0 from a failed call until the next one succeeds (Redis health of the cache).",
	}, func() float64 {
		if c.storeDown.Load() {
			return 0
		}
		return 1
	}))
	c.startGenerationSync()
	return c, nil
}

// Metrics returns the cache's metric handles, for the caller to count
// outcomes it decides (hits, bypasses, coalesced requests).
func (c *Cache) Metrics() *Metrics { return c.m }

// CoalesceWait is the bounded wait for an identical request in flight.
func (c *Cache) CoalesceWait() time.Duration { return c.opts.CoalesceWait }

// Now returns the cache's current time.
func (c *Cache) Now() time.Time { return c.opts.Now() }

// Get returns the live entry under k. A missing, expired, corrupt or
// unreadable entry, or a store that fails, is a miss (nil); corrupt entries
// and store errors are counted, never returned.
func (c *Cache) Get(ctx context.Context, k Key) *Entry {
	v, err := c.opts.Store.Get(ctx, k)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			c.storeFailed(err)
		} else {
			c.storeOK()
		}
		return nil
	}
	c.storeOK()
	e, err := Decode(v)
	if err != nil {
		c.m.Corrupt.Inc()
		return nil
	}
	if !c.opts.Now().Before(e.Expires) {
		return nil
	}
	return e
}

// Put stores e under k until e.Expires. Store errors are counted and
// logged, never returned: a cache that cannot store only misses.
func (c *Cache) Put(ctx context.Context, k Key, e *Entry) {
	if len(e.Body) > c.opts.MaxEntryBytes {
		c.m.TooLarge.Inc()
		return
	}
	ttl := e.Expires.Sub(c.opts.Now())
	if ttl <= 0 {
		return
	}
	bp := encodeBufs.Get().(*[]byte)
	*bp = e.encodeInto(*bp)
	err := c.opts.Store.Set(ctx, k, *bp, ttl)
	if cap(*bp) <= maxPooledEncode {
		encodeBufs.Put(bp)
	}
	if err != nil {
		c.storeFailed(err)
		return
	}
	c.m.Stored.Inc()
}

// encodeBufs holds the buffers Put encodes entries into (a store keeps no
// value after Set returns); one larger than maxPooledEncode bytes (64 KiB)
// is left to the collector.
var encodeBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledEncode = 64 << 10

// Join returns the flight in progress for k or starts one (leader true);
// streamed says whether a new flight's leader relays a stream. With a
// shared store a new flight's leader also takes k's lock there (lock.go);
// when another replica holds it the flight is Remote: its leader waits for
// that replica's answer with AwaitRemote before calling on its own.
func (c *Cache) Join(k Key, streamed bool) (*Flight, bool) {
	f, leader := c.flights.Join(k, streamed)
	if !leader {
		return f, false
	}
	// While the store fails (the lookup just before timed out) a lock
	// would only add another timeout: each replica calls on its own.
	if l, ok := c.locker(); ok && !c.storeDown.Load() {
		sl, held := c.lock(l, k)
		f.mu.Lock()
		f.lock, f.remote = sl, held
		f.mu.Unlock()
	}
	return f, true
}

// Flights returns the number of flights in progress.
func (c *Cache) Flights() int { return c.flights.Len() }

// MaxEntryBytes bounds one stored answer.
func (c *Cache) MaxEntryBytes() int { return c.opts.MaxEntryBytes }

func (c *Cache) storeFailed(err error) {
	c.m.StoreErrors.Inc()
	if !c.storeDown.Swap(true) {
		c.opts.Logger.Warn("cache store failed; requests miss until it answers again", "error", err)
	}
}

func (c *Cache) storeOK() {
	if c.storeDown.Load() && c.storeDown.Swap(false) {
		c.opts.Logger.Info("cache store answers again")
	}
}
