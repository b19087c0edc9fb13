package policy

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Shadow decisions, the values of sluice_shadow_decisions_total's outcome
// label.
const (
	ShadowAdmit  = "would_admit"
	ShadowQueue  = "would_queue"
	ShadowReject = "would_reject"
)

// compileShadow checks a tier's shadow limits. Concurrency is not
// shadowed: a lease must be released, and a shadow has no request to end.
// A shadow budget is the user's (tier, key and user overrides), checked
// against the user's real spend.
func compileShadow(path string, l Limits, add func(path, format string, args ...any)) Limits {
	l.validate(path+"shadow.", add)
	if l.Concurrent != 0 {
		add(path+"shadow.concurrent", "concurrency cannot be shadowed (rpm, tpm and tpd can)")
	}
	return l
}

func shadowChanges(out []string, where string, a, b *Tier) []string {
	return limitChanges(out, where+" shadow", a.Shadow, b.Shadow)
}

// shadowScope prefixes shadow bucket keys, so shadow limits never touch the
// real buckets.
const shadowScope = "shadow:"

// shadow evaluates the plan's shadow limits (the tier's, with key and user
// overrides) for a request the real limits
// saw, in buckets of their own (a would-be admitted request takes its
// shadow slot, so the shadow buckets follow the traffic as the limits
// would), and counts the outcome. It never changes the request's fate. Token
// costs are the reservation; shadow buckets are not settled from usage.
func (l *Limiter) shadow(ctx context.Context, a *Ask) {
	sh := &a.Plan.Shadow
	if sh.IsZero() {
		return
	}
	tier := "unknown"
	if a.Plan.Tier != nil {
		tier = a.Plan.Tier.Name
	}
	ad := l.pool.Get().(*Admission)
	ad.reset()
	defer l.pool.Put(ad)
	keys := l.shadowKeysFor(a.Plan.UserScope)
	l.addRate(ad, "user", keys.rpm, LimitRPM, sh.RPM, usPerMinute, 1, 1)
	l.addRate(ad, "user", keys.tpm, LimitTPM, sh.TPM, usPerMinute, a.Tokens, 1)
	l.addRate(ad, "user", keys.tpd, LimitTPD, sh.TPD, usPerDay, a.Tokens, 1)
	worst := int64(0)
	if a.Plan.Spend && sh.Budget != (SpendBudget{}) {
		// A shadow budget reads the user's real spend counters (cost 0:
		// never written) and would reject what its cap cannot fit.
		worst = worstCost(a)
		w := l.window(a.Plan.Zone)
		l.addSpend(ad, "user", l.spendKeysFor(a.Plan.UserScope, "", w), sh.Budget, 0, 1, w)
	}
	ad.req.MaxWait = int64(a.MaxWait / time.Microsecond)
	if err := l.store.Reserve(ctx, &ad.req, &ad.dec); err != nil {
		l.shadowCount(tier, "none", "store_error")
		return
	}
	if i := shadowSpent(ad, worst); i >= 0 {
		l.shadowCount(tier, ad.kinds[i].kind, ShadowReject)
		return
	}
	switch d := &ad.dec; {
	case d.Allowed && d.Wait > 0:
		l.shadowCount(tier, ad.kinds[max(d.Limiting, 0)].kind, ShadowQueue)
	case d.Allowed:
		l.shadowCount(tier, "none", ShadowAdmit)
	default:
		kind := "none"
		if d.Limiting >= 0 && d.Limiting < len(ad.kinds) {
			kind = ad.kinds[d.Limiting].kind
		}
		l.shadowCount(tier, kind, ShadowReject)
	}
}

// shadowCount counts one shadow decision; children are cached like the
// real decisions'.
func (l *Limiter) shadowCount(tier, lim, outcome string) {
	// The key is built on the stack (a leading 1 keeps it apart from the
	// real decisions' keys); only a first sighting allocates.
	var buf [96]byte
	key := append(append(append(append(append(append(buf[:0], 1), tier...), 0), lim...), 0), outcome...)
	if c, ok := l.counters.Load(string(key)); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	l.tierMu.Lock()
	c := l.shadowDecisions.WithLabelValues(tier, lim, outcome)
	l.counters.Store(string(key), c)
	l.tierMu.Unlock()
	c.Inc()
}

// shadowKeysFor returns the shadow bucket keys of a user scope, cached like
// keysFor's so a known user's shadow check builds no string.
func (l *Limiter) shadowKeysFor(scope string) *bucketKeys {
	if k, ok := l.shadowKeys.Load(scope); ok {
		return k.(*bucketKeys)
	}
	base := shadowScope + scope
	k := &bucketKeys{rpm: base + ":rpm", tpm: base + ":tpm", tpd: base + ":tpd"}
	if l.shadowN.Add(1) > maxCachedScopes {
		l.shadowKeys.Clear()
		l.shadowN.Store(1)
	}
	l.shadowKeys.Store(scope, k)
	return k
}

// shadowSpent returns the index of the first shadow budget whose cap has
// less left than worst (µUSD), or -1.
func shadowSpent(ad *Admission, worst int64) int {
	for i, k := range ad.kinds {
		if k.usd && k.limit > 0 && i < len(ad.dec.Remaining) && ad.dec.Remaining[i] >= 0 &&
			min(ad.dec.Remaining[i], k.limit) < worst {
			return i
		}
	}
	return -1
}
