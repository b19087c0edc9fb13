package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestUsedTokens: usage is counted by direction, tier and model group, one
// pair of children per tier and group.
func TestUsedTokens(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	m.usedTokens("free", "gpt-4o*", usage{prompt: 10, completion: 3, ok: true}, 0.25)
	m.usedTokens("free", "gpt-4o*", usage{prompt: 5, completion: 2, ok: true}, 0.5)
	m.usedTokens("pro", "*", usage{prompt: 1, completion: 1, ok: true}, 0)
	for _, c := range []struct {
		dir, tier, group string
		want             float64
	}{{"prompt", "free", "gpt-4o*", 15}, {"completion", "free", "gpt-4o*", 5}, {"prompt", "pro", "*", 1}} {
		if got := testutil.ToFloat64(m.tokens.WithLabelValues(c.dir, c.tier, c.group)); got != c.want {
			t.Errorf("sluice_tokens_total{%s,%s,%s} = %v; want %v", c.dir, c.tier, c.group, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.tokens); n != 4 {
		t.Errorf("%d children; want 4 (two directions × two tier/group pairs)", n)
	}
	if got := testutil.ToFloat64(m.spend.WithLabelValues("free", "gpt-4o*")); got != 0.75 {
		t.Errorf("sluice_spend_usd_total{free,gpt-4o*} = %v; want 0.75", got)
	}
}

// TestForgetTiers: the series of a tier a reload removed are deleted, the
// others kept.
func TestForgetTiers(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	m.usedTokens("free", "gpt-4o*", usage{prompt: 1, completion: 1, ok: true}, 0.5)
	m.usedTokens("gone", "gpt-4o*", usage{prompt: 1, completion: 1, ok: true}, 0.5)
	m.routedRequest("free", "gpt-4o*", "hit", 200)
	m.routedRequest("gone", "gpt-4o*", "hit", 200)
	m.forgetTiers(func(tier string) bool { return tier == "free" })
	if n := testutil.CollectAndCount(m.tokens) + testutil.CollectAndCount(m.spend) + testutil.CollectAndCount(m.routed); n != 4 {
		t.Fatalf("%d children after the reload; want 4 (free's tokens ×2, spend, routed)", n)
	}
	if len(m.tokenPairs) != 1 || len(m.routedBy) != 1 {
		t.Fatalf("cached handles: %d token pairs, %d routed; want 1 and 1", len(m.tokenPairs), len(m.routedBy))
	}
	m.usedTokens("gone", "gpt-4o*", usage{prompt: 1, completion: 1, ok: true}, 0)
	if got := testutil.ToFloat64(m.tokens.WithLabelValues("prompt", "gone", "gpt-4o*")); got != 1 {
		t.Fatalf("a tier added back starts again at %v; want 1", got)
	}
}

func TestRoutedRequest(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	m.routedRequest("free", "gpt-4o*", "hit", 200)
	m.routedRequest("free", "gpt-4o*", "hit", 200)
	m.routedRequest("free", "gpt-4o*", "", 502)
	if got := testutil.ToFloat64(m.routed.WithLabelValues("free", "gpt-4o*", "hit", "2xx")); got != 2 {
		t.Errorf("hits = %v; want 2", got)
	}
	if got := testutil.ToFloat64(m.routed.WithLabelValues("free", "gpt-4o*", "none", "5xx")); got != 1 {
		t.Errorf("uncached 5xx = %v; want 1", got)
	}
	if n := testing.AllocsPerRun(50, func() { m.routedRequest("free", "gpt-4o*", "hit", 200) }); n != 0 && !raceEnabled {
		t.Errorf("routedRequest allocates %v times per call; want 0", n)
	}
}
