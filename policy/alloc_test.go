//go:build !race

package policy

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/policy/limit"
)

// TestLimiterNoAllocs keeps admission and settlement of a known user on the
// in-memory store off the heap: they run on every request, with a closure
// for the exact count (the proxy's) that stays on the caller's stack.
func TestLimiterNoAllocs(t *testing.T) {
	p, k := admitFixture(t, "local")
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: prometheus.NewRegistry()})
	pl := p.Plan(p.Principal(k, ""), k, "gpt-4o")
	pl.User = Limits{RPM: Rate{Limit: 1 << 40}, TPM: Rate{Limit: 1 << 40}, Concurrent: 1 << 20}
	ctx := context.Background()
	n := testing.AllocsPerRun(200, func() {
		tokens := int64(500)
		ad := l.AdmitCounting(ctx, p, &Ask{Plan: pl, RequestID: "r", Tokens: tokens}, func() int64 { return tokens - 1 })
		if ad.Outcome != Admitted {
			t.Fatalf("outcome %d", ad.Outcome)
		}
		l.Finish(ctx, ad, 300, 0)
	})
	if n != 0 {
		t.Fatalf("admission allocates %v times per request; want 0", n)
	}
}

// TestShadowNoAllocs: a tier's shadow limits add no allocation for a known
// user.
func TestShadowNoAllocs(t *testing.T) {
	p, k := admitFixture(t, "local")
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: prometheus.NewRegistry()})
	pl := p.Plan(p.Principal(k, ""), k, "gpt-4o")
	pl.Shadow = Limits{RPM: Rate{Limit: 1 << 40}, TPM: Rate{Limit: 1 << 40}}
	pl.User = Limits{RPM: Rate{Limit: 1 << 40}}
	ask := &Ask{Plan: pl, RequestID: "r", Tokens: 500}
	ctx := context.Background()
	n := testing.AllocsPerRun(200, func() {
		l.Finish(ctx, l.Admit(ctx, p, ask), 300, 0)
	})
	if n != 0 {
		t.Fatalf("admission with shadow limits allocates %v times per request; want 0", n)
	}
}

// TestBudgetNoAllocs: spend budgets and spend counting (user, key and team
// counters for the day and the month) add no allocation for a known user.
func TestBudgetNoAllocs(t *testing.T) {
	p, ka, _ := budgetFixture(t, budgetPolicy)
	l, _ := budgetLimiter(t)
	pl := p.Plan(p.Principal(ka, ""), ka, "gpt-4o-mini")
	price, _ := p.Prices.Lookup("gpt-4o-mini")
	ctx := context.Background()
	n := testing.AllocsPerRun(200, func() {
		ad := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r", Tokens: 1, Price: price})
		if ad.Outcome != Admitted || !ad.Spend.Valid {
			t.Fatalf("outcome %d spend %+v", ad.Outcome, ad.Spend)
		}
		l.Finish(ctx, ad, 0, 0)
	})
	if n != 0 {
		t.Fatalf("admission under budgets allocates %v times per request; want 0", n)
	}
}

// TestPlanNoAllocs: the plan of a key's own user reuses the scopes built at
// compile time.
func TestPlanNoAllocs(t *testing.T) {
	p, ka, _ := budgetFixture(t, budgetPolicy)
	pr := p.Principal(ka, "")
	var pl Plan
	if n := testing.AllocsPerRun(100, func() { pl = p.Plan(pr, ka, "gpt-4o-mini") }); n != 0 {
		t.Fatalf("a plan allocates %v times; want 0", n)
	}
	if pl.UserScope != "{research}u:alice" || pl.AppScope != "{research}k:ka" || pl.TeamScope != "{research}t:research" {
		t.Fatalf("scopes %q %q %q", pl.UserScope, pl.AppScope, pl.TeamScope)
	}
}
