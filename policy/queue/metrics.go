package queue

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the schedulers' Prometheus collectors, shared by every
// upstream's Scheduler. Label values come from configuration only (tier
// and upstream names). A nil *Metrics records nothing.
type Metrics struct {
	depth    *prometheus.GaugeVec
	waitHist *prometheus.HistogramVec
	outcomes *prometheus.CounterVec
	grants   *prometheus.CounterVec
	inFlight *prometheus.GaugeVec
	factor   *prometheus.GaugeVec
	breaker  *prometheus.GaugeVec
	slots    *prometheus.CounterVec
}

// WaitBuckets are the queue wait histogram's bounds, in seconds.
var WaitBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120}

// NewMetrics registers the queue's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_queue_depth",
			Help: "Requests waiting, by stage (user: for the user's own budget; provider: for the upstream's capacity) and tier.",
		}, []string{"stage", "tier"}),
		waitHist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_queue_wait_seconds",
			Help:    "Time requests waited before they were forwarded, by stage and tier (only requests that waited).",
			Buckets: WaitBuckets,
		}, []string{"stage", "tier"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_queue_outcomes_total",
			Help: "Ends of waits, by stage, tier and outcome: served (after waiting), rejected (up front), expired (waited past max wait), abandoned (client left), shutdown.",
		}, []string{"stage", "tier", "outcome"}),
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_grants_total",
			Help: "Requests granted the upstream's capacity (budgeted upstreams only).",
		}, []string{"upstream"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_upstream_budget_in_flight",
			Help: "Granted requests of this replica not yet finished, per budgeted upstream.",
		}, []string{"upstream"}),
		factor: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_upstream_drain_factor",
			Help: "Share of the configured budget the upstream is drained at (1 = full; lowered by upstream 429/503, AIMD).",
		}, []string{"upstream"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_upstream_breaker_state",
			Help: "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
		}, []string{"upstream"}),
	}
	m.slots = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_retry_slots_total",
		Help: "Retry slots of requests the provider's capacity rejected, by outcome: booked (the retry-after points at it), claimed (the user's retry came in time and went ahead of newcomers), expired (nobody came), refused (the wait was over 60 s: no slot, x-should-retry: false).",
	}, []string{"upstream", "outcome"})
	reg.MustRegister(m.depth, m.waitHist, m.outcomes, m.grants, m.inFlight, m.factor, m.breaker, m.slots)
	return m
}

// Stages of waiting, the "stage" label.
const (
	StageUser     = "user"
	StageProvider = "provider"
)

// Waiting adds d to the depth gauge of a stage and tier.
func (m *Metrics) Waiting(stage, tier string, d float64) {
	if m != nil {
		m.depth.WithLabelValues(stage, tier).Add(d)
	}
}

// Outcome counts the end of a wait.
func (m *Metrics) Outcome(stage, tier, outcome string) {
	if m != nil {
		m.outcomes.WithLabelValues(stage, tier, outcome).Inc()
	}
}

// Wait observes a wait that ended in service.
func (m *Metrics) Wait(stage, tier string, d time.Duration) {
	if m != nil {
		m.waitHist.WithLabelValues(stage, tier).Observe(d.Seconds())
	}
}

// Breaker sets an upstream's breaker state gauge.
func (m *Metrics) Breaker(upstream string, state int) {
	if m != nil {
		m.breaker.WithLabelValues(upstream).Set(float64(state))
	}
}

// ForgetTier drops the wait histogram and outcome series of a tier the
// policy no longer has (call it after a reload that removed the tier).
// The depth gauge's series stay: requests of the tier still waiting will
// take themselves off it, and a deleted gauge would come back negative.
func (m *Metrics) ForgetTier(tier string) {
	if m == nil || tier == "" {
		return
	}
	match := prometheus.Labels{"tier": tier}
	m.waitHist.DeletePartialMatch(match)
	m.outcomes.DeletePartialMatch(match)
}

func (m *Metrics) waiting(tier string, d float64) { m.Waiting(StageProvider, tier, d) }
func (m *Metrics) outcome(tier, o string)         { m.Outcome(StageProvider, tier, o) }
func (m *Metrics) wait(tier string, d time.Duration) {
	m.Wait(StageProvider, tier, d)
}
