package policy

import (
	"strings"
	"testing"
	"time"
)

func TestCachePolicy(t *testing.T) {
	data := `
tiers:
  default: {}
  batch: {cache: all, cache_ttl: 24h, cache_hits_count_tokens: true}
  secret: {cache: "off"}
keys:
  - id: a
    sha256: ` + HashKey("sk-a") + `
    user: alice
    team: red
    tier: batch
    cache_namespaces: [shared-docs]
  - id: b
    sha256: ` + HashKey("sk-b") + `
    user: bob
    team: blue
    tier: default
`
	p, err := Parse("policies.yaml", []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Tiers["default"].Cache; r.Mode != CacheDeterministic || r.TTL != 0 || r.HitsCountTokens {
		t.Errorf("default tier cache = %+v, want deterministic with defaults", r)
	}
	if r := p.Tiers["batch"].Cache; r.Mode != CacheAll || r.TTL != 24*time.Hour || !r.HitsCountTokens {
		t.Errorf("batch tier cache = %+v", r)
	}
	if r := p.CacheRule(Principal{Tier: "secret"}); r.Mode != CacheOff {
		t.Errorf("secret tier cache = %+v, want off", r)
	}
	a, _ := p.Identify([]byte("sk-a"))
	b, _ := p.Identify([]byte("sk-b"))
	for _, c := range []struct {
		k      *Key
		asked  string
		ns     string
		wantOK bool
	}{
		{a, "", "team:red", true},
		{a, "red", "team:red", true},
		{a, "shared-docs", "shared:shared-docs", true},
		{a, "blue", "", false},
		{b, "shared-docs", "", false},
		{b, "", "team:blue", true},
	} {
		ns, ok := c.k.CacheNamespace(c.asked, Principal{User: c.k.User})
		if ns != c.ns || ok != c.wantOK {
			t.Errorf("key %s asks %q: %q, %v; want %q, %v", c.k.ID, c.asked, ns, ok, c.ns, c.wantOK)
		}
	}
	bad := `
tiers:
  t: {cache: sometimes, cache_ttl: -1s}
keys:
  - id: a
    sha256: ` + HashKey("sk-a") + `
    user: a
    tier: t
    cache_namespaces: ["", "x y", dup, dup]
`
	_, err = Parse("policies.yaml", []byte(bad), nil)
	if err == nil {
		t.Fatal("bad cache settings accepted")
	}
	for _, want := range []string{"tiers.t.cache", "cache_ttl", "cache_namespaces[0]", "cache_namespaces[1]", "cache_namespaces[3]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}
