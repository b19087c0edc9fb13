package policy

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/internal/testkit"
	"sluice/policy/limit"
)

// budgetPolicy prices gpt-4o-mini at 1 µUSD per input token and 2 per
// output token, so costs are easy to count by hand.
const budgetPolicy = `
prices:
  gpt-4o-mini: {input: 1, output: 2}
tiers:
  free:
    budget: {daily_usd: 0.01, monthly_usd: 1}
    shadow: {budget: {daily_usd: 0.004}}
teams:
  research: {budget: {daily_usd: 0.02}}
keys:
  - {id: ka, sha256: "` + "%s" + `", user: alice, team: research, tier: free}
  - {id: kb, sha256: "` + "%s" + `", user: bob, team: research, tier: free, app_limits: {budget: {monthly_usd: 0.5}}}
`

func budgetFixture(t testing.TB, src string) (*Policy, *Key, *Key) {
	t.Helper()
	p, err := Parse("p.yaml", []byte(strings.Replace(strings.Replace(src, "%s", HashKey("a"), 1), "%s", HashKey("b"), 1)), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	ka, _ := p.KeyByID("ka")
	kb, _ := p.KeyByID("kb")
	return p, ka, kb
}

func budgetLimiter(t testing.TB) (*Limiter, *prometheus.Registry) {
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	t.Cleanup(mem.Close)
	reg := prometheus.NewRegistry()
	return NewLimiter(LimiterOptions{Store: mem, Registry: reg}), reg
}

// TestBudgetReserveSettle: a request reserves its worst case (1000 prompt
// tokens at 1 µUSD, 2000 completion at 2 = 5000 µUSD) of the user's daily
// $0.01; the third finds the budget spent and is rejected until midnight
// UTC; settling the first at its real cost makes room again.
func TestBudgetReserveSettle(t *testing.T) {
	p, ka, _ := budgetFixture(t, budgetPolicy)
	l, reg := budgetLimiter(t)
	ctx := context.Background()
	pl := p.Plan(p.Principal(ka, ""), ka, "gpt-4o-mini")
	price, _ := p.Prices.Lookup("gpt-4o-mini")
	ask := func(id string) *Ask {
		return &Ask{Plan: pl, RequestID: id, Tokens: 3000, Completion: 2000, Price: price}
	}
	a1 := l.Admit(ctx, p, ask("r1"))
	if a1.Outcome != Admitted || a1.Worst != 5000 || !a1.Spend.Valid || a1.Spend.Limit != LimitBudgetDaily || a1.Spend.Left != 5000 {
		t.Fatalf("first request: outcome %d worst %d spend %+v", a1.Outcome, a1.Worst, a1.Spend)
	}
	a2 := l.Admit(ctx, p, ask("r2"))
	if a2.Outcome != Admitted || a2.Spend.Left != 0 {
		t.Fatalf("second request: outcome %d spend %+v", a2.Outcome, a2.Spend)
	}
	a3 := l.Admit(ctx, p, ask("r3"))
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if a3.Outcome != Rejected || a3.Limit != LimitBudgetDaily || a3.Scope != "user" || a3.LimitValue != 10000 ||
		a3.Spend.Left != 0 || (a3.RetryAfter-time.Until(midnight)).Abs() > time.Second {
		t.Fatalf("third request on a spent budget: %+v (midnight in %v)", a3, time.Until(midnight))
	}
	l.Finish(ctx, a3, -1, 0)
	// r1 used 400 prompt + 300 completion tokens: 1000 µUSD of its 5000.
	l.Finish(ctx, a1, 700, 0.001)
	if a := l.Admit(ctx, p, ask("r4")); a.Outcome != Rejected {
		t.Fatalf("5000 more with 4000 left: %+v", a)
	} else {
		l.Finish(ctx, a, -1, 0)
	}
	a5 := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r5", Tokens: 2000, Completion: 1000, Price: price})
	if a5.Outcome != Admitted || a5.Worst != 3000 || a5.Spend.Left != 1000 {
		t.Fatalf("3000 with 4000 left: outcome %d spend %+v", a5.Outcome, a5.Spend)
	}
	l.Finish(ctx, a2, -1, 0) // usage unknown: the worst case is the cost
	l.Finish(ctx, a5, 2000, 0.003)

	u, err := l.Usage(ctx, &pl)
	if err != nil {
		t.Fatal(err)
	}
	spent := map[string]float64{}
	for _, b := range u {
		if b.Limit == LimitBudgetDaily || b.Limit == LimitBudgetMonthly {
			spent[b.Scope+" "+b.Limit] = b.SpentUSD
		}
	}
	// 1000 + 5000 + 3000 µUSD, for the user, the key (no cap) and the team alike
	for _, k := range []string{"user budget_daily", "user budget_monthly", "app budget_daily", "team budget_daily", "team budget_monthly"} {
		if spent[k] != 0.009 {
			t.Errorf("%s spent %v, want 0.009 (%v)", k, spent[k], spent)
		}
	}
	m, err := testkit.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Value("sluice_limiter_decisions_total", `limit="budget_daily"`, `outcome="rejected"`); n != 2 {
		t.Errorf("budget rejections counted %v, want 2", n)
	}
	if n, _ := m.Value("sluice_budget_used_ratio", `tier="free"`, `window="day"`); n != 3 {
		t.Errorf("budget use observed %v times, want 3", n)
	}
}

// TestBudgetTeamAndKey: a team's budget is shared by its users across
// keys, and a key's app budget by the key's users; the rejection names
// whose budget is spent.
func TestBudgetTeamAndKey(t *testing.T) {
	p, ka, kb := budgetFixture(t, budgetPolicy)
	l, _ := budgetLimiter(t)
	ctx := context.Background()
	price, _ := p.Prices.Lookup("gpt-4o-mini")
	admit := func(k *Key, completion int64) *Admission {
		pl := p.Plan(p.Principal(k, ""), k, "gpt-4o-mini")
		return l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r", Tokens: completion, Completion: completion, Price: price})
	}
	// alice spends 8000 µUSD of the team's 20000 (and of her own 10000)
	a := admit(ka, 4000)
	if a.Outcome != Admitted {
		t.Fatalf("alice: %+v", a)
	}
	l.Finish(ctx, a, 4000, 0.008)
	// bob: 4500 each, his own 10000 allows two; the team's 12000 left allows two
	for range 2 {
		b := admit(kb, 2250)
		if b.Outcome != Admitted {
			t.Fatalf("bob: %+v", b)
		}
		l.Finish(ctx, b, 2250, 0.0045)
	}
	// the team has 3000 left, bob 1000: bob's own budget is the tighter
	b := admit(kb, 1000)
	if b.Outcome != Rejected || b.Scope != "user" {
		t.Fatalf("bob's third: outcome %d limit %s scope %s", b.Outcome, b.Limit, b.Scope)
	}
	l.Finish(ctx, b, -1, 0)
	// alice has 2000 of her own left, the team 3000: 2500 fits hers? no
	a = admit(ka, 1250)
	if a.Outcome != Rejected || a.Scope != "user" {
		t.Fatalf("alice's 2500 with 2000 left: outcome %d scope %s", a.Outcome, a.Scope)
	}
	l.Finish(ctx, a, -1, 0)
	a = admit(ka, 1000) // 2000 fits alice's 2000 and the team's 3000
	if a.Outcome != Admitted {
		t.Fatalf("alice's 2000: %+v", a)
	}
	l.Finish(ctx, a, 1000, 0.002)
	b = admit(kb, 600) // 1200 > the team's 1000 left; bob has 1000 too: both deny, the first listed wins
	if b.Outcome != Rejected || b.Limit != LimitBudgetDaily {
		t.Fatalf("bob after the team is nearly spent: %+v", b)
	}
	l.Finish(ctx, b, -1, 0)
	// a request that could cost more than a whole budget never fits
	a = admit(ka, 6000)
	if a.Outcome != NeverFits || a.Limit != LimitBudgetDaily {
		t.Fatalf("a 12000 µUSD request against a 10000 budget: outcome %d limit %s", a.Outcome, a.Limit)
	}
	l.Finish(ctx, a, -1, 0)
}

// TestBudgetShadow: a shadow budget reads the user's real spend and counts
// would_reject once the request's worst case no longer fits its cap; the
// request itself goes on.
func TestBudgetShadow(t *testing.T) {
	p, ka, _ := budgetFixture(t, budgetPolicy)
	l, reg := budgetLimiter(t)
	ctx := context.Background()
	price, _ := p.Prices.Lookup("gpt-4o-mini")
	pl := p.Plan(p.Principal(ka, ""), ka, "gpt-4o-mini")
	for i := range 3 { // 1500 µUSD each against a shadow cap of 4000
		a := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r", Tokens: 1500, Price: price})
		if a.Outcome != Admitted {
			t.Fatalf("request %d: %+v", i, a)
		}
		l.Finish(ctx, a, 1500, 0.0015)
	}
	m, err := testkit.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Value("sluice_shadow_decisions_total", `tier="free"`, `limit="budget_daily"`, `outcome="would_reject"`); n != 1 {
		t.Fatalf("shadow budget would_reject %v times, want 1 (the third: 3000 spent + 1500 > 4000)", n)
	}
}

// TestBudgetWindows: days and months are calendar windows in the policy's
// zone, DST included.
func TestBudgetWindows(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// 2026-03-29 is the spring-forward day in Paris: 23 hours long.
	w := windowAt(time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC), paris)
	if w.day != "20260329" || w.month != "202603" || time.Duration(w.dayEnd-w.dayStart)*time.Microsecond != 23*time.Hour {
		t.Fatalf("spring-forward day: %+v", w)
	}
	if end := time.UnixMicro(w.monthEnd).UTC(); !end.Equal(time.Date(2026, 3, 31, 22, 0, 0, 0, time.UTC)) {
		t.Fatalf("March in Paris ends at %v UTC, want 2026-03-31 22:00", end)
	}
	// 23:30 UTC on Dec 31 is already the next day and year in Paris.
	w = windowAt(time.Date(2026, 12, 31, 23, 30, 0, 0, time.UTC), paris)
	if w.day != "20270101" || w.month != "202701" {
		t.Fatalf("new year in Paris: %+v", w)
	}
}

// TestBudgetConfig: budgets are checked at load, need prices, and show in
// the diff.
func TestBudgetConfig(t *testing.T) {
	for name, c := range map[string]struct{ src, want string }{
		"no prices":     {strings.Replace(budgetPolicy, "prices:\n  gpt-4o-mini: {input: 1, output: 2}\n", "", 1), "budget needs prices"},
		"negative":      {strings.Replace(budgetPolicy, "daily_usd: 0.01", "daily_usd: -1", 1), "tiers.free.budget.daily_usd"},
		"bad zone":      {budgetPolicy + "budget_timezone: Mars/Olympus\n", "unknown time zone"},
		"team negative": {strings.Replace(budgetPolicy, "daily_usd: 0.02", "daily_usd: -2", 1), "teams.research.budget.daily_usd"},
	} {
		_, err := Parse("p.yaml", []byte(strings.Replace(strings.Replace(c.src, "%s", HashKey("a"), 1), "%s", HashKey("b"), 1)), env(nil))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, c.want)
		}
	}
	old, _, _ := budgetFixture(t, budgetPolicy)
	neu, _, _ := budgetFixture(t, strings.Replace(strings.Replace(budgetPolicy, "daily_usd: 0.02", "daily_usd: 0.05", 1),
		"monthly_usd: 1}", "monthly_usd: 2}", 1)+"budget_timezone: Europe/Paris\n")
	d := Diff(old, neu)
	for _, want := range []string{
		"~ tier free budget: daily $0.01, monthly $1 -> daily $0.01, monthly $2",
		"~ team research budget: daily $0.02, monthly - -> daily $0.05, monthly -",
		"~ budget_timezone: UTC -> Europe/Paris",
	} {
		if !slices.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, strings.Join(d, "\n"))
		}
	}
}

// TestTeamLimits: a team's rate limits are shared by the users of all its
// keys, and a rejection names the team.
func TestTeamLimits(t *testing.T) {
	src := strings.Replace(budgetPolicy, "research: {budget: {daily_usd: 0.02}}", "research: {rpm: 3}", 1)
	p, ka, kb := budgetFixture(t, src)
	l, _ := budgetLimiter(t)
	ctx := context.Background()
	for i, k := range []*Key{ka, kb, ka, kb} {
		pl := p.Plan(p.Principal(k, ""), k, "gpt-4o-mini")
		a := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r"})
		want := Admitted
		if i == 3 {
			want = Rejected
		}
		if a.Outcome != want || (want == Rejected && (a.Scope != "team" || a.Limit != LimitRPM)) {
			t.Fatalf("request %d by %s: outcome %d limit %s scope %s", i, k.ID, a.Outcome, a.Limit, a.Scope)
		}
		l.Finish(ctx, a, 0, 0)
	}
}
