// Package queue shares a provider's capacity among the requests waiting for
// it: each upstream has a Scheduler that grants its budget (requests and
// tokens per minute, concurrent calls, per upstream and per API key) to
// waiting requests by deficit round robin across users, weighted by tier,
// with optional strict priority levels. The budget lives in a limit.Store, so
// with Redis every replica's scheduler draws from one shared budget.
//
// A request that finds no queue and free capacity is granted on the
// caller's goroutine with one store call; only waiting requests involve the
// scheduler's dispatcher goroutine, which sleeps exactly as long as the
// budget says (the GCRA's retry-after), never polling on a fixed period,
// except for a concurrency slot held by another replica (see leasePoll).
package queue

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/policy/limit"
)

// Errors a Ticket ends with when it is not granted.
var (
	// ErrQueueFull: the scheduler already holds MaxQueue waiting requests.
	ErrQueueFull = errors.New("queue: provider queue is full")
	// ErrWouldExceed: the expected wait is longer than the request's deadline.
	ErrWouldExceed = errors.New("queue: expected wait exceeds the request's max wait")
	// ErrExpired: the request's deadline passed while it waited.
	ErrExpired = errors.New("queue: request waited past its max wait")
	// ErrClosed: the scheduler stopped (server shutdown).
	ErrClosed = errors.New("queue: scheduler closed")
	// ErrCancelled: the caller cancelled the ticket (client gone).
	ErrCancelled = errors.New("queue: cancelled")
)

// Budget is a provider's capacity: zero fields are unlimited.
type Budget struct {
	// RPM is requests per minute; RPMBurst how many may start at once
	// (default RPM/60, at least 1: an even drip, no minute-start stampede).
	RPM, RPMBurst int64
	// TPM is tokens (prompt + completion) per minute; TPMBurst how many may
	// be reserved at once (default TPM/6: ten seconds' worth, at least the
	// largest single request admitted).
	TPM, TPMBurst int64
	// Concurrent is the number of calls in flight at once.
	Concurrent int64
}

// IsZero reports a budget that limits nothing.
func (b Budget) IsZero() bool { return b == Budget{} }

// Key is one API key (or deployment) of an upstream's pool.
type Key struct {
	// ID names the key in metrics and logs (never the secret).
	ID string
	// Weight is the key's share of picks among keys with capacity (>= 1).
	Weight int64
	// Budget is the key's own capacity, on top of the upstream's.
	Budget Budget
}

// Options configure a Scheduler.
type Options struct {
	// Name is the upstream's name; bucket keys are "up:NAME:...".
	Name string
	// Budget is the whole upstream's capacity.
	Budget Budget
	// Keys is the upstream's key pool; at least one (the upstream's own key).
	Keys []Key
	// Store holds the budget's buckets: memory, or Redis to share it.
	Store limit.Store
	// Fallback, when set, takes over while Store fails, with every budget
	// divided by Replicas (the shared store's replicas).
	Fallback limit.Store
	Replicas int64
	// LeaseTTL bounds a concurrency slot of a dead replica. Default 31m.
	LeaseTTL time.Duration
	// MaxQueue bounds the requests waiting at once. Default 10000.
	MaxQueue int
	// Quantum is the deficit round robin's share per visit per unit of
	// weight, in cost units (tokens when the budget counts tokens, else
	// requests). Default 4096 tokens or 1 request.
	Quantum int64
	// Metrics receives the scheduler's observations; nil records nothing.
	Metrics *Metrics
	// Logger receives store incidents. Default slog.Default().
	Logger *slog.Logger
}

// Ticket is one request's claim on the provider's capacity, from Acquire to
// Done or Cancel. Fields before the first blank line are set by the caller.
type Ticket struct {
	// Flow is the fairness unit: the user's bucket scope.
	Flow string
	// Tier labels metrics.
	Tier string
	// Weight is the flow's share (>= 1), from the tier.
	Weight int64
	// Priority orders levels strictly: higher is served first. Default 0.
	Priority int
	// Tokens is the request's token reservation (estimate + allowance).
	Tokens int64
	// ID is the request id; it names the concurrency lease.
	ID string
	// Deadline is the latest time the request may be granted.
	Deadline time.Time

	// Key is the index in Options.Keys of the key granted.
	Key int
	// Waited is how long the ticket waited in the queue.
	Waited time.Duration
	// Position is how many requests were ahead when it was queued (0 when
	// granted at once); set also on ErrWouldExceed.
	Position int
	// ETA is the expected wait when queued, or the Retry-After of a
	// rejection.
	ETA time.Duration
	// Slots is how many other requests this replica granted while the
	// ticket waited: its wait in service slots.
	Slots uint64
	// Seq numbers the grants of the scheduler, from 1.
	Seq uint64

	s        *Scheduler
	seq      uint64 // grants made before it was queued
	f        *flow
	cost     int64
	enqueued time.Time
	ready    chan struct{}
	err      error
	state    atomic.Int32 // ticketWaiting, ticketGranted, ticketDone
	req      limit.Request
	dec      limit.Decision
	store    limit.Store  // where the grant was reserved
	next     *Ticket      // in its flow's FIFO
	inQueue  bool         // linked in its flow
	settle   []limit.Rule // scratch for Done
}

const (
	ticketWaiting int32 = iota
	ticketGranted
	ticketEnded // cancelled, expired or closed while waiting
)

// Ready is closed when the ticket is granted or fails; then Err tells.
func (t *Ticket) Ready() <-chan struct{} { return t.ready }

// Err is nil for a granted ticket, else why it was not granted. Valid after
// Ready is closed.
func (t *Ticket) Err() error { return t.err }

// flow is one user's FIFO of waiting tickets.
type flow struct {
	name       string
	head, tail *Ticket
	n          int
	deficit    int64
	visited    bool // got its quantum in the current visit
	weight     int64
	prio       int
	active     bool
}

// level is one priority's ring of active flows (a slice used as a queue).
type level struct {
	prio  int
	flows []*flow
}

// Scheduler grants one upstream's capacity. Safe for concurrent use.
type Scheduler struct {
	o        Options
	log      *slog.Logger
	tokens   bool // the budget counts tokens: costs are tokens
	rules    [][]limit.Rule
	leases   [][]limit.Lease
	fbRules  [][]limit.Rule // the same divided by Replicas, for Fallback
	fbLeases [][]limit.Lease
	rpmIdx   int // index of the upstream's rpm rule in rules[k], or -1
	maxCost  int64

	mu      sync.Mutex
	levels  []*level // by priority, highest first
	flows   map[string]*flow
	waiting int
	closed  bool
	// pauseUntil holds grants after an upstream 429/503 (unix µs).
	pauseUntil int64
	// factor is the AIMD drain factor in (0, 1]: 1 = the full budget.
	factor float64
	// lastCut is when factor was last halved, so one storm halves it once
	// per retry window.
	lastCut time.Time
	// nextGrant is the earliest next grant when factor < 1 (local pacing).
	nextGrant time.Time
	// nextExpire is no later than the earliest deadline of a waiting
	// ticket (a ticket that left may make it early: a harmless scan).
	nextExpire time.Time

	wake     chan struct{}
	released chan struct{}
	stop     chan struct{}
	done     chan struct{}
	failing  atomic.Bool
	ids      atomic.Uint64
	pickSeq  atomic.Uint64
	grantSeq atomic.Uint64
	inFlight atomic.Int64
	// rest holds, per key, the end of its rest after a 429 (unix µs).
	rest []atomic.Int64
	// mGrants and mInFlight are this upstream's metric children; nil
	// without Metrics.
	mGrants   prometheus.Counter
	mInFlight prometheus.Gauge
	hasLeases bool // the budget has a concurrency limit: tickets need an ID
}

// minFactor is the lowest drain factor AIMD cuts to: a quarter of the
// budget, so a long storm does not leave the queue crawling afterwards.
const minFactor = 0.25

// leasePoll is how often a dispatcher retries when the upstream's
// concurrency slots are all held and none is released in this process
// (another replica holds them and Redis does not tell when it frees one).
const leasePoll = 50 * time.Millisecond

// New builds a Scheduler and starts its dispatcher; Close stops it.
func New(o Options) *Scheduler {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 31 * time.Minute
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 10000
	}
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if len(o.Keys) == 0 {
		o.Keys = []Key{{ID: "default", Weight: 1}}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Scheduler{o: o, log: o.Logger, flows: make(map[string]*flow), factor: 1,
		wake: make(chan struct{}, 1), released: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), rpmIdx: -1}
	s.rest = make([]atomic.Int64, len(o.Keys))
	s.tokens = o.Budget.TPM > 0
	for _, k := range o.Keys {
		if k.Budget.TPM > 0 {
			s.tokens = true
		}
	}
	if o.Quantum <= 0 {
		o.Quantum = 1
		if s.tokens {
			o.Quantum = 4096
		}
		s.o.Quantum = o.Quantum
	}
	s.maxCost = math.MaxInt64
	for i, k := range o.Keys {
		if k.Weight < 1 {
			s.o.Keys[i].Weight = 1
		}
		r, l := s.build("up:"+o.Name, o.Budget, 1)
		kr, kl := s.build("up:"+o.Name+":k:"+k.ID, k.Budget, 1)
		if i == 0 && o.Budget.RPM > 0 {
			s.rpmIdx = 0
		}
		s.rules = append(s.rules, append(r, kr...))
		s.leases = append(s.leases, append(l, kl...))
		r, l = s.build("up:"+o.Name, o.Budget, o.Replicas)
		kr, kl = s.build("up:"+o.Name+":k:"+k.ID, k.Budget, o.Replicas)
		s.fbRules = append(s.fbRules, append(r, kr...))
		s.fbLeases = append(s.fbLeases, append(l, kl...))
	}
	for _, l := range s.leases {
		s.hasLeases = s.hasLeases || len(l) > 0
	}
	if o.Metrics != nil {
		s.mGrants = o.Metrics.grants.WithLabelValues(o.Name)
		s.mInFlight = o.Metrics.inFlight.WithLabelValues(o.Name)
		o.Metrics.factor.WithLabelValues(o.Name).Set(1)
		o.Metrics.breaker.WithLabelValues(o.Name).Set(0)
	}
	go s.dispatch()
	return s
}

// build returns the rules and leases of one budget, divided by div. Rule
// costs are placeholders, set per ticket.
func (s *Scheduler) build(prefix string, b Budget, div int64) ([]limit.Rule, []limit.Lease) {
	var rules []limit.Rule
	var leases []limit.Lease
	const minute = int64(time.Minute / time.Microsecond)
	if b.RPM > 0 {
		lim := max(b.RPM/div, 1)
		burst := b.RPMBurst
		if burst <= 0 {
			burst = max(b.RPM/60, 1)
		}
		burst = max(burst/div, 1)
		rules = append(rules, limit.Rule{Key: prefix + ":rpm", Interval: max(minute/lim, 1), Burst: burst, Cost: 1})
	}
	if b.TPM > 0 {
		lim := max(b.TPM/div, 1)
		burst := b.TPMBurst
		if burst <= 0 {
			burst = max(b.TPM/6, 1)
		}
		burst = max(burst/div, 1)
		rules = append(rules, limit.Rule{Key: prefix + ":tpm", Interval: max(minute/lim, 1), Burst: burst, Cost: 0})
		if div == 1 {
			s.maxCost = min(s.maxCost, burst)
		}
	}
	if b.Concurrent > 0 {
		leases = append(leases, limit.Lease{Key: prefix + ":conc", Limit: max(b.Concurrent/div, 1),
			TTL: int64(s.o.LeaseTTL / time.Microsecond)})
	}
	return rules, leases
}

// Limited reports whether the scheduler has any budget to enforce.
func (s *Scheduler) Limited() bool {
	for k := range s.rules {
		if len(s.rules[k]) > 0 || len(s.leases[k]) > 0 {
			return true
		}
	}
	return false
}

// MaxTokens is the largest token reservation the budget can ever grant
// (the smallest TPM burst), or math.MaxInt64.
func (s *Scheduler) MaxTokens() int64 { return s.maxCost }

var ticketPool = sync.Pool{New: func() any { return new(Ticket) }}

// NewTicket returns a zeroed Ticket from a pool; Done or a failed Acquire
// returns it.
func NewTicket() *Ticket {
	t := ticketPool.Get().(*Ticket)
	return t
}

func (t *Ticket) reset() {
	rules, leases, rem, res, settle := t.req.Rules[:0], t.req.Leases[:0], t.dec.Remaining[:0], t.dec.Reset[:0], t.settle[:0]
	*t = Ticket{}
	t.req.Rules, t.req.Leases, t.dec.Remaining, t.dec.Reset, t.settle = rules, leases, rem, res, settle
}

// Release returns a ticket that was never acquired, or whose Acquire
// failed, to the pool.
func Release(t *Ticket) {
	t.reset()
	ticketPool.Put(t)
}

// Acquire asks for capacity. It returns true when the ticket was granted at
// once (no queue, capacity free). Otherwise the ticket is queued (wait on
// Ready, then check Err) or, with an error, rejected up front: ErrQueueFull,
// ErrWouldExceed (t.ETA is the expected wait, t.Position the requests
// ahead), or ErrClosed.
func (s *Scheduler) Acquire(t *Ticket) (bool, error) {
	t.s = s
	t.cost = 1
	if s.tokens {
		t.cost = max(t.Tokens, 1)
	}
	if t.Weight < 1 {
		t.Weight = 1
	}
	now := time.Now()
	t.enqueued = now
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, ErrClosed
	}
	// A request that may not wait is not held back by a pause after an
	// upstream 429 either: it goes to the provider (budget permitting) and
	// its client gets the provider's own answer.
	if s.waiting == 0 && (!s.held(now) || !now.Before(t.Deadline)) {
		// Nobody waits: try the budget on the caller's goroutine, outside
		// the lock (a Redis round trip must not hold up other requests). A
		// request queued meanwhile may be overtaken by this one: a race of
		// microseconds, not a fairness problem.
		s.mu.Unlock()
		ok, _ := s.tryGrant(t)
		if ok {
			s.mu.Lock()
			s.pace(t, now)
			s.mu.Unlock()
			s.granted(t, now)
			return true, nil
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false, ErrClosed
		}
	}
	if s.waiting >= s.o.MaxQueue {
		s.mu.Unlock()
		s.o.Metrics.outcome(t.Tier, "rejected")
		return false, ErrQueueFull
	}
	t.Position, t.ETA = s.estimate(t, now)
	if now.Add(t.ETA).After(t.Deadline) {
		s.mu.Unlock()
		s.o.Metrics.outcome(t.Tier, "rejected")
		return false, ErrWouldExceed
	}
	t.ready = make(chan struct{})
	t.seq = s.grantSeq.Load()
	s.push(t)
	s.mu.Unlock()
	s.o.Metrics.waiting(t.Tier, 1)
	s.kick()
	return false, nil
}

// held reports grants held back by a pause or AIMD pacing. s.mu held.
func (s *Scheduler) held(now time.Time) bool {
	return now.UnixMicro() < s.pauseUntil || now.Before(s.nextGrant)
}

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// estimate is the expected wait of a new ticket and the requests ahead of
// it: with deficit round robin every active flow is served in turn, so the
// ticket waits for its own flow's queue and, per own request, one round of
// the others (by weight). s.mu held.
func (s *Scheduler) estimate(t *Ticket, now time.Time) (int, time.Duration) {
	own := 0
	if f := s.flows[t.Flow]; f != nil {
		own = f.n
	}
	var others float64
	ahead := own
	for _, lv := range s.levels {
		if lv.prio < t.Priority {
			continue
		}
		for _, f := range lv.flows {
			if f.name == t.Flow {
				continue
			}
			if lv.prio > t.Priority {
				others += float64(f.n)
				ahead += f.n
				continue
			}
			// A flow of the same level is served min(its queue, rounds)
			// times before our request; each round gives it weight/ours.
			share := float64(f.weight) / float64(t.Weight)
			n := min(float64(f.n), float64(own+1)*share)
			others += n
			ahead += int(n)
		}
	}
	slot := s.slot(t, s.factor)
	eta := time.Duration((float64(own+1) + others) * float64(slot))
	if p := time.UnixMicro(s.pauseUntil); p.After(now) {
		eta += p.Sub(now)
	}
	return ahead, eta
}

// slot is the time one grant of t's size takes from the budget at drain
// factor f.
func (s *Scheduler) slot(t *Ticket, f float64) time.Duration {
	var slot int64 // µs
	for _, r := range s.rules[0] {
		c := r.Cost
		if r.Cost == 0 { // tpm
			c = t.cost
		}
		slot = max(slot, c*r.Interval)
	}
	return time.Duration(float64(slot)/f) * time.Microsecond
}

// push appends t to its flow, activating the flow. s.mu held.
func (s *Scheduler) push(t *Ticket) {
	f := s.flows[t.Flow]
	if f == nil {
		f = &flow{name: t.Flow}
		s.flows[t.Flow] = f
	}
	f.weight, f.prio = t.Weight, t.Priority
	t.f = f
	if f.tail == nil {
		f.head = t
	} else {
		f.tail.next = t
	}
	f.tail = t
	t.inQueue = true
	if t.Deadline.Before(s.nextExpire) {
		s.nextExpire = t.Deadline
	}
	f.n++
	s.waiting++
	if !f.active {
		f.active = true
		s.levelOf(f.prio).flows = append(s.levelOf(f.prio).flows, f)
	}
}

func (s *Scheduler) levelOf(prio int) *level {
	i := 0
	for ; i < len(s.levels); i++ {
		if s.levels[i].prio == prio {
			return s.levels[i]
		}
		if s.levels[i].prio < prio {
			break
		}
	}
	lv := &level{prio: prio}
	s.levels = append(s.levels, nil)
	copy(s.levels[i+1:], s.levels[i:])
	s.levels[i] = lv
	return lv
}

// remove takes t out of its flow (cancel, expiry). s.mu held.
func (s *Scheduler) remove(t *Ticket) {
	if !t.inQueue {
		return
	}
	t.inQueue = false
	f := t.f
	var prev *Ticket
	for c := f.head; c != nil; prev, c = c, c.next {
		if c != t {
			continue
		}
		if prev == nil {
			f.head = c.next
		} else {
			prev.next = c.next
		}
		if f.tail == c {
			f.tail = prev
		}
		c.next = nil
		f.n--
		s.waiting--
		break
	}
	if f.n == 0 {
		s.deactivate(f)
	}
}

func (s *Scheduler) deactivate(f *flow) {
	f.active, f.deficit, f.visited = false, 0, false
	for i, lv := range s.levels {
		if lv.prio != f.prio {
			continue
		}
		for j, g := range lv.flows {
			if g == f {
				lv.flows = append(lv.flows[:j], lv.flows[j+1:]...)
				break
			}
		}
		if len(lv.flows) == 0 {
			s.levels = append(s.levels[:i], s.levels[i+1:]...)
		}
		break
	}
	delete(s.flows, f.name)
}

// pick returns the ticket deficit round robin serves next, without removing
// it: the highest priority level's front flow, once its deficit (topped up
// by one quantum per visit) covers its head's cost; flows that cannot pay
// move to the back of the ring. s.mu held.
func (s *Scheduler) pick() *Ticket {
	if len(s.levels) == 0 {
		return nil
	}
	lv := s.levels[0]
	for {
		f := lv.flows[0]
		if !f.visited {
			f.deficit += f.weight * s.o.Quantum
			f.visited = true
		}
		if f.head.cost <= f.deficit {
			return f.head
		}
		f.visited = false
		lv.flows = append(lv.flows[1:], f)
	}
}

// served takes the head t out of its flow after a grant. s.mu held.
func (s *Scheduler) served(t *Ticket) {
	f := t.f
	f.deficit -= t.cost
	t.inQueue = false
	f.head = t.next
	if f.head == nil {
		f.tail = nil
	}
	t.next = nil
	f.n--
	s.waiting--
	if f.n == 0 {
		s.deactivate(f)
	}
}

// tryGrant reserves t's cost from the budget, trying the keys in a
// weighted rotation. It reports success; on failure the second result is
// the shortest retry-after over the keys (0: unknown, a full concurrency
// set or a store error). Called without s.mu.
func (s *Scheduler) tryGrant(t *Ticket) (bool, time.Duration) {
	n := len(s.o.Keys)
	start := s.pickKey()
	var wait int64 = -1
	nowUs := time.Now().UnixMicro()
	for i := 0; i < n; i++ {
		k := (start + i) % n
		if r := s.rest[k].Load(); r > nowUs {
			if wait < 0 || r-nowUs < wait {
				wait = r - nowUs
			}
			continue // the key answered 429 and rests
		}
		ok, err := s.reserve(t, k)
		if err != nil {
			return false, 0
		}
		if ok {
			t.Key = k
			return true, 0
		}
		ra := t.dec.RetryAfter
		if t.dec.Limiting >= len(t.req.Rules) {
			// A full concurrency set: its retry-after is a lease's expiry,
			// not when a call ends. Wait for a release instead.
			ra = 0
		}
		if ra >= 0 && (wait < 0 || ra < wait) {
			wait = ra
		}
	}
	if wait < 0 {
		wait = 0
	}
	return false, time.Duration(wait) * time.Microsecond
}

// pickKey is the first key to try: a weighted rotation over the pool.
func (s *Scheduler) pickKey() int {
	if len(s.o.Keys) == 1 {
		return 0
	}
	var total int64
	for _, k := range s.o.Keys {
		total += k.Weight
	}
	x := int64(s.pickSeq.Add(1) % uint64(total))
	for i, k := range s.o.Keys {
		if x < k.Weight {
			return i
		}
		x -= k.Weight
	}
	return 0
}

// reserve tries key k's rules and leases for t on the store (or its
// fallback while the store fails).
func (s *Scheduler) reserve(t *Ticket, k int) (bool, error) {
	store, rules, leases := s.o.Store, s.rules[k], s.leases[k]
	if s.o.Fallback != nil && s.failing.Load() {
		store, rules, leases = s.o.Fallback, s.fbRules[k], s.fbLeases[k]
	}
	if len(rules) == 0 && len(leases) == 0 {
		t.store = nil
		return true, nil
	}
	s.fill(t, rules, leases)
	err := store.Reserve(context.Background(), &t.req, &t.dec)
	if err != nil && store == s.o.Store && s.o.Fallback != nil {
		if !s.failing.Swap(true) {
			s.log.Error("provider budget store failing; using local budgets divided by replicas", "upstream", s.o.Name, "error", err)
			go s.probe()
		}
		store = s.o.Fallback
		s.fill(t, s.fbRules[k], s.fbLeases[k])
		err = store.Reserve(context.Background(), &t.req, &t.dec)
	}
	if err != nil {
		s.log.Error("provider budget reservation failed", "upstream", s.o.Name, "error", err)
		return false, err
	}
	t.store = store
	return t.dec.Allowed, nil
}

func (s *Scheduler) fill(t *Ticket, rules []limit.Rule, leases []limit.Lease) {
	t.req.Rules = append(t.req.Rules[:0], rules...)
	for i := range t.req.Rules {
		if t.req.Rules[i].Cost == 0 { // a tpm rule
			t.req.Rules[i].Cost = min(max(t.Tokens, 1), t.req.Rules[i].Burst)
		}
	}
	t.req.Leases = append(t.req.Leases[:0], leases...)
	t.req.LeaseID = t.ID
	t.req.MaxWait = 0
}

// probe checks the shared store every second until it answers again.
func (s *Scheduler) probe() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var d limit.Decision
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			req := limit.Request{Rules: []limit.Rule{{Key: "up:" + s.o.Name + ":probe", Interval: 1, Burst: 1, Cost: 0}}}
			if s.o.Store.Reserve(context.Background(), &req, &d) == nil {
				s.failing.Store(false)
				s.log.Info("provider budget store answers again", "upstream", s.o.Name)
				return
			}
		}
	}
}

// granted records a grant made at now for a ticket queued at t.enqueued.
func (s *Scheduler) granted(t *Ticket, now time.Time) {
	t.Waited = now.Sub(t.enqueued)
	t.state.Store(ticketGranted)
	t.Seq = s.grantSeq.Add(1)
	if t.ready != nil {
		t.Slots = t.Seq - 1 - t.seq
	}
	n := s.inFlight.Add(1)
	if s.mGrants != nil {
		s.mGrants.Inc()
		s.mInFlight.Set(float64(n))
	}
}

// pace holds the next grant back while the drain factor is below 1: the
// budget's own bucket spaces grants by one slot at full rate, and this adds
// the rest of a slot at the reduced rate. s.mu held.
func (s *Scheduler) pace(t *Ticket, now time.Time) {
	if s.factor >= 1 {
		return
	}
	full := s.slot(t, 1)
	s.nextGrant = now.Add(s.slot(t, s.factor) - full)
}

// Cancel withdraws a ticket whose client left: a waiting ticket leaves the
// queue (no capacity was taken); a granted one gives its reservation back.
// It reports whether the ticket was still waiting. The ticket must not be
// used afterwards.
func (s *Scheduler) Cancel(t *Ticket) bool {
	s.mu.Lock()
	if t.state.Load() == ticketWaiting {
		// Still queued (or being tried by the dispatcher, which then gives
		// back what it reserved). Not pooled: the dispatcher may hold it.
		t.state.Store(ticketEnded)
		if t.inQueue {
			s.remove(t)
		}
		s.mu.Unlock()
		s.o.Metrics.waiting(t.Tier, -1)
		s.o.Metrics.outcome(t.Tier, "abandoned")
		s.kick()
		return true
	}
	s.mu.Unlock()
	if t.state.Load() == ticketGranted && t.store != nil {
		if err := t.store.Cancel(context.Background(), &t.req); err != nil {
			s.log.Warn("provider budget cancel failed", "upstream", s.o.Name, "error", err)
		}
		s.finished(t)
	}
	Release(t)
	return false
}

// Done ends a granted ticket: the token reservation is settled from the
// answer's usage (actual < 0: keep it) and the concurrency slot released.
func (s *Scheduler) Done(t *Ticket, actual int64) {
	if t.store != nil {
		settle := t.settle[:0]
		delta := int64(0)
		if actual >= 0 && s.tokens {
			for _, r := range t.req.Rules {
				if r.Key[len(r.Key)-4:] == ":tpm" {
					settle = append(settle, r)
					delta = actual - r.Cost
				}
			}
		}
		t.settle = settle
		if len(settle) > 0 || len(t.req.Leases) > 0 {
			if err := t.store.Settle(context.Background(), settle, delta, t.req.Leases, t.req.LeaseID); err != nil {
				s.log.Warn("provider budget settle failed", "upstream", s.o.Name, "error", err)
			}
		}
	}
	s.finished(t)
	Release(t)
}

func (s *Scheduler) finished(t *Ticket) {
	n := s.inFlight.Add(-1)
	if s.mInFlight != nil {
		s.mInFlight.Set(float64(n))
	}
	if len(t.req.Leases) > 0 {
		select {
		case s.released <- struct{}{}:
		default:
		}
	}
}

// Throttled tells the scheduler the upstream answered 429 or 503 to a call
// made with key (its index in Options.Keys). In a pool of several keys that
// key rests for retryAfter (0: one second) while the others go on. With one
// key, or when every key rests, grants pause for retryAfter and the drain
// rate halves (at most once per pause window), down to minFactor of the
// budget.
func (s *Scheduler) Throttled(key int, retryAfter time.Duration) {
	if retryAfter <= 0 {
		retryAfter = time.Second
	}
	retryAfter = min(retryAfter, time.Minute)
	now := time.Now()
	if n := len(s.o.Keys); n > 1 && key >= 0 && key < n {
		until := now.Add(retryAfter).UnixMicro()
		s.rest[key].Store(until)
		all := true
		for i := range s.rest {
			if s.rest[i].Load() <= now.UnixMicro() {
				all = false
			}
		}
		if !all {
			return
		}
	}
	s.mu.Lock()
	s.pauseUntil = max(s.pauseUntil, now.Add(retryAfter).UnixMicro())
	if now.Sub(s.lastCut) > retryAfter {
		s.factor = max(s.factor/2, minFactor)
		s.lastCut = now
	}
	f := s.factor
	s.mu.Unlock()
	if m := s.o.Metrics; m != nil {
		m.factor.WithLabelValues(s.o.Name).Set(f)
	}
	s.kick()
}

// Succeeded tells the scheduler a call got an answer that was not a 429 or
// 503: the drain rate grows back by 5% of the budget per success.
func (s *Scheduler) Succeeded() {
	s.mu.Lock()
	if s.factor >= 1 {
		s.mu.Unlock()
		return
	}
	s.factor = min(s.factor+0.05, 1)
	f := s.factor
	s.mu.Unlock()
	if m := s.o.Metrics; m != nil {
		m.factor.WithLabelValues(s.o.Name).Set(f)
	}
}

// Factor is the current drain factor (1 = full budget).
func (s *Scheduler) Factor() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.factor
}

// Waiting is the number of queued tickets.
func (s *Scheduler) Waiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// Close stops the dispatcher; every waiting ticket ends with ErrClosed.
func (s *Scheduler) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
}

// dispatch grants waiting tickets in deficit round robin order as the
// budget allows, sleeping until the budget's next slot, a new arrival or a
// released concurrency slot.
func (s *Scheduler) dispatch() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		sleep, ok := s.step()
		if !ok {
			return
		}
		if sleep == 0 {
			continue
		}
		if sleep > 0 {
			timer.Reset(sleep)
		}
		select {
		case <-s.stop:
			s.closeAll()
			return
		case <-s.wake:
		case <-s.released:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// step grants at most one ticket. It returns how long to sleep (0: go on at
// once; < 0: until woken) and false when closed.
func (s *Scheduler) step() (time.Duration, bool) {
	select {
	case <-s.stop:
		s.closeAll()
		return 0, false
	default:
	}
	now := time.Now()
	s.mu.Lock()
	// Waiting tickets are scanned only once the earliest deadline passed;
	// sleep no longer than that deadline, to expire it on time.
	if !now.Before(s.nextExpire) {
		s.nextExpire = s.expire(now)
	}
	cap := s.nextExpire.Sub(now) + time.Millisecond
	if s.held(now) {
		d := time.Until(time.UnixMicro(s.pauseUntil))
		if g := time.Until(s.nextGrant); g > d {
			d = g
		}
		s.mu.Unlock()
		return min(max(d, time.Millisecond), cap), true
	}
	t := s.pick()
	s.mu.Unlock()
	if t == nil {
		return -1, true
	}
	// The store call runs unlocked; a Cancel meanwhile marks t ended.
	ok, retry := s.tryGrant(t)
	if !ok {
		if retry > 0 {
			return min(retry, cap), true
		}
		// A full concurrency set (or a store error): wait for a release
		// here, or poll for one held elsewhere.
		return min(leasePoll, cap), true
	}
	now = time.Now()
	s.mu.Lock()
	if t.state.Load() != ticketWaiting {
		// Cancelled while its capacity was being reserved: give it back.
		s.mu.Unlock()
		if t.store != nil {
			_ = t.store.Cancel(context.Background(), &t.req)
		}
		return 0, true
	}
	s.served(t)
	s.pace(t, now)
	t.Waited = now.Sub(t.enqueued)
	t.state.Store(ticketGranted)
	s.mu.Unlock()
	s.granted(t, now)
	s.o.Metrics.waiting(t.Tier, -1)
	s.o.Metrics.outcome(t.Tier, "served")
	s.o.Metrics.wait(t.Tier, t.Waited)
	close(t.ready)
	return 0, true
}

// expire ends the tickets whose deadline passed and returns the earliest
// deadline left (now + an hour when none). s.mu held.
func (s *Scheduler) expire(now time.Time) time.Time {
	var late []*Ticket
	next := now.Add(time.Hour)
	for _, lv := range s.levels {
		for _, f := range lv.flows {
			for t := f.head; t != nil; t = t.next {
				if now.After(t.Deadline) {
					late = append(late, t)
				} else if t.Deadline.Before(next) {
					next = t.Deadline
				}
			}
		}
	}
	for _, t := range late {
		s.endWaiting(t, ErrExpired)
	}
	return next
}

// endWaiting fails a waiting ticket. s.mu held.
func (s *Scheduler) endWaiting(t *Ticket, err error) {
	s.remove(t)
	t.state.Store(ticketEnded)
	t.err = err
	t.Waited = time.Since(t.enqueued)
	s.o.Metrics.waiting(t.Tier, -1)
	if err == ErrExpired {
		s.o.Metrics.outcome(t.Tier, "expired")
	} else {
		s.o.Metrics.outcome(t.Tier, "shutdown")
	}
	close(t.ready)
}

func (s *Scheduler) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.levels) > 0 {
		f := s.levels[0].flows[0]
		s.endWaiting(f.head, ErrClosed)
	}
}

// CountsTokens reports whether the budget counts tokens, so tickets need
// a token estimate.
func (s *Scheduler) CountsTokens() bool { return s.tokens }

// NeedsID reports whether tickets need an ID (it names their concurrency
// leases).
func (s *Scheduler) NeedsID() bool { return s.hasLeases }
