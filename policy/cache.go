package policy

import (
	"fmt"
	"time"

	"sluice/internal/yamlfile"
)

// Cache modes of a tier.
const (
	// CacheOff: the tier's requests never use the cache.
	CacheOff = "off"
	// CacheDeterministic: only requests whose answer should repeat (a
	// temperature of 0 or a seed) and embeddings. The default.
	CacheDeterministic = "deterministic"
	// CacheAll: every chat, completions and embeddings request.
	CacheAll = "all"
)

// DefaultCacheTTL is how long an answer is kept when neither the tier nor
// sluice.yaml sets a TTL.
const DefaultCacheTTL = time.Hour

// CacheRule is a tier's compiled cache settings.
type CacheRule struct {
	// Mode is CacheOff, CacheDeterministic or CacheAll.
	Mode string
	// TTL is how long the tier's answers are kept; 0 means sluice.yaml's
	// cache.ttl. A request's X-Sluice-Cache-TTL may only shorten it.
	TTL time.Duration
	// HitsCountTokens makes answers from the cache count against the user's
	// token budgets like provider answers. Default false: a hit counts
	// against request budgets (rpm, concurrent) only.
	HitsCountTokens bool
}

// compileCache checks and compiles a tier's cache fields.
func compileCache(path string, ts *TierSpec, add func(path, format string, args ...any)) CacheRule {
	r := CacheRule{Mode: ts.Cache, TTL: ts.CacheTTL, HitsCountTokens: ts.CacheHitsCountTokens}
	switch r.Mode {
	case "":
		r.Mode = CacheDeterministic
	case CacheOff, CacheDeterministic, CacheAll:
	default:
		add(path+"cache", "must be off, deterministic or all, not %s", yamlfile.ShowValue(r.Mode))
	}
	if r.TTL < 0 {
		add(path+"cache_ttl", "must not be negative")
	}
	return r
}

// checkNamespaces validates a key's cache_namespaces.
func checkNamespaces(path string, names []string, add func(path, format string, args ...any)) {
	seen := map[string]bool{}
	for i, n := range names {
		p := fmt.Sprintf("%s.cache_namespaces[%d]", path, i)
		switch {
		case n == "" || len(n) > 128:
			add(p, "a namespace name is 1 to 128 bytes")
		case seen[n]:
			add(p, "duplicate namespace %q", n)
		}
		for _, c := range []byte(n) {
			if c <= ' ' || c == 0x7f {
				add(p, "a namespace name has no spaces or control characters")
				break
			}
		}
		seen[n] = true
	}
}

// CacheRule returns the cache settings of the tier p acts in; a principal
// with an unknown tier gets the defaults.
func (pol *Policy) CacheRule(p Principal) CacheRule {
	if t, ok := pol.Tiers[p.Tier]; ok {
		return t.Cache
	}
	return CacheRule{Mode: CacheDeterministic}
}

// CacheNamespace returns the namespace a request of p with key k uses: the
// team's own when asked is empty, else asked when k lists it in
// cache_namespaces (or it names k's own team). ok is false when k may not
// use asked. An end user a trusted key names has, by default, a namespace
// of its own within the team's: one end user's hits and coalesced calls
// would tell another what the first asked, and a hanging call would stall
// the other's identical one. keys[].shared_cache, or the app naming its
// team's namespace per request, shares them.
func (k *Key) CacheNamespace(asked string, p Principal) (ns string, ok bool) {
	if asked == "" && p.EndUser && !k.SharedCache {
		return "team:" + k.Team + "/end_user:" + EscapeKeyPart(p.User), true
	}
	if asked == "" || asked == k.Team {
		return "team:" + k.Team, true
	}
	for _, n := range k.CacheNamespaces {
		if n == asked {
			return "shared:" + n, true
		}
	}
	return "", false
}
