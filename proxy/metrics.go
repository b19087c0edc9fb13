package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// statusClasses are the values of the "status_class" label; index by
// status/100 (0 stands for "other").
var statusClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// statusCodes are the values of sluice_requests_total's "code" label: the
// statuses Sluice's error table sends and those OpenAI-compatible upstreams
// answer, and 499 (the client left before its answer). Any other status is
// counted as code "other" (with its class).
var statusCodes = [...]int{200, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 431, 499,
	500, 501, 502, 503, 504, 529}

// codeCount is the number of code slots: one per statusCodes entry, then
// "other" for each status class (0 to 5).
const codeCount = len(statusCodes) + len(statusClasses)

// codeSlots maps a status (100 to 599) to its code slot; built once.
var codeSlots = func() (t [600]uint8) {
	for st := range t {
		c := st / 100
		if c < 1 || c > 5 {
			c = 0
		}
		t[st] = uint8(len(statusCodes) + c)
	}
	for i, st := range statusCodes {
		t[st] = uint8(i)
	}
	return t
}()

// codeSlot returns the code slot of status; statuses outside 100 to 599
// are the "other" of class "other".
func codeSlot(status int) int {
	if status < 0 || status >= len(codeSlots) {
		return len(statusCodes)
	}
	return int(codeSlots[status])
}

// codeLabels returns a slot's code and status class label values.
func codeLabels(slot int) (code, class string) {
	if slot < len(statusCodes) {
		st := statusCodes[slot]
		return strconv.Itoa(st), statusClasses[st/100]
	}
	return "other", statusClasses[slot-len(statusCodes)]
}

// statusClass returns the index of status's class in statusClasses.
func statusClass(status int) int {
	c := status / 100
	if c < 1 || c > 5 {
		return 0
	}
	return c
}

// metrics holds the proxy's collectors. Every per-request handle is resolved
// at start, so the hot path never builds a label set.
type metrics struct {
	// requests counts finished requests by route, status code and status
	// class, indexed by codeSlot.
	requests [epCount][codeCount]prometheus.Counter
	// duration observes request time from arrival to the last byte, seconds.
	duration [epCount]prometheus.Observer
	// overhead observes the time Sluice adds: total minus upstream time (for
	// streams, up to the first event), seconds.
	overhead [epCount]prometheus.Observer
	// firstByte observes the time from arrival to the first stream event
	// sent to the client, seconds.
	firstByte [epCount]prometheus.Observer
	// disconnects counts clients that left before their answer was complete.
	disconnects [epCount]prometheus.Counter
	// inFlight is the number of requests being served, streams included.
	inFlight prometheus.Gauge
	// userWaiting counts the requests waiting for their user's slot (the
	// user stage of sluice_queue_depth), for sluice_requests_active.
	userWaiting atomic.Int64
	// answerBytes counts the JSON endpoints' answer bytes before
	// compression; wireBytes the same answers as sent, by coding.
	answerBytes [epCount]prometheus.Counter
	wireBytes   [epCount][encCount]prometheus.Counter
	// requestBytes counts the JSON endpoints' request bodies as read
	// (decompressed); requestWire the same bodies as received, by coding.
	requestBytes [epCount]prometheus.Counter
	requestWire  [epCount][encCount]prometheus.Counter

	// protocol counts requests fasthttp refused before the handler ran,
	// by protocolReason.
	protocol [protoCount]prometheus.Counter

	upstreamDuration *prometheus.HistogramVec
	upstreamErrors   *prometheus.CounterVec
	upstreamStale    *prometheus.CounterVec
	// upstreamThrottled counts 429/503 answers by upstream and status;
	// upstreamRetries the calls Sluice repeated after them.
	upstreamThrottled *prometheus.CounterVec
	upstreamRetries   *prometheus.CounterVec
	// upstreamKeyAnswers and upstreamKeyThrottled count the HTTP answers to
	// calls made with each key of an upstream's key pool, all and 429/503.
	upstreamKeyAnswers, upstreamKeyThrottled *prometheus.CounterVec
	// upstreamResponses counts the upstreams' HTTP answers by status class;
	// each upstream resolves its children at start.
	upstreamResponses *prometheus.CounterVec

	// streamDuration observes a stream from arrival to its last event,
	// seconds.
	streamDuration [epCount]prometheus.Observer
	// tokens counts the tokens answers reported in their usage, by
	// direction, tier and model group; children resolved once per tier and
	// group (both from configuration) in tokenPairs.
	tokens     *prometheus.CounterVec
	spend      *prometheus.CounterVec
	tokenMu    sync.RWMutex
	tokenPairs map[tokenKey]*tokenPair

	// routed counts routed requests by tier, model group, cache status and
	// status class; children resolved once per combination in routedBy.
	routed   *prometheus.CounterVec
	routedMu sync.RWMutex
	routedBy map[routedKey]prometheus.Counter
}

// protocolReason is why fasthttp refused a request before the handler ran.
type protocolReason int

const (
	protoBodyTooLarge protocolReason = iota
	protoHeadersTooLarge
	protoTimeout
	protoMalformed
	protoIncomplete
	protoUnauthenticatedBody
	protoCount
)

// protocolLabels are the values of sluice_protocol_errors_total's reason.
var protocolLabels = [protoCount]string{
	protoBodyTooLarge:    "body_too_large",
	protoHeadersTooLarge: "headers_too_large",
	protoTimeout:         "timeout",
	protoMalformed:       "malformed",
	protoIncomplete:      "incomplete",
	// A body over 64 KiB with no valid key: cut there, answered 401.
	protoUnauthenticatedBody: "unauthenticated_body",
}

// routedKey is one child of sluice_routed_requests_total.
type routedKey struct{ tier, group, cache, class string }

// tokenKey names one tier and model group.
type tokenKey struct{ tier, group string }

// tokenPair is the prompt and completion counters, and the spend counter,
// of one tier and group.
type tokenPair struct{ prompt, completion, spend prometheus.Counter }

// overheadBuckets resolve what a gateway adds: 25 µs to 50 ms.
var overheadBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3}

// latencyBuckets cover model calls: 5 ms to 5 min.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

func newMetrics(reg prometheus.Registerer, version string) *metrics {
	m := &metrics{}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_requests_total",
		Help: "Requests answered, by route, HTTP status code (a fixed list; others are \"other\") and status class.",
	}, []string{"route", "code", "status_class"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_request_duration_seconds",
		Help:    "Time from a request's arrival to its last byte sent, streams included.",
		Buckets: latencyBuckets,
	}, []string{"route"})
	overhead := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_overhead_seconds",
		Help:    "Time Sluice adds to a request: total minus upstream time (for streams, measured to the first event).",
		Buckets: overheadBuckets,
	}, []string{"route"})
	firstByte := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_stream_first_byte_seconds",
		Help:    "Time from a stream request's arrival to its first event sent to the client.",
		Buckets: latencyBuckets,
	}, []string{"route"})
	disconnects := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_client_disconnects_total",
		Help: "Clients that went away before their answer was complete.",
	}, []string{"route"})
	protocol := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_protocol_errors_total",
		Help: "Requests refused before routing because their HTTP was bad, by reason (body_too_large, headers_too_large, timeout, malformed, incomplete).",
	}, []string{"reason"})
	for r := range protoCount {
		m.protocol[r] = protocol.WithLabelValues(protocolLabels[r])
	}
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_requests_in_flight",
		Help: "Requests being served right now, open streams included.",
	})
	m.upstreamDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_upstream_duration_seconds",
		Help:    "Time from sending a request upstream to the end of its response, streams included.",
		Buckets: latencyBuckets,
	}, []string{"upstream"})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_errors_total",
		Help: "Upstream calls that failed without an HTTP answer, by cause (unreachable, timeout).",
	}, []string{"upstream", "reason"})
	m.upstreamStale = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_stale_conns_total",
		Help: "Pooled upstream connections the upstream had closed while idle: found before a request went out (stage before_send), or when the request's answer ended before its first byte, so the request was sent again on a new connection (after_send).",
	}, []string{"upstream", "stage"})
	m.upstreamThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_throttled_total",
		Help: "Upstream answers that asked Sluice to slow down (status 429 or 503).",
	}, []string{"upstream", "status"})
	m.upstreamKeyAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_key_answers_total",
		Help: "HTTP answers to calls made with each key of an upstream's key pool (upstreams[].keys; no series without a pool).",
	}, []string{"upstream", "key"})
	m.upstreamKeyThrottled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_key_throttled_total",
		Help: "Answers 429 or 503 to calls made with each key of an upstream's key pool: the key then rests for the answer's retry-after.",
	}, []string{"upstream", "key"})
	m.upstreamRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_retries_total",
		Help: "Upstream calls repeated after a 429/503 answer, within the request's max wait.",
	}, []string{"upstream"})
	m.upstreamResponses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_responses_total",
		Help: "HTTP answers of upstreams, by upstream and status class (retried and failed-over calls included).",
	}, []string{"upstream", "status_class"})
	answerBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_answer_bytes_total",
		Help: "Bytes of the JSON endpoints' answers before compression (streams: the events relayed).",
	}, []string{"route"})
	wireBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_answer_wire_bytes_total",
		Help: "Bytes of the JSON endpoints' answers as sent to clients, by content coding (identity, gzip, zstd).",
	}, []string{"route", "encoding"})
	requestBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_request_bytes_total",
		Help: "Bytes of the JSON endpoints' request bodies as read (after decompression).",
	}, []string{"route"})
	requestWire := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_request_wire_bytes_total",
		Help: "Bytes of the JSON endpoints' request bodies as received, by content coding (identity, gzip, zstd).",
	}, []string{"route", "encoding"})
	streamDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_stream_duration_seconds",
		Help:    "Time from a stream request's arrival to its last event sent (or the client gone).",
		Buckets: latencyBuckets,
	}, []string{"route"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_tokens_total",
		Help: "Tokens the upstreams' answers reported in their usage, by direction (prompt, completion), tier and model group (the matching routes[].model pattern).",
	}, []string{"direction", "tier", "model_group"})
	m.spend = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_spend_usd_total",
		Help: "What the upstreams' answers cost at the policy's prices, in USD, by tier and model group (the matching routes[].model pattern); cache hits cost nothing.",
	}, []string{"tier", "model_group"})
	m.tokenPairs = map[tokenKey]*tokenPair{}
	m.routed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_routed_requests_total",
		Help: "Requests routed to a model group, by tier, model group (the matching routes[].model pattern), cache status (hit, coalesced, miss, bypass, none) and status class.",
	}, []string{"tier", "model_group", "cache_status", "status_class"})
	m.routedBy = map[routedKey]prometheus.Counter{}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sluice_build_info",
		Help:        "Always 1; the version label names the running build.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	buildInfo.Set(1)

	for ep := range epCount {
		route := endpointLabels[ep]
		for slot := range codeCount {
			code, class := codeLabels(slot)
			m.requests[ep][slot] = requests.WithLabelValues(route, code, class)
		}
		m.duration[ep] = duration.WithLabelValues(route)
		m.overhead[ep] = overhead.WithLabelValues(route)
		m.disconnects[ep] = disconnects.WithLabelValues(route)
		if ep.compressible() {
			m.answerBytes[ep] = answerBytes.WithLabelValues(route)
			m.requestBytes[ep] = requestBytes.WithLabelValues(route)
			for enc := range encCount {
				m.wireBytes[ep][enc] = wireBytes.WithLabelValues(route, encodingNames[enc])
				m.requestWire[ep][enc] = requestWire.WithLabelValues(route, encodingNames[enc])
			}
		}
		if ep.streams() {
			m.firstByte[ep] = firstByte.WithLabelValues(route)
			m.streamDuration[ep] = streamDuration.WithLabelValues(route)
		}
	}
	reg.MustRegister(requests, duration, overhead, firstByte, disconnects, m.inFlight,
		m.upstreamDuration, m.upstreamErrors, m.upstreamStale, m.upstreamThrottled, m.upstreamKeyAnswers, m.upstreamKeyThrottled, m.upstreamRetries, m.upstreamResponses, answerBytes, wireBytes, requestBytes, requestWire, buildInfo,
		streamDuration, m.tokens, m.spend, m.routed, protocol)
	return m
}

// done records a finished request.
func (m *metrics) done(ep endpoint, status int, seconds float64) {
	m.requests[ep][codeSlot(status)].Inc()
	m.duration[ep].Observe(seconds)
}

// throttled counts an upstream's 429 or 503 answer.
func (m *metrics) throttled(upstream string, status int) {
	st := "429"
	if status == 503 {
		st = "503"
	}
	m.upstreamThrottled.WithLabelValues(upstream, st).Inc()
}

// retry counts a call repeated after a 429/503.
func (m *metrics) retry(upstream string) { m.upstreamRetries.WithLabelValues(upstream).Inc() }

// usedTokens counts the prompt and completion tokens of an answer's usage.
// Tiers and groups come from the configuration, so the children stay
// bounded; each pair is created once.
func (m *metrics) usedTokens(tier, group string, u usage, cost float64) {
	k := tokenKey{tier, group}
	m.tokenMu.RLock()
	p := m.tokenPairs[k]
	m.tokenMu.RUnlock()
	if p == nil {
		m.tokenMu.Lock()
		if p = m.tokenPairs[k]; p == nil {
			p = &tokenPair{m.tokens.WithLabelValues("prompt", tier, group), m.tokens.WithLabelValues("completion", tier, group),
				m.spend.WithLabelValues(tier, group)}
			m.tokenPairs[k] = p
		}
		m.tokenMu.Unlock()
	}
	p.prompt.Add(float64(u.prompt))
	p.completion.Add(float64(u.completion))
	if cost > 0 {
		p.spend.Add(cost)
	}
}

// routedRequest counts a routed request. Every label value comes from the
// configuration (tier, group) or a fixed list (cache status, status class),
// so the children stay bounded; each is created once.
func (m *metrics) routedRequest(tier, group, cacheStatus string, status int) {
	if cacheStatus == "" {
		cacheStatus = "none"
	}
	k := routedKey{tier, group, cacheStatus, statusClasses[statusClass(status)]}
	m.routedMu.RLock()
	c := m.routedBy[k]
	m.routedMu.RUnlock()
	if c == nil {
		m.routedMu.Lock()
		if c = m.routedBy[k]; c == nil {
			c = m.routed.WithLabelValues(k.tier, k.group, k.cache, k.class)
			m.routedBy[k] = c
		}
		m.routedMu.Unlock()
	}
	c.Inc()
}

// forgetTiers deletes the per-tier series (tokens, spend, routed requests)
// of every tier that keep does not have, and their cached handles: a tier
// removed by a reload stops being exported instead of living forever. A
// request still finishing under the old policy may create its child again;
// the next reload removes it.
func (m *metrics) forgetTiers(keep func(tier string) bool) {
	m.tokenMu.Lock()
	for k := range m.tokenPairs {
		if !keep(k.tier) {
			m.tokens.DeleteLabelValues("prompt", k.tier, k.group)
			m.tokens.DeleteLabelValues("completion", k.tier, k.group)
			m.spend.DeleteLabelValues(k.tier, k.group)
			delete(m.tokenPairs, k)
		}
	}
	m.tokenMu.Unlock()
	m.routedMu.Lock()
	for k := range m.routedBy {
		if !keep(k.tier) {
			m.routed.DeleteLabelValues(k.tier, k.group, k.cache, k.class)
			delete(m.routedBy, k)
		}
	}
	m.routedMu.Unlock()
}

// connCollector reports open connections at scrape time: the clients'
// (fasthttp's count of accepted, not yet closed connections) and each
// upstream's pool (busy and idle). Nothing on the request path updates it.
type connCollector struct {
	s              *Server
	clients, upstr *prometheus.Desc
	// queued and queueMax are each upstream's waiting requests and its
	// max_queue, read from its scheduler at scrape time.
	queued, queueMax *prometheus.Desc
}

func newConnCollector(s *Server) *connCollector {
	return &connCollector{s: s,
		clients: prometheus.NewDesc("sluice_client_connections",
			"Client connections open on the API listener, idle keep-alive ones included.", nil, nil),
		upstr: prometheus.NewDesc("sluice_upstream_connections",
			"Connections open to an upstream, in use or idle in its pool (idle ones close after upstreams[].idle_conn_timeout, 4 s by default).", []string{"upstream"}, nil),
		queued: prometheus.NewDesc("sluice_upstream_queue_length",
			"Requests of this replica waiting for an upstream's capacity (its fair queue), all tiers.", []string{"upstream"}, nil),
		queueMax: prometheus.NewDesc("sluice_upstream_queue_max",
			"An upstream's upstreams[].max_queue: beyond it new requests are refused (429) instead of queued.", []string{"upstream"}, nil),
	}
}

func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.clients
	ch <- c.upstr
	ch <- c.queued
	ch <- c.queueMax
}

func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.clients, prometheus.GaugeValue, float64(c.s.srv.GetOpenConnectionsCount()))
	for _, up := range c.s.upstreams {
		ch <- prometheus.MustNewConstMetric(c.upstr, prometheus.GaugeValue, float64(up.conns.open()), up.name)
		if up.sched != nil {
			ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(up.sched.Waiting()), up.name)
			ch <- prometheus.MustNewConstMetric(c.queueMax, prometheus.GaugeValue, float64(up.maxQueue), up.name)
		}
	}
}

// newActiveGauge is sluice_requests_active: requests in flight minus those
// waiting for a budget (their user's slot, or the upstream's fair queue,
// as queued() counts). Unlike sluice_requests_in_flight it does not grow
// when the provider is the bottleneck, so an autoscaler may use it: more
// replicas help only the requests Sluice itself is working on. Read at
// scrape time only.
func (m *metrics) newActiveGauge(queued func() int64) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_requests_active",
		Help: "Requests in flight that are not waiting for a budget (user slot or upstream fair queue): the autoscaling signal.",
	}, func() float64 {
		var d dto.Metric
		if m.inFlight.Write(&d) != nil || d.Gauge == nil {
			return 0
		}
		return max(0, d.Gauge.GetValue()-float64(m.userWaiting.Load()+queued()))
	})
}

// queuedAtProviders is the number of requests waiting in the upstreams'
// fair queues.
func (s *Server) queuedAtProviders() int64 {
	var n int64
	for _, up := range s.upstreams {
		if up.sched != nil {
			n += int64(up.sched.Waiting())
		}
	}
	return n
}
