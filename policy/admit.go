package policy

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/policy/limit"
)

// Outcome is what admission decided.
type Outcome uint8

const (
	// Admitted: the request goes on now.
	Admitted Outcome = iota
	// Rejected: over budget; retry after Admission.RetryAfter.
	Rejected
	// NeverFits: the request alone exceeds a bucket's burst; retrying the
	// same request cannot succeed.
	NeverFits
	// Unavailable: the bucket store failed and the policy says deny.
	Unavailable
)

// Limit kinds, the values of the "limit" metric label.
const (
	LimitRPM        = "rpm"
	LimitTPM        = "tpm"
	LimitTPD        = "tpd"
	LimitConcurrent = "concurrent"
	// LimitQueue: the user's line of waiting requests is full.
	LimitQueue = "queue"
)

// Admission is one request's reservation, from Admit to Finish. It is not
// safe for concurrent use.
type Admission struct {
	// Outcome is the decision.
	Outcome Outcome
	// RetryAfter is how long a rejected request must wait before the same
	// request would be admitted; exact, not rounded.
	RetryAfter time.Duration
	// Limit names the deciding limit kind (rpm, tpm, tpd, concurrent) and
	// Scope its owner ("user", "model", "app"), for a rejection's message.
	Limit, Scope string
	// LimitValue is the deciding limit's configured value (per minute, per
	// day, or concurrent requests).
	LimitValue int64
	// Headers are the user's request and token budgets after this decision,
	// for OpenAI's x-ratelimit-* headers; Valid is false for a budget that
	// has no limit.
	Requests, Tokens Budget
	// Reserved is the number of tokens reserved (prompt estimate plus the
	// completion allowance).
	Reserved int64
	// Wait is how long an admitted request must wait for its reserved slot
	// before it goes on (0: at once); at most Ask.MaxWait.
	Wait time.Duration
	// Queued is how many of the user's requests were already waiting in
	// this replica when this one was decided (its place in the user's line).
	Queued int
	// Spend is the tightest spend budget after this decision (budget.go);
	// for a budget's rejection, Limit and Scope name it, LimitValue is its
	// size in µUSD and RetryAfter runs to the end of its window.
	Spend Spend
	// Worst is the request's reserved cost, in µUSD (0 without a budget).
	Worst int64

	req    limit.Request
	dec    limit.Decision
	kinds  []ruleInfo   // per rule of req.Rules
	leases []ruleInfo   // per lease of req.Leases
	settle []limit.Rule // scratch: the token rules to settle
	// track are the spend counters without a cap (budget.go): nothing to
	// decide, so they are left out of the reservation and only charged
	// when the request is settled; trackKinds describe them.
	track      []limit.Rule
	trackKinds []ruleInfo
	store      limit.Store
	tier       string
	finished   bool
	// waiting is the user's waiting counter this request holds, if any,
	// and waitScope the user scope it is filed under.
	waiting   *atomic.Int64
	waitScope string
}

// Budget is one x-ratelimit-* header family.
type Budget struct {
	// Valid reports a configured limit.
	Valid bool
	// Limit is the per-minute limit.
	Limit int64
	// Remaining is what is left after this request.
	Remaining int64
	// Reset is the time until the bucket is full again.
	Reset time.Duration
}

type ruleInfo struct {
	kind  string
	scope string
	limit int64 // per period, concurrent requests, or µUSD (0: a counter without a cap)
	token bool  // cost in tokens (settled from usage)
	usd   bool  // a spend counter, in µUSD (settled from the answer's cost)
}

// Limiter admits requests against the users' budgets and settles their
// token reservations. Its buckets live in a store that outlives policy
// reloads.
type Limiter struct {
	store  limit.Store
	local  *limit.Memory // fallback for on_store_error: local (shared stores only)
	shared bool
	// leaseTTL bounds how long a concurrency slot outlives a dead replica.
	leaseTTL time.Duration
	log      *slog.Logger

	// failing is set while the store errs, so an incident logs once.
	failing atomic.Bool
	// settling tracks Settle's goroutines; Close waits for them.
	settling sync.WaitGroup

	decisions *prometheus.CounterVec
	// shadowDecisions counts shadow limits' would-be decisions (shadow.go).
	shadowDecisions *prometheus.CounterVec
	tokens          *prometheus.CounterVec
	storeDuration   prometheus.Observer
	storeErrors     prometheus.Counter

	pool sync.Pool
	// counters caches metric children by label values (tier names come
	// from the policy, limits and outcomes from this file), so the hot path
	// resolves no label set.
	counters sync.Map // string → prometheus.Counter
	tierTok  sync.Map // tier → *tokenCounters
	// tierMu serialises adding children to the caches above with dropping
	// a removed tier's (tiermetrics.go), so no cached handle outlives its
	// series; tierGen is the newest policy whose removed tiers were dropped.
	tierMu  sync.Mutex
	tierGen atomic.Uint64

	// keys caches bucket keys by scope (keysFor); keysN counts its entries.
	keys  sync.Map // string → *bucketKeys
	keysN atomic.Int64
	// shadowKeys caches shadow bucket keys by user scope (shadow.go);
	// shadowN counts its entries.
	shadowKeys sync.Map // string → *bucketKeys
	shadowN    atomic.Int64

	// waiting counts each user's requests waiting for a reserved slot, by
	// user scope; entries are dropped when they fall to zero.
	waitMu  sync.Mutex
	waiting map[string]*atomic.Int64

	// win is the current calendar window of the budgets (budget.go);
	// spendKeys caches spend counter keys by scope, spendN counts them.
	win        atomic.Pointer[window]
	spendKeys  sync.Map // string → *spendKeys
	spendN     atomic.Int64
	budgetUsed *prometheus.HistogramVec
}

// LimiterOptions configure a Limiter.
type LimiterOptions struct {
	// Store holds the buckets: a *limit.Memory (one process) or a
	// *limit.Redis (shared by replicas). Required.
	Store limit.Store
	// Shared reports a store shared by replicas, for which the policy's
	// on_store_error applies.
	Shared bool
	// LeaseTTL is how long a concurrency slot lives unless released; it must
	// be longer than the longest request. Default 31m (upstream total
	// timeout's default plus a minute).
	LeaseTTL time.Duration
	// Registry receives the limiter's metrics. Required.
	Registry prometheus.Registerer
	// Logger receives store incidents. Default slog.Default().
	Logger *slog.Logger
}

// NewLimiter builds a Limiter. Close stops its fallback store.
func NewLimiter(o LimiterOptions) *Limiter {
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 31 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l := &Limiter{store: o.Store, shared: o.Shared, leaseTTL: o.LeaseTTL, log: o.Logger,
		waiting: make(map[string]*atomic.Int64)}
	if o.Shared {
		l.local = limit.NewMemory(limit.MemoryOptions{})
	}
	l.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_limiter_decisions_total",
		Help: "Admission decisions by tier, deciding limit (none when admitted), its scope (whose limit: user, model, app; none when admitted) and outcome.",
	}, []string{"tier", "limit", "scope", "outcome"})
	l.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_limiter_tokens_total",
		Help: "Tokens reserved before calls (kind=reserved) and used according to the answers (kind=actual), by tier.",
	}, []string{"tier", "kind"})
	storeDuration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_limiter_store_duration_seconds",
		Help:    "Time of one bucket store reservation.",
		Buckets: []float64{10e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 100e-3},
	})
	l.storeDuration = storeDuration
	storeErrors := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_limiter_store_errors_total",
		Help: "Bucket store calls that failed (Redis unreachable or slow).",
	})
	l.storeErrors = storeErrors
	storeUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_limiter_store_up",
		Help: "1 while the bucket store answers; 0 from a failed call until the next one succeeds (Redis health of the limits).",
	}, func() float64 {
		if l.failing.Load() {
			return 0
		}
		return 1
	})

	l.shadowDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_shadow_decisions_total",
		Help: "Decisions of tiers' shadow limits, counted and never enforced, by tier, deciding limit (none when admitted) and outcome (would_admit, would_queue, would_reject, store_error).",
	}, []string{"tier", "limit", "outcome"})
	l.budgetUsed = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_budget_used_ratio",
		Help:    "At each admission under a spend budget, the used fraction of the request's tightest budget after its reservation, by tier and window (day, month).",
		Buckets: []float64{0.25, 0.5, 0.75, 0.9, 0.95, 1},
	}, []string{"tier", "window"})
	o.Registry.MustRegister(l.decisions, l.tokens, storeDuration, storeErrors, storeUp, l.shadowDecisions, l.budgetUsed)
	l.pool.New = func() any { return new(Admission) }
	return l
}

// Close waits for pending settlements and stops the fallback store's
// sweeper.
func (l *Limiter) Close() {
	l.settling.Wait()
	if l.local != nil {
		l.local.Close()
	}
}

// MaxReservation is the most tokens one request may reserve (2^53, exact in
// a float64 and in Lua): a larger ask is cut to it, which no token budget's
// burst admits, and its cost times any emission interval is checked against
// the burst before it is multiplied.
const MaxReservation int64 = 1 << 53

// clampTokens bounds a reservation to [0, MaxReservation]. A negative ask
// can only come from arithmetic that wrapped, so it fails closed: it is
// treated as the largest ask, never as a free one.
func clampTokens(n int64) int64 {
	if n < 0 || n > MaxReservation {
		return MaxReservation
	}
	return n
}

// Ask is what one request asks of its budgets.
type Ask struct {
	// Plan is the request's budgets (Policy.Plan).
	Plan Plan
	// RequestID identifies the request's concurrency leases.
	RequestID string
	// Tokens is the reservation: the prompt estimate plus the completion
	// allowance (max tokens or the tier's default, times n).
	Tokens int64
	// MaxWait is how long the request may wait for a future slot; 0 admits
	// now or rejects. A request whose slot comes later is rejected with the
	// exact Retry-After after which it fits within MaxWait.
	MaxWait time.Duration
	// Completion is the part of Tokens that is the completion allowance,
	// and Price the model's price (zero: free), for the worst-case cost a
	// spend budget reserves.
	Completion int64
	Price      Price
}

// Admit decides a request. The Admission must be given back with Finish,
// whatever the outcome.
func (l *Limiter) Admit(ctx context.Context, pol *Policy, a *Ask) *Admission {
	return l.AdmitCounting(ctx, pol, a, nil)
}

// AdmitCounting is Admit with a way to count the reservation exactly:
// exact, when not nil, is called only when the estimate alone was rejected
// by a token budget, since counting costs far more than estimating. (A
// parameter, not a field of Ask: Admit keeps parts of an Ask, so a closure
// there would be allocated on every request; here it stays on the caller's
// stack.)
func (l *Limiter) AdmitCounting(ctx context.Context, pol *Policy, a *Ask, exact func() int64) *Admission {
	if pol != nil && pol.gen > l.tierGen.Load() {
		l.retireTiers(pol)
	}
	a.Tokens = clampTokens(a.Tokens)
	l.shadow(ctx, a)
	ad := l.pool.Get().(*Admission)
	ad.reset()
	if a.Plan.Tier != nil {
		ad.tier = a.Plan.Tier.Name
	}
	ad.Worst = worstCost(a)
	l.build(ad, &a.Plan, a.Tokens, ad.Worst, a.RequestID, 1)
	ad.req.MaxWait = int64(a.MaxWait / time.Microsecond)
	if len(ad.req.Rules) == 0 && len(ad.req.Leases) == 0 {
		// Nothing to decide; spend counters without a cap are still
		// charged at settlement, in the limiter's store.
		l.count(ad.tier, "none", "none", "admitted")
		ad.Outcome = Admitted
		if len(ad.track) > 0 {
			ad.store = l.store
		}
		return ad
	}
	ad.Reserved = a.Tokens
	store := l.store
	err := l.reserve(ctx, store, ad)
	if err == nil && !ad.dec.Allowed && exact != nil && ad.dec.Limiting >= 0 &&
		ad.dec.Limiting < len(ad.kinds) && (ad.kinds[ad.dec.Limiting].token || ad.kinds[ad.dec.Limiting].usd) {
		// The estimate is an upper bound; the exact count (and so the
		// worst-case cost) may fit.
		if n := exact(); n < a.Tokens {
			ad.Reserved = n
			exactAsk := *a
			exactAsk.Tokens = n
			ad.Worst = worstCost(&exactAsk)
			l.setTokenCosts(ad, n, ad.Worst)
			err = l.reserve(ctx, store, ad)
		}
	}
	if err != nil {
		l.storeFailed(err)
		switch pol.OnStoreError {
		case StoreErrorAllow:
			ad.store = nil
			l.count(ad.tier, "none", "none", "store_error_allowed")
			return ad
		case StoreErrorDeny:
			ad.store = nil
			ad.Outcome = Unavailable
			l.count(ad.tier, "none", "none", "store_error_denied")
			return ad
		}
		// local: the same budgets, divided among the replicas, in memory.
		tier := ad.tier
		ad.reset()
		ad.tier, ad.Reserved, ad.Worst = tier, a.Tokens, worstCost(a)
		l.build(ad, &a.Plan, a.Tokens, ad.Worst, a.RequestID, pol.Replicas)
		ad.req.MaxWait = int64(a.MaxWait / time.Microsecond)
		store = l.local
		_ = l.reserve(ctx, store, ad) // the memory store fails only on invalid input
	} else if store == l.store {
		l.storeRecovered()
	}
	ad.store = store
	l.decide(ad)
	if ad.Outcome == Admitted && ad.dec.Wait > 0 {
		l.enqueue(ctx, ad, &a.Plan)
	}
	return ad
}

// enqueue counts an admitted request that must wait in its user's line,
// and turns it into a rejection when the line is full (the slot given
// back).
func (l *Limiter) enqueue(ctx context.Context, ad *Admission, pl *Plan) {
	ad.Wait = time.Duration(ad.dec.Wait) * time.Microsecond
	depth := DefaultMaxQueue
	if pl.Tier != nil {
		depth = pl.Tier.Queue.MaxQueue
	}
	l.waitMu.Lock()
	c := l.waiting[pl.UserScope]
	if c == nil {
		c = new(atomic.Int64)
		l.waiting[pl.UserScope] = c
	}
	n := c.Add(1)
	l.waitMu.Unlock()
	ad.Queued = int(n - 1)
	ad.waiting, ad.waitScope = c, pl.UserScope
	if n <= int64(depth) {
		return
	}
	// The line is full: give the slot back and reject until the line's
	// first request would be served.
	l.WaitEnded(ad)
	if err := ad.store.Cancel(ctx, &ad.req); err != nil {
		l.storeFailed(err)
	}
	ad.Outcome = Rejected
	ad.RetryAfter = ad.Wait
	ad.Limit, ad.Scope, ad.LimitValue = LimitQueue, "user", int64(depth)
	l.count(ad.tier, LimitQueue, "user", "rejected")
}

// WaitEnded tells the limiter an admitted request stopped waiting (it went
// on, or its client left).
func (l *Limiter) WaitEnded(ad *Admission) {
	c := ad.waiting
	if c == nil {
		return
	}
	ad.waiting = nil
	if c.Add(-1) == 0 {
		l.waitMu.Lock()
		if c.Load() == 0 && l.waiting[ad.waitScope] == c {
			delete(l.waiting, ad.waitScope)
		}
		l.waitMu.Unlock()
	}
}

// Cancel gives back an admitted request's reservation unused (its client
// left while it waited): the tokens and request are refunded and the
// concurrency slots released. ad must not be used afterwards.
func (l *Limiter) Cancel(ctx context.Context, ad *Admission) {
	if ad.store != nil && ad.Outcome == Admitted {
		if err := ad.store.Cancel(ctx, &ad.req); err != nil {
			l.storeFailed(err)
		}
		l.count(ad.tier, "none", "none", "cancelled")
	}
	l.pool.Put(ad)
}

func (l *Limiter) reserve(ctx context.Context, s limit.Store, ad *Admission) error {
	start := time.Now()
	err := s.Reserve(ctx, &ad.req, &ad.dec)
	if s == l.store {
		l.storeDuration.Observe(time.Since(start).Seconds())
	}
	return err
}

// decide turns the store's decision into the Admission's outcome, headers
// and metrics.
func (l *Limiter) decide(ad *Admission) {
	d := &ad.dec
	for i, k := range ad.kinds {
		if k.scope != "user" || i >= len(d.Remaining) {
			continue
		}
		b := Budget{Valid: true, Limit: k.limit, Remaining: max(d.Remaining[i], 0), Reset: time.Duration(d.Reset[i]) * time.Microsecond}
		switch k.kind {
		case LimitRPM:
			ad.Requests = b
		case LimitTPM:
			ad.Tokens = b
		}
	}
	if d.Allowed {
		ad.Outcome = Admitted
		l.decideSpend(ad)
		l.count(ad.tier, "none", "none", "admitted")
		l.tierTokens(ad.tier).reserved.Add(float64(ad.Reserved))
		return
	}
	ad.Outcome = Rejected
	if d.RetryAfter < 0 {
		ad.Outcome = NeverFits
	}
	ad.RetryAfter = time.Duration(d.RetryAfter) * time.Microsecond
	if d.Limiting >= 0 && d.Limiting < len(ad.kinds) {
		k := ad.kinds[d.Limiting]
		ad.Limit, ad.Scope, ad.LimitValue = k.kind, k.scope, k.limit
		if k.usd && d.Limiting < len(d.Remaining) {
			ad.Spend = Spend{Valid: true, Limit: k.kind, Scope: k.scope, Cap: k.limit, Left: min(max(d.Remaining[d.Limiting], 0), k.limit)}
		}
	} else if j := d.Limiting - len(ad.kinds); j >= 0 && j < len(ad.leases) {
		k := ad.leases[j]
		ad.Limit, ad.Scope, ad.LimitValue = k.kind, k.scope, k.limit
	}
	outcome := "rejected"
	if ad.Outcome == NeverFits {
		outcome = "never"
	}
	l.count(ad.tier, ad.Limit, ad.Scope, outcome)
}

// Finish settles an admitted request's tokens from the answer's usage and
// its spend from the answer's cost in USD (actual < 0: no usage known,
// keep the token reservation and count the worst-case cost) and releases
// its concurrency slots; for a request that was not admitted it only
// returns the Admission to the pool. ad must not be used afterwards.
func (l *Limiter) Finish(ctx context.Context, ad *Admission, actual int64, cost float64) {
	if ad.store != nil && ad.Outcome == Admitted {
		ad.settle = ad.settle[:0]
		spent := Micros(cost)
		if actual < 0 {
			spent = ad.Worst // no usage: the answer is taken to cost its worst case
		} else {
			l.tierTokens(ad.tier).actual.Add(float64(actual))
		}
		for i, k := range ad.kinds {
			r := ad.req.Rules[i]
			switch {
			case k.token && actual >= 0:
				r.Cost = actual - ad.Reserved
			case k.usd:
				r.Cost = spent - r.Cost
			default:
				continue
			}
			if r.Cost != 0 {
				ad.settle = append(ad.settle, r)
			}
		}
		if spent > 0 {
			for _, r := range ad.track {
				r.Cost = spent
				ad.settle = append(ad.settle, r)
			}
		}
		// One step (one Redis round trip): tokens and spend settled, slots
		// released.
		if err := ad.store.Settle(ctx, ad.settle, ad.req.Leases, ad.req.LeaseID); err != nil {
			l.storeFailed(err)
		}
	}
	l.pool.Put(ad)
}

// Settle is Finish off the request path: inline for the in-memory store,
// on a tracked goroutine for a shared store, so the client does not wait
// for a Redis round trip. Close waits for pending settlements.
func (l *Limiter) Settle(ad *Admission, actual int64, cost float64) {
	if !l.shared || ad.store == nil || ad.Outcome != Admitted {
		l.Finish(context.Background(), ad, actual, cost)
		return
	}
	l.settling.Go(func() { l.Finish(context.Background(), ad, actual, cost) })
}

func (l *Limiter) storeFailed(err error) {
	l.storeErrors.Inc()
	if !l.failing.Swap(true) {
		l.log.Error("bucket store failing; applying on_store_error until it answers again", "error", err)
	}
}

func (l *Limiter) storeRecovered() {
	if l.failing.Load() && l.failing.Swap(false) {
		l.log.Info("bucket store answers again")
	}
}

func (ad *Admission) reset() {
	rules, leases, kinds, lkinds, settle := ad.req.Rules[:0], ad.req.Leases[:0], ad.kinds[:0], ad.leases[:0], ad.settle[:0]
	rem, res, track, tkinds := ad.dec.Remaining[:0], ad.dec.Reset[:0], ad.track[:0], ad.trackKinds[:0]
	*ad = Admission{}
	ad.req.Rules, ad.req.Leases, ad.kinds, ad.leases, ad.settle = rules, leases, kinds, lkinds, settle
	ad.dec.Remaining, ad.dec.Reset, ad.track, ad.trackKinds = rem, res, track, tkinds
}

// Stores returns the limiter's bucket store and, for a shared store, its
// local fallback (nil otherwise), so other budgets (the upstreams') can
// live beside the users'.
func (l *Limiter) Stores() (store, fallback limit.Store) {
	if l.local != nil {
		return l.store, l.local
	}
	return l.store, nil
}
