package policy

import (
	"time"

	"sluice/policy/limit"
)

const (
	usPerMinute = int64(time.Minute / time.Microsecond)
	usPerDay    = int64(24 * time.Hour / time.Microsecond)
)

// build fills ad.req with the plan's buckets, leases and spend counters
// (worst: the request's worst-case cost in µUSD), every limit divided by
// div (the replica count in local fallback mode).
func (l *Limiter) build(ad *Admission, pl *Plan, tokens, worst int64, reqID string, div int64) {
	ad.req.LeaseID = reqID
	add := func(scope string, keys *bucketKeys, lim Limits) {
		if lim.IsZero() {
			return
		}
		l.addRate(ad, scope, keys.rpm, LimitRPM, lim.RPM, usPerMinute, 1, div)
		l.addRate(ad, scope, keys.tpm, LimitTPM, lim.TPM, usPerMinute, tokens, div)
		l.addRate(ad, scope, keys.tpd, LimitTPD, lim.TPD, usPerDay, tokens, div)
		if lim.Concurrent > 0 {
			ad.req.Leases = append(ad.req.Leases, limit.Lease{
				Key: keys.conc, Limit: max(lim.Concurrent/div, 1), TTL: int64(l.leaseTTL / time.Microsecond)})
			ad.leases = append(ad.leases, ruleInfo{kind: LimitConcurrent, scope: scope, limit: lim.Concurrent})
		}
	}
	if !pl.User.IsZero() {
		add("user", l.keysFor(pl.UserScope, ""), pl.User)
	}
	if pl.Model != nil {
		add("model", l.keysFor(pl.UserScope, pl.Model.Pattern), pl.Model.Limits)
	}
	if !pl.App.IsZero() {
		add("app", l.keysFor(pl.AppScope, ""), pl.App)
	}
	if !pl.Team.IsZero() {
		add("team", l.keysFor(pl.TeamScope, ""), pl.Team)
	}
	l.buildSpend(ad, pl, worst, div)
}

// bucketKeys are one scope's bucket and lease keys.
type bucketKeys struct{ rpm, tpm, tpd, conc string }

// maxCachedScopes bounds the key cache; past it the cache starts over.
const maxCachedScopes = 100_000

// keysFor returns the keys of a scope (and model pattern), built once per
// scope and cached, so admitting a known user allocates nothing.
func (l *Limiter) keysFor(scope, model string) *bucketKeys {
	var buf [128]byte
	id := append(append(append(buf[:0], scope...), 0), model...)
	if k, ok := l.keys.Load(string(id)); ok {
		return k.(*bucketKeys)
	}
	base := scope
	if model != "" {
		base = scope + ":m:" + model
	}
	k := &bucketKeys{rpm: base + ":rpm", tpm: base + ":tpm", tpd: base + ":tpd", conc: base + ":conc"}
	if l.keysN.Add(1) > maxCachedScopes {
		l.keys.Clear()
		l.keysN.Store(1)
	}
	l.keys.Store(string(id), k)
	return k
}

func (l *Limiter) addRate(ad *Admission, scope, key, kind string, r Rate, period, cost, div int64) {
	if r.Limit <= 0 {
		return
	}
	lim := max(r.Limit/div, 1)
	burst := max(r.burst()/div, 1)
	ad.req.Rules = append(ad.req.Rules, limit.Rule{Key: key, Interval: max(period/lim, 1), Burst: burst, Cost: cost})
	ad.kinds = append(ad.kinds, ruleInfo{kind: kind, scope: scope, limit: r.Limit, token: kind != LimitRPM})
}

// setTokenCosts sets the reservation of the token rules and of the spend
// counters that have a cap.
func (l *Limiter) setTokenCosts(ad *Admission, tokens, worst int64) {
	for i, k := range ad.kinds {
		switch {
		case k.token:
			ad.req.Rules[i].Cost = tokens
		case k.usd && k.limit > 0:
			ad.req.Rules[i].Cost = worst
		}
	}
}
