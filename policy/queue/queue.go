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
	"crypto/rand"
	"encoding/hex"
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
	// Name is the upstream's name; bucket keys are "up:{NAME}:..." (one
	// Redis Cluster hash tag for all the keys of one grant's script).
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
	// Slots, when set, is the book of retry slots the replicas share (the
	// Redis store is one), so a user's retry claims its slot on any
	// replica; nil keeps each replica's slots its own. Replica names this
	// replica in it; default a random id.
	Slots   limit.SlotBook
	Replica string
	// Metrics receives the scheduler's observations; nil records nothing.
	Metrics *Metrics
	// Logger receives store incidents. Default slog.Default().
	Logger *slog.Logger
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
	// bookings are the users' retry slots (slots.go) by flow, at most
	// MaxQueue; slots the same in the order of their times (with those
	// gone, until dropped from the front); booked is the latest slot's
	// time. service is the users' recent grants, kept while some user
	// waits (until contendedUntil); nextSweep is when both are next swept.
	bookings          map[string]*booking
	slots             []*booking
	booked            time.Time
	bookName, replica string // the shared book's name ("up:{NAME}") and ours in it
	service           map[string]*service
	contendedUntil    time.Time
	nextSweep         time.Time

	wake     chan struct{}
	released chan struct{}
	stop     chan struct{}
	done     chan struct{}
	// probing tracks the goroutine that checks a failing shared store
	// (probe); Close waits for it.
	probing  sync.WaitGroup
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
	// mSlots are sluice_retry_slots_total's children by outcome.
	mSlots    map[string]prometheus.Counter
	hasLeases bool // the budget has a concurrency limit: tickets need an ID
}

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
		bookings: make(map[string]*booking), service: make(map[string]*service),
		wake: make(chan struct{}, 1), released: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), rpmIdx: -1}
	s.bookName, s.replica = "up:{"+o.Name+"}", o.Replica
	if s.replica == "" {
		var id [6]byte
		_, _ = rand.Read(id[:])
		s.replica = hex.EncodeToString(id[:])
	}
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
		r, l := s.build("up:{"+o.Name+"}", o.Budget, 1)
		kr, kl := s.build("up:{"+o.Name+"}:k:"+k.ID, k.Budget, 1)
		if i == 0 && o.Budget.RPM > 0 {
			s.rpmIdx = 0
		}
		s.rules = append(s.rules, append(r, kr...))
		s.leases = append(s.leases, append(l, kl...))
		r, l = s.build("up:{"+o.Name+"}", o.Budget, o.Replicas)
		kr, kl = s.build("up:{"+o.Name+"}:k:"+k.ID, k.Budget, o.Replicas)
		s.fbRules = append(s.fbRules, append(r, kr...))
		s.fbLeases = append(s.fbLeases, append(l, kl...))
	}
	for _, l := range s.leases {
		s.hasLeases = s.hasLeases || len(l) > 0
	}
	if o.Metrics != nil {
		s.mGrants = o.Metrics.grants.WithLabelValues(o.Name)
		s.mInFlight = o.Metrics.inFlight.WithLabelValues(o.Name)
		s.mSlots = map[string]prometheus.Counter{}
		for _, out := range []string{SlotBooked, SlotClaimed, SlotExpired, SlotRefused} {
			s.mSlots[out] = o.Metrics.slots.WithLabelValues(o.Name, out)
		}
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
	s.probing.Wait()
}

// CountsTokens reports whether the budget counts tokens, so tickets need
// a token estimate.
func (s *Scheduler) CountsTokens() bool { return s.tokens }

// NeedsID reports whether tickets need an ID (it names their concurrency
// leases).
func (s *Scheduler) NeedsID() bool { return s.hasLeases }
