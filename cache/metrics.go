package cache

import "github.com/prometheus/client_golang/prometheus"

// Bypass reasons, the values of sluice_cache_bypasses_total's "reason".
const (
	// BypassNoStore: the request said Cache-Control: no-store.
	BypassNoStore = "no_store"
	// BypassPolicy: the tier's cache mode excludes the request (off, or not
	// deterministic).
	BypassPolicy = "policy"
	// BypassUnkeyable: the body has no canonical form (duplicate keys).
	BypassUnkeyable = "unkeyable"
)

// Metrics are the cache's collectors, resolved once.
type Metrics struct {
	// Hits counts requests answered from a stored entry.
	Hits prometheus.Counter
	// Misses counts cacheable requests that found no entry and called the
	// provider.
	Misses prometheus.Counter
	// Coalesced counts requests answered by an identical request's call in
	// this replica (where="local").
	Coalesced prometheus.Counter
	// CoalescedRemote counts requests answered by another replica's call,
	// read from the shared store after waiting for its lock (where="remote").
	CoalescedRemote prometheus.Counter
	// Bypasses counts requests that skipped the cache, by reason.
	Bypasses map[string]prometheus.Counter
	// Stored counts entries written.
	Stored prometheus.Counter
	// TooLarge counts answers too large to store.
	TooLarge prometheus.Counter
	// Corrupt counts entries that could not be read (served as misses).
	Corrupt prometheus.Counter
	// StoreErrors counts store calls that failed (served as misses).
	StoreErrors prometheus.Counter
	// Evictions counts memory entries evicted to stay within max_bytes.
	Evictions prometheus.Counter
	// TokensSaved counts the prompt and completion tokens of answers served
	// from the cache or a shared call instead of the provider.
	TokensSaved prometheus.Counter
	// CallsSaved counts provider calls not made: hits plus coalesced.
	CallsSaved prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, mem *Memory) *Metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_cache_" + name, Help: help})
	}
	m := &Metrics{
		Hits:        c("hits_total", "Requests answered from a stored cache entry."),
		Misses:      c("misses_total", "Cacheable requests that found no entry and called the provider."),
		Stored:      c("stores_total", "Answers written to the cache."),
		TooLarge:    c("too_large_total", "Answers not stored because they exceed cache.max_entry_bytes."),
		Corrupt:     c("corrupt_total", "Stored entries that could not be read (wrong version, truncated, bad checksum); served as misses."),
		StoreErrors: c("store_errors_total", "Cache store calls that failed or timed out (Redis down); served as misses."),
		Evictions:   c("evictions_total", "Memory entries evicted to stay within cache.max_bytes."),
		TokensSaved: c("tokens_saved_total", "Prompt plus completion tokens of answers served from the cache or a coalesced call instead of the provider."),
		CallsSaved:  c("provider_calls_saved_total", "Provider calls not made thanks to the cache: hits plus coalesced requests."),
		Bypasses:    map[string]prometheus.Counter{},
	}
	bypasses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_cache_bypasses_total",
		Help: "Requests that skipped the cache, by reason (no_store, policy, unkeyable)."}, []string{"reason"})
	coalesced := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_cache_coalesced_total",
		Help: "Requests answered by an identical request already in flight, without a provider call of their own: " +
			"where=local in this replica, where=remote in another replica (shared store, lock.go)."}, []string{"where"})
	m.Coalesced, m.CoalescedRemote = coalesced.WithLabelValues("local"), coalesced.WithLabelValues("remote")
	for _, r := range []string{BypassNoStore, BypassPolicy, BypassUnkeyable} {
		m.Bypasses[r] = bypasses.WithLabelValues(r)
	}
	reg.MustRegister(m.Hits, m.Misses, coalesced, m.Stored, m.TooLarge, m.Corrupt, m.StoreErrors,
		m.Evictions, m.TokensSaved, m.CallsSaved, bypasses)
	if mem != nil {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_cache_bytes",
				Help: "Bytes held by the in-memory cache (entries plus per-entry overhead)."},
				func() float64 { b, _ := mem.Stats(); return float64(b) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_cache_entries",
				Help: "Entries held by the in-memory cache."},
				func() float64 { _, n := mem.Stats(); return float64(n) }))
		prev := mem.opts.OnEvict
		mem.opts.OnEvict = func() {
			m.Evictions.Inc()
			if prev != nil {
				prev()
			}
		}
	}
	return m
}
