package policy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/policy/limit"
)

const admitPolicy = `
on_store_error: %s
replicas: 2
tiers:
  free:
    rpm: {limit: 60, burst: 4}
    tpm: {limit: 6000, burst: 1000}
    concurrent: 1
keys:
  - id: k
    sha256: 0000000000000000000000000000000000000000000000000000000000000001
    user: alice
    tier: free
`

func admitFixture(t testing.TB, mode string) (*Policy, *Key) {
	t.Helper()
	p, err := Parse("p.yaml", []byte(fmt.Sprintf(admitPolicy, mode)), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range p.keys {
		return p, k
	}
	t.Fatal("no key")
	return nil, nil
}

func TestLimiterAdmitSettleRelease(t *testing.T) {
	p, k := admitFixture(t, "local")
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: prometheus.NewRegistry()})
	ctx := context.Background()
	pl := p.Plan(p.Principal(k, ""), k, "gpt-4o")

	a1 := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r1", Tokens: 900})
	if a1.Outcome != Admitted || a1.Requests.Limit != 60 || a1.Requests.Remaining != 3 || a1.Tokens.Remaining != 100 {
		t.Fatalf("first request: %+v", a1)
	}
	// The concurrency slot is taken: a second request waits for it.
	a2 := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r2", Tokens: 10})
	if a2.Outcome != Rejected || a2.Limit != LimitConcurrent || a2.Scope != "user" {
		t.Fatalf("second request while the first runs: %+v", a2)
	}
	l.Finish(ctx, a2, -1, 0)
	// The answer used 100 tokens: 800 are refunded, and the slot is freed.
	l.Finish(ctx, a1, 100, 0)
	a3 := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r3", Tokens: 850})
	if a3.Outcome != Admitted {
		t.Fatalf("after the refund 850 tokens must fit: %+v", a3)
	}
	l.Finish(ctx, a3, 850, 0)
	// A request larger than the token burst can never fit.
	a4 := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r4", Tokens: 5000})
	if a4.Outcome != NeverFits || a4.Limit != LimitTPM {
		t.Fatalf("oversized request: %+v", a4)
	}
	l.Finish(ctx, a4, -1, 0)
	// The estimate is rejected by tpm, the exact count fits.
	exactCalled := false
	a5 := l.AdmitCounting(ctx, p, &Ask{Plan: pl, RequestID: "r5", Tokens: 900}, func() int64 { exactCalled = true; return 50 })
	if !exactCalled || a5.Outcome != Admitted || a5.Reserved != 50 {
		t.Fatalf("exact recount: called %v, %+v", exactCalled, a5)
	}
	l.Finish(ctx, a5, 50, 0)
	// rpm burst 4 is used up by r1, r3, r5 and r6: the next is rejected
	// with a wait under a second per request (60/min).
	a6 := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r6", Tokens: 0})
	l.Finish(ctx, a6, 0, 0)
	a6 = l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r7", Tokens: 0})
	if a6.Outcome != Rejected || a6.Limit != LimitRPM || a6.RetryAfter <= 0 || a6.RetryAfter > 2*time.Second {
		t.Fatalf("rpm: %+v", a6)
	}
	l.Finish(ctx, a6, -1, 0)
	// Decisions carry whose limit decided: the user's here.
	for _, c := range []struct {
		limit, scope, outcome string
		want                  float64
	}{{"rpm", "user", "rejected", 1}, {"concurrent", "user", "rejected", 1}, {"tpm", "user", "never", 1}, {"none", "none", "admitted", 4}} {
		if got := testutil.ToFloat64(l.decisions.WithLabelValues("free", c.limit, c.scope, c.outcome)); got != c.want {
			t.Errorf("sluice_limiter_decisions_total{tier=free,limit=%s,scope=%s,outcome=%s} = %v; want %v", c.limit, c.scope, c.outcome, got, c.want)
		}
	}
}

type failingStore struct{ limit.Store }

func (failingStore) Reserve(context.Context, *limit.Request, *limit.Decision) error {
	return errors.New("redis: connection refused")
}

func TestLimiterStoreErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		mode string
		want Outcome
	}{{"allow", Admitted}, {"deny", Unavailable}, {"local", Admitted}} {
		p, k := admitFixture(t, tc.mode)
		l := NewLimiter(LimiterOptions{Store: failingStore{}, Shared: true, Registry: prometheus.NewRegistry()})
		pl := p.Plan(p.Principal(k, ""), k, "gpt-4o")
		a := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r1", Tokens: 10})
		if a.Outcome != tc.want {
			t.Fatalf("%s: outcome %d; want %d", tc.mode, a.Outcome, tc.want)
		}
		l.Finish(ctx, a, 10, 0)
		if tc.mode == "local" {
			// Local buckets hold rpm burst 4 / 2 replicas = 2: the third is rejected.
			b := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r2", Tokens: 10})
			bOutcome := b.Outcome
			l.Finish(ctx, b, 10, 0)
			c := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: "r3", Tokens: 10})
			if bOutcome != Admitted || c.Outcome != Rejected || c.Limit != LimitRPM {
				t.Fatalf("local fallback must enforce divided limits: %+v", c)
			}
			l.Finish(ctx, c, -1, 0)
		}
		if testutil.ToFloat64(l.storeErrors) < 1 {
			t.Fatalf("%s: store errors not counted", tc.mode)
		}
		l.Close()
	}
}

func admitFixtureTB(tb testing.TB) (*Policy, *Key) { return admitFixture(tb, "local") }

// TestAdmitClampsTokens: a reservation that wrapped negative (or is absurdly
// large) fails closed: it never fits a token budget, and is no store error
// that on_store_error: allow would wave through.
func TestAdmitClampsTokens(t *testing.T) {
	p, k := admitFixture(t, "allow")
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	reg := prometheus.NewRegistry()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: reg})
	ctx := context.Background()
	pl := p.Plan(p.Principal(k, ""), k, "gpt-4o")
	for i, tokens := range []int64{-4611686018427387904, 1 << 62, -1} {
		a := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: fmt.Sprint("r", i), Tokens: tokens})
		if a.Outcome != NeverFits || a.Limit != LimitTPM {
			t.Fatalf("tokens %d: outcome %v limit %q, want never fits on tpm", tokens, a.Outcome, a.Limit)
		}
		l.Finish(ctx, a, -1, 0)
	}
	if n := testutil.ToFloat64(l.storeErrors); n != 0 {
		t.Fatalf("store errors = %v, want 0", n)
	}
}

// TestDecisionScopes: a rejection is counted with whose limit decided it: a
// per-model limit (scope model), an app key's shared limit (scope app).
func TestDecisionScopes(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`
tiers:
  free:
    rpm: {limit: 100, burst: 100}
    models:
      "gpt-4o*": {rpm: {limit: 1, burst: 1}}
keys:
  - id: alice
    sha256: `+HashKey("sk-alice")+`
    user: alice
    tier: free
  - id: app
    sha256: `+HashKey("sk-app")+`
    trusted: true
    tier: free
    app_limits: {rpm: {limit: 2, burst: 2}}
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: prometheus.NewRegistry()})
	ctx := context.Background()
	alice, _ := p.Identify([]byte("sk-alice"))
	app, _ := p.Identify([]byte("sk-app"))
	ask := func(k *Key, user, model, id string) *Admission {
		a := l.Admit(ctx, p, &Ask{Plan: p.Plan(p.Principal(k, user), k, model), RequestID: id})
		l.Finish(ctx, a, -1, 0)
		return a
	}
	ask(alice, "", "gpt-4o", "a1")
	if a := ask(alice, "", "gpt-4o", "a2"); a.Outcome != Rejected || a.Scope != "model" {
		t.Fatalf("second gpt-4o call: %+v; want rejected by the model limit", a)
	}
	ask(app, "bob", "o1", "b1")
	ask(app, "carol", "o1", "c1")
	if a := ask(app, "dave", "o1", "d1"); a.Outcome != Rejected || a.Scope != "app" {
		t.Fatalf("third app call: %+v; want rejected by the app limit", a)
	}
	for _, c := range []struct{ scope, outcome string }{{"model", "rejected"}, {"app", "rejected"}} {
		if got := testutil.ToFloat64(l.decisions.WithLabelValues("free", "rpm", c.scope, c.outcome)); got != 1 {
			t.Errorf("sluice_limiter_decisions_total{limit=rpm,scope=%s,outcome=%s} = %v; want 1", c.scope, c.outcome, got)
		}
	}
	if got := testutil.ToFloat64(l.decisions.WithLabelValues("free", "none", "none", "admitted")); got != 3 {
		t.Errorf("admitted = %v; want 3", got)
	}
}
