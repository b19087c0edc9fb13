package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// String formats a rate as the YAML would: "60" or "60 (burst 10)"; "-"
// for no limit.
func (r Rate) String() string {
	switch {
	case r.Limit == 0:
		return "-"
	case r.Burst == 0 || r.Burst == r.Limit:
		return fmt.Sprint(r.Limit)
	}
	return fmt.Sprintf("%d (burst %d)", r.Limit, r.Burst)
}

// limitChanges appends one line per limit that differs between a and b.
func limitChanges(out []string, where string, a, b Limits) []string {
	for _, f := range []struct {
		name string
		a, b Rate
	}{{"rpm", a.RPM, b.RPM}, {"tpm", a.TPM, b.TPM}, {"tpd", a.TPD, b.TPD}} {
		if f.a != f.b {
			out = append(out, fmt.Sprintf("~ %s %s: %s -> %s", where, f.name, f.a, f.b))
		}
	}
	if a.Concurrent != b.Concurrent {
		c := func(n int64) string {
			if n == 0 {
				return "-"
			}
			return fmt.Sprint(n)
		}
		out = append(out, fmt.Sprintf("~ %s concurrent: %s -> %s", where, c(a.Concurrent), c(b.Concurrent)))
	}
	if a.Budget != b.Budget {
		out = append(out, fmt.Sprintf("~ %s budget: %s -> %s", where, a.Budget, b.Budget))
	}
	return out
}

func field[T comparable](out []string, where, name string, a, b T) []string {
	if a != b {
		out = append(out, fmt.Sprintf("~ %s %s: %v -> %v", where, name, a, b))
	}
	return out
}

// Diff lists the effective changes from old to new, one line each, sorted
// by section: "+" added, "-" removed, "~" changed. Defaults are applied
// first, so spelling out a default is no change. Keys are compared by id
// (a changed secret shows as "~ key ID: secret changed"). The last section
// lists, for each key kept, how its own user's limits changed once tier,
// key and user overrides are applied.
func Diff(old, new *Policy) []string {
	var out []string
	for _, name := range union(old.Tiers, new.Tiers) {
		a, b := old.Tiers[name], new.Tiers[name]
		where := "tier " + name
		switch {
		case a == nil:
			out = append(out, fmt.Sprintf("+ %s: %s", where, limitsText(b.Limits)))
			continue
		case b == nil:
			out = append(out, "- "+where)
			continue
		}
		out = limitChanges(out, where, a.Limits, b.Limits)
		am, bm := modelMap(a.Models), modelMap(b.Models)
		for _, pat := range union(am, bm) {
			mw := where + " model " + pat
			switch x, ok := am[pat]; {
			case !ok:
				out = append(out, fmt.Sprintf("+ %s: %s", mw, limitsText(bm[pat])))
			case !hasKey(bm, pat):
				out = append(out, "- "+mw)
			default:
				out = limitChanges(out, mw, x, bm[pat])
			}
		}
		out = field(out, where, "default_max_tokens", a.DefaultMaxTokens, b.DefaultMaxTokens)
		out = field(out, where, "max_wait", a.Queue.MaxWait, b.Queue.MaxWait)
		out = field(out, where, "max_queue", a.Queue.MaxQueue, b.Queue.MaxQueue)
		out = field(out, where, "weight", a.Queue.Weight, b.Queue.Weight)
		out = field(out, where, "priority", a.Queue.Priority, b.Queue.Priority)
		out = field(out, where, "cache", a.Cache.Mode, b.Cache.Mode)
		out = field(out, where, "cache_ttl", a.Cache.TTL, b.Cache.TTL)
		out = field(out, where, "cache_hits_count_tokens", a.Cache.HitsCountTokens, b.Cache.HitsCountTokens)
		out = shadowChanges(out, where, a, b)
	}
	ak, bk := keysByID(old), keysByID(new)
	for _, id := range union(ak, bk) {
		a, b := ak[id], bk[id]
		where := "key " + id
		switch {
		case a == nil:
			out = append(out, fmt.Sprintf("+ %s: user %s, tier %s", where, b.key.User, b.key.Tier))
			continue
		case b == nil:
			out = append(out, "- "+where)
			continue
		}
		if a.sum != b.sum {
			out = append(out, "~ "+where+": secret changed")
		}
		out = field(out, where, "user", a.key.User, b.key.User)
		out = field(out, where, "team", a.key.Team, b.key.Team)
		out = field(out, where, "tier", a.key.Tier, b.key.Tier)
		out = field(out, where, "trusted", a.key.Trusted, b.key.Trusted)
		out = field(out, where, "user_tier", a.key.UserTier, b.key.UserTier)
		out = limitChanges(out, where+" limits", a.key.Limits, b.key.Limits)
		out = limitChanges(out, where+" app_limits", a.key.AppLimits, b.key.AppLimits)
		out = limitChanges(out, where+" shadow", a.key.Shadow, b.key.Shadow)
		out = field(out, where, "cache_namespaces", strings.Join(a.key.CacheNamespaces, ","), strings.Join(b.key.CacheNamespaces, ","))
		out = field(out, where, "shared_cache", a.key.SharedCache, b.key.SharedCache)
		out = field(out, where, "project", a.key.Project, b.key.Project)
		out = field(out, where, "stored_objects", a.key.StoredObjects, b.key.StoredObjects)
		out = field(out, where, "endpoints", strings.Join(a.key.Endpoints, ","), strings.Join(b.key.Endpoints, ","))
		out = field(out, where, "models", strings.Join(a.key.Models, ","), strings.Join(b.key.Models, ","))
	}
	for _, name := range union(old.teams, new.teams) {
		a, inA := old.teams[name]
		b, inB := new.teams[name]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("+ team %s: %s", name, limitsText(b)))
		case !inB:
			out = append(out, "- team "+name)
		default:
			out = limitChanges(out, "team "+name, a, b)
		}
	}
	if old.Zone != nil && new.Zone != nil && old.Zone.String() != new.Zone.String() {
		out = append(out, fmt.Sprintf("~ budget_timezone: %s -> %s", old.Zone, new.Zone))
	}
	out = userChanges(out, "user ", old.users, new.users)
	for _, id := range union(ak, bk) {
		if a, b := ak[id], bk[id]; a != nil && b != nil {
			out = userChanges(out, "key "+id+" end user ", a.key.EndUsers, b.key.EndUsers)
		}
	}
	// What each key's own user ends up with, tier and overrides applied: a
	// tier change shows here once per user it reaches.
	for _, id := range union(ak, bk) {
		a, b := ak[id], bk[id]
		if a == nil || b == nil {
			continue
		}
		pa, pb := old.Principal(a.key, ""), new.Principal(b.key, "")
		la, lb := old.Plan(pa, a.key, ""), new.Plan(pb, b.key, "")
		where := fmt.Sprintf("effective user %s (key %s)", pb.User, id)
		out = field(out, where, "tier", pa.Tier, pb.Tier)
		out = limitChanges(out, where, la.User, lb.User)
		out = limitChanges(out, where+" shadow", la.Shadow, lb.Shadow)
	}
	out = field(out, "policy", "on_store_error", old.OnStoreError, new.OnStoreError)
	out = field(out, "policy", "replicas", old.Replicas, new.Replicas)
	out = append(out, priceChanges(&old.Prices, &new.Prices)...)
	return out
}

// limitsText formats limits on one line: "rpm 60, tpm 40000 (burst 20000)".
func limitsText(l Limits) string {
	var parts []string
	for _, f := range []struct {
		name string
		r    Rate
	}{{"rpm", l.RPM}, {"tpm", l.TPM}, {"tpd", l.TPD}} {
		if f.r.Limit != 0 {
			parts = append(parts, f.name+" "+f.r.String())
		}
	}
	if l.Concurrent != 0 {
		parts = append(parts, fmt.Sprintf("concurrent %d", l.Concurrent))
	}
	if l.Budget != (SpendBudget{}) {
		parts = append(parts, "budget "+l.Budget.String())
	}
	if len(parts) == 0 {
		return "unlimited"
	}
	return strings.Join(parts, ", ")
}

func union[V any](a, b map[string]V) []string {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func hasKey[V any](m map[string]V, k string) bool {
	_, ok := m[k]
	return ok
}

func modelMap(ms []ModelLimits) map[string]Limits {
	m := make(map[string]Limits, len(ms))
	for _, x := range ms {
		m[x.Pattern] = x.Limits
	}
	return m
}

type keyWithSum struct {
	key *Key
	sum [32]byte
}

func keysByID(p *Policy) map[string]*keyWithSum {
	m := make(map[string]*keyWithSum, len(p.keys))
	for sum, k := range p.keys {
		m[k.ID] = &keyWithSum{key: k, sum: sum}
	}
	return m
}

// userChanges appends the changes between two sets of user overrides.
func userChanges(out []string, prefix string, old, new map[string]UserSpec) []string {
	for _, name := range union(old, new) {
		a, aok := old[name]
		b, bok := new[name]
		where := prefix + name
		switch {
		case !aok:
			out = append(out, fmt.Sprintf("+ %s: tier %q, %s", where, b.Tier, limitsText(b.Limits)))
			continue
		case !bok:
			out = append(out, "- "+where)
			continue
		}
		out = field(out, where, "tier", a.Tier, b.Tier)
		out = limitChanges(out, where, a.Limits, b.Limits)
		out = limitChanges(out, where+" shadow", a.Shadow, b.Shadow)
	}
	return out
}

// Lifts lists what changing from old to new would stop limiting, one line
// each: a limit (rpm, tpm, tpd, concurrent) that old sets and new leaves
// unlimited, for a tier or one of its per-model budgets, the effective
// limits of a kept key's own user, of a kept trusted key's end users (in
// general and each end_users entry), of a key's app budget; and
// on_store_error becoming allow. Raising a limit, removing a key and shadow
// limits are not lifts. A reload that lifts is refused unless forced (see
// Reloader): a file cut short in the middle of a key is still valid YAML,
// and would silently lift that key's users to an unlimited tier.
func Lifts(old, new *Policy) []string {
	var out []string
	for _, name := range union(old.Tiers, new.Tiers) {
		a, b := old.Tiers[name], new.Tiers[name]
		if a == nil || b == nil {
			continue // a removed tier limits no one any more: its keys moved or went
		}
		where := "tier " + name
		out = liftedLimits(out, where, a.Limits, b.Limits)
		bm := modelMap(b.Models)
		for _, m := range a.Models {
			out = liftedLimits(out, where+" model "+m.Pattern, m.Limits, bm[m.Pattern])
		}
	}
	ak, bk := keysByID(old), keysByID(new)
	for _, id := range union(ak, bk) {
		a, b := ak[id], bk[id]
		if a == nil || b == nil {
			continue
		}
		where := "key " + id
		pa, pb := old.Plan(old.Principal(a.key, ""), a.key, ""), new.Plan(new.Principal(b.key, ""), b.key, "")
		out = liftedLimits(out, where+" user "+b.key.User, pa.User, pb.User)
		out = liftedLimits(out, where+" app_limits", pa.App, pb.App)
		if !a.key.Trusted || !b.key.Trusted {
			continue
		}
		// anyEndUser is no end_users entry's name: names are free of
		// control characters.
		const anyEndUser = "\x00"
		names := append([]string{anyEndUser}, slices.Sorted(maps.Keys(a.key.EndUsers))...)
		for _, n := range names {
			ea := old.Plan(old.Principal(a.key, n), a.key, "")
			eb := new.Plan(new.Principal(b.key, n), b.key, "")
			w := where + " end user " + n
			if n == anyEndUser {
				w = where + " end users"
			}
			out = liftedLimits(out, w, ea.User, eb.User)
		}
	}
	if old.OnStoreError != StoreErrorAllow && new.OnStoreError == StoreErrorAllow {
		out = append(out, "policy on_store_error: "+old.OnStoreError+" -> allow")
	}
	return out
}

// liftedLimits appends a line per limit a sets and b leaves unlimited.
func liftedLimits(out []string, where string, a, b Limits) []string {
	for _, f := range []struct {
		name string
		a, b Rate
	}{{"rpm", a.RPM, b.RPM}, {"tpm", a.TPM, b.TPM}, {"tpd", a.TPD, b.TPD}} {
		if f.a.Limit > 0 && f.b.Limit == 0 {
			out = append(out, fmt.Sprintf("%s %s: %s -> unlimited", where, f.name, f.a))
		}
	}
	if a.Concurrent > 0 && b.Concurrent == 0 {
		out = append(out, fmt.Sprintf("%s concurrent: %d -> unlimited", where, a.Concurrent))
	}
	return out
}
