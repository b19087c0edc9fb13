package policy

import (
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// policyGen numbers compiled policies in the order they were compiled, so
// the Limiter can tell a newer policy from an older one still in use by a
// request that started before a reload.
var policyGen atomic.Uint64

type tokenCounters struct{ reserved, actual prometheus.Counter }

// count increments sluice_limiter_decisions_total{tier, limit, scope,
// outcome}; scope is the deciding limit's owner (user, model, app; none
// when no limit decided).
func (l *Limiter) count(tier, lim, scope, outcome string) {
	if scope == "" {
		scope = "none"
	}
	// The key is built on the stack; only a first sighting allocates.
	var buf [112]byte
	key := append(append(append(append(append(append(append(buf[:0], tier...), 0), lim...), 0), scope...), 0), outcome...)
	if c, ok := l.counters.Load(string(key)); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	l.tierMu.Lock()
	c := l.decisions.WithLabelValues(tier, lim, scope, outcome)
	l.counters.Store(string(key), c)
	l.tierMu.Unlock()
	c.Inc()
}

func (l *Limiter) tierTokens(tier string) *tokenCounters {
	if t, ok := l.tierTok.Load(tier); ok {
		return t.(*tokenCounters)
	}
	l.tierMu.Lock()
	t := &tokenCounters{l.tokens.WithLabelValues(tier, "reserved"), l.tokens.WithLabelValues(tier, "actual")}
	l.tierTok.Store(tier, t)
	l.tierMu.Unlock()
	return t
}

// retireTiers drops the metric series and cached handles of tiers that pol
// no longer has, once per newer policy (the first request admitted under
// it does it). A request of a removed tier still running under the old
// policy may count once more and bring its series back; the next reload
// drops it again.
func (l *Limiter) retireTiers(pol *Policy) {
	l.tierMu.Lock()
	defer l.tierMu.Unlock()
	if pol.gen <= l.tierGen.Load() {
		return
	}
	l.tierGen.Store(pol.gen)
	gone := func(tier string) bool {
		_, ok := pol.Tiers[tier]
		return tier != "" && !ok
	}
	retired := map[string]bool{}
	l.counters.Range(func(k, _ any) bool {
		key := strings.TrimLeft(k.(string), "\x01\x02") // shadowCount's keys start with 1, budgetUse's with 2
		tier, _, _ := strings.Cut(key, "\x00")
		if gone(tier) {
			l.counters.Delete(k)
			retired[tier] = true
		}
		return true
	})
	l.tierTok.Range(func(k, _ any) bool {
		if tier := k.(string); gone(tier) {
			l.tierTok.Delete(k)
			retired[tier] = true
		}
		return true
	})
	for tier := range retired {
		match := prometheus.Labels{"tier": tier}
		l.decisions.DeletePartialMatch(match)
		l.shadowDecisions.DeletePartialMatch(match)
		l.tokens.DeletePartialMatch(match)
		l.budgetUsed.DeletePartialMatch(match)
	}
}
