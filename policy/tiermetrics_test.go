package policy

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/policy/limit"
)

const twoTiers = `
tiers:
  free:
    rpm: {limit: 60}
  pro:
    rpm: {limit: 600}
    shadow: {rpm: {limit: 6000}}
keys:
  - id: a
    sha256: 0000000000000000000000000000000000000000000000000000000000000001
    user: alice
    tier: free
  - id: b
    sha256: 0000000000000000000000000000000000000000000000000000000000000002
    user: bob
    tier: pro
`

const oneTier = `
tiers:
  free:
    rpm: {limit: 60}
keys:
  - id: a
    sha256: 0000000000000000000000000000000000000000000000000000000000000001
    user: alice
    tier: free
`

// tierSeries counts the gathered series of reg labelled tier=name.
func tierSeries(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "tier" && lp.GetValue() == name {
					n++
				}
			}
		}
	}
	return n
}

// TestReloadDropsRemovedTierSeries: after a reload removes a tier, the
// first request under the new policy drops the removed tier's series and
// cached handles; the kept tier's stay.
func TestReloadDropsRemovedTierSeries(t *testing.T) {
	p1, err := Parse("p.yaml", []byte(twoTiers), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	reg := prometheus.NewRegistry()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: reg})
	defer l.Close()
	ctx := context.Background()
	for _, k := range p1.keys {
		pl := p1.Plan(p1.Principal(k, ""), k, "gpt-4o")
		ad := l.Admit(ctx, p1, &Ask{Plan: pl, RequestID: "r-" + k.ID, Tokens: 10})
		l.Finish(ctx, ad, 5, 0)
	}
	if n := tierSeries(t, reg, "pro"); n == 0 {
		t.Fatal("no series of tier pro before the reload: the test sees nothing")
	}
	freeBefore := tierSeries(t, reg, "free")

	p2, err := Parse("p.yaml", []byte(oneTier), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range p2.keys {
		pl := p2.Plan(p2.Principal(k, ""), k, "gpt-4o")
		ad := l.Admit(ctx, p2, &Ask{Plan: pl, RequestID: "r2-" + k.ID, Tokens: 10})
		l.Finish(ctx, ad, 5, 0)
	}
	if n := tierSeries(t, reg, "pro"); n != 0 {
		t.Fatalf("%d series of the removed tier pro left after the reload", n)
	}
	if n := tierSeries(t, reg, "free"); n < freeBefore {
		t.Fatalf("tier free lost series: %d, had %d", n, freeBefore)
	}
	l.counters.Range(func(k, _ any) bool {
		if s := k.(string); len(s) > 4 && (s[:4] == "pro\x00" || s[:5] == "\x01pro\x00") {
			t.Errorf("cached handle %q of the removed tier kept", s)
		}
		return true
	})
	if _, ok := l.tierTok.Load("pro"); ok {
		t.Error("cached token counters of the removed tier kept")
	}
	// A request still running under the old policy does not undo the newer
	// policy's pruning state: an old policy never prunes.
	for _, k := range p1.keys {
		if k.ID != "b" {
			continue
		}
		pl := p1.Plan(p1.Principal(k, ""), k, "gpt-4o")
		ad := l.Admit(ctx, p1, &Ask{Plan: pl, RequestID: "r3", Tokens: 10})
		l.Finish(ctx, ad, 5, 0)
	}
	if l.tierGen.Load() != p2.gen {
		t.Fatalf("an older policy moved the pruning generation to %d, want %d", l.tierGen.Load(), p2.gen)
	}
}
