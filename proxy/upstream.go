package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"sluice/config"
	"sluice/policy/limit"
	"sluice/policy/queue"
)

// upstream is one provider endpoint with its own connection pool.
type upstream struct {
	name  string
	azure bool
	// conns are the upstream's connections (conns.go).
	conns  lines
	scheme string
	host   string // Host header and URI host
	// basePath is the base URL's path without a trailing slash ("/v1").
	basePath string
	// authKey and authValue are the credential header ("Authorization",
	// "Bearer …" or "Api-Key", "…"); authValue is nil when no key is set.
	authKey, authValue []byte
	// keyValues are the credential values of a key pool, by the index the
	// scheduler grants; nil without a pool (authValue is the key).
	keyValues [][]byte
	// secrets are the raw keys of authValue and keyValues, scrubbed from
	// the upstream's error answers (scrub.go).
	secrets      [][]byte
	org, project []byte
	// sched is the upstream's fair queue and budget; breaker stops calls
	// while the upstream keeps failing.
	sched   *queue.Scheduler
	breaker *queue.Breaker
	// maxAttempts bounds the calls per request on 429/503 answers.
	maxAttempts int
	apiVersion  string

	// duration observes the time from sending a request to the end of its
	// response, stream included, in seconds.
	duration prometheus.Observer
	// errUnreachable and errTimeout count failed calls by cause.
	errUnreachable, errTimeout prometheus.Counter
	// staleFound counts pooled connections found closed by the upstream
	// before a request went out on them; staleResent the requests sent again
	// on a new connection because their reused one closed before any byte
	// of the answer.
	staleFound, staleResent prometheus.Counter
	// responses counts this upstream's HTTP answers by status class
	// (index statusClass).
	responses [len(statusClasses)]prometheus.Counter
	// maxQueue is upstreams[].max_queue, for sluice_upstream_queue_max.
	maxQueue int
	// keyIDs, keyAnswers and keyThrottled are the key pool's ids and the
	// answers each key got, all and 429/503 only, by the index the
	// scheduler grants; nil without a pool.
	keyIDs                   []string
	keyAnswers, keyThrottled []prometheus.Counter
}

// keyAnswered counts an HTTP answer to a call made with pool key k.
func (u *upstream) keyAnswered(k int, throttled bool) {
	if k < 0 || k >= len(u.keyAnswers) {
		return
	}
	u.keyAnswers[k].Inc()
	if throttled {
		u.keyThrottled[k].Inc()
	}
}

func newUpstream(c *config.Upstream, m *metrics, watch *watchSet) (*upstream, error) {
	u, err := url.Parse(c.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: cannot parse base_url: %w", c.Name, err)
	}
	tls := u.Scheme == "https"
	addr := u.Host
	if u.Port() == "" {
		if tls {
			addr += ":443"
		} else {
			addr += ":80"
		}
	}
	up := &upstream{
		name:       c.Name,
		azure:      c.Type == config.TypeAzure,
		scheme:     u.Scheme,
		host:       u.Host,
		basePath:   strings.TrimSuffix(u.EscapedPath(), "/"),
		apiVersion: c.APIVersion,
	}
	if c.APIKey != "" {
		if c.AuthHeader == "api-key" {
			up.authKey, up.authValue = []byte("Api-Key"), []byte(c.APIKey)
		} else {
			up.authKey, up.authValue = []byte("Authorization"), []byte("Bearer "+c.APIKey)
		}
	}
	for _, k := range c.Keys {
		if up.authKey == nil {
			up.authKey = []byte("Authorization")
			if c.AuthHeader == "api-key" {
				up.authKey = []byte("Api-Key")
			}
		}
		v := []byte(k.APIKey)
		if c.AuthHeader != "api-key" {
			v = []byte("Bearer " + k.APIKey)
		}
		up.keyValues = append(up.keyValues, v)
	}
	up.secrets = secretsOf(append([][]byte{up.authValue}, up.keyValues...)...)
	up.maxAttempts = c.MaxAttempts
	if c.Organization != "" {
		up.org = []byte(c.Organization)
	}
	if c.Project != "" {
		up.project = []byte(c.Project)
	}
	dial, tlsConfig, err := upstreamDialer(c, u)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", c.Name, err)
	}
	if tls {
		tlsConfig = clientTLS(tlsConfig, u.Hostname())
	}
	t := c.Timeouts
	up.conns = lines{watch: watch, max: c.MaxConns, perFlow: c.MaxConnsPerUser, wait: c.MaxConnWait, idleTimeout: c.IdleConnTimeout,
		addr: addr, dial: dial, tlsConfig: tlsConfig, connect: t.Connect,
		firstByte: t.FirstByte, idleRead: t.Idle, total: t.Total}
	up.duration = m.upstreamDuration.WithLabelValues(c.Name)
	up.errUnreachable = m.upstreamErrors.WithLabelValues(c.Name, "unreachable")
	up.errTimeout = m.upstreamErrors.WithLabelValues(c.Name, "timeout")
	up.staleFound = m.upstreamStale.WithLabelValues(c.Name, "before_send")
	up.staleResent = m.upstreamStale.WithLabelValues(c.Name, "after_send")
	up.maxQueue = c.MaxQueue
	for i, class := range statusClasses {
		up.responses[i] = m.upstreamResponses.WithLabelValues(c.Name, class)
	}
	for _, k := range c.Keys {
		up.keyIDs = append(up.keyIDs, k.ID)
		up.keyAnswers = append(up.keyAnswers, m.upstreamKeyAnswers.WithLabelValues(c.Name, k.ID))
		up.keyThrottled = append(up.keyThrottled, m.upstreamKeyThrottled.WithLabelValues(c.Name, k.ID))
	}
	return up, nil
}

// do sends req to u on one of its connections, one of those the user flow
// may hold, and reads the answer: its head, and its body unless
// resp.StreamBody. While the call waits for its
// answer the client's socket client is watched (nil: not watched): when the
// client leaves, the call's connection is closed, so the upstream stops
// work nobody will read, unless cc's followers still want the answer.
//
// A pooled connection is reused only while younger than idleTimeout and
// not closed by the upstream; a request whose reused connection was closed
// before any byte of the answer arrived goes out again on a new one.
//
// When the answer's body is still to be read (resp.BodyStream() != nil) the
// returned line is the caller's until it closes the body stream and gives
// the line back with u.conns.put; otherwise it is back in the pool.
func (u *upstream) do(req *fasthttp.Request, resp *fasthttp.Response, flow string, client syscall.RawConn, cc *cacheCall) (*line, error) {
	l, err := u.conns.get(flow)
	if err != nil {
		return nil, err
	}
	switch l.staleness(time.Now()) {
	case "closed_idle":
		u.staleFound.Inc()
		l.close()
	case "idle_timeout":
		l.close()
	}
	l.watch(client, cc)
	reused := l.nc != nil
	err = l.roundTrip(req, resp)
	if err != nil && l.closedBeforeAnswer(reused, err) {
		u.staleResent.Inc()
		err = l.roundTrip(req, resp) // the failed connection is closed: this one is new
	}
	l.unwatch()
	gone := l.gone.Load() // the watcher closed the connection
	if err != nil && gone {
		err = errClientGone
	}
	if err != nil || resp.BodyStream() == nil {
		u.conns.put(l, err == nil && !gone)
		return nil, err
	}
	return l, nil
}

// clientTLS is the TLS configuration of an https upstream named host: c (or
// the defaults) with the server name to verify and a session cache, so a
// connection made after an idle close resumes the session.
func clientTLS(c *tls.Config, host string) *tls.Config {
	if c == nil {
		c = &tls.Config{}
	} else {
		c = c.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if c.ClientSessionCache == nil {
		c.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	return c
}

// setURI points req at this upstream: the client's path after /v1 is
// appended to the base path (OpenAI-compatible servers), or mapped onto
// Azure's deployment URLs. The client's query string is kept.
func (u *upstream) setURI(req *fasthttp.Request, ep endpoint, clientPath, query []byte, deployment string) {
	uri := req.URI()
	uri.SetScheme(u.scheme)
	uri.SetHost(u.host)
	rest := clientPath[len("/v1"):]
	b := uri.Path()[:0]
	if !u.azure {
		b = append(append(b, u.basePath...), rest...)
		uri.SetPathBytes(b)
		uri.SetQueryStringBytes(query)
		return
	}
	b = append(b, u.basePath...)
	switch ep {
	case epChat, epCompletions, epEmbeddings:
		b = append(b, "/openai/deployments/"...)
		b = append(b, url.PathEscape(deployment)...)
	default:
		b = append(b, "/openai"...)
	}
	b = append(b, rest...)
	uri.SetPathBytes(b)
	uri.SetQueryStringBytes(query)
	uri.QueryArgs().Set("api-version", u.apiVersion)
}

// setCredentials puts the upstream's key (key: the pool index granted) and
// organization on req. The client's own credentials were already stripped
// by copyRequestHeaders.
func (u *upstream) setCredentials(req *fasthttp.Request, key int) {
	if key < len(u.keyValues) {
		req.Header.SetBytesKV(u.authKey, u.keyValues[key])
	} else if u.authValue != nil {
		req.Header.SetBytesKV(u.authKey, u.authValue)
	}
	if u.org != nil {
		req.Header.SetBytesV("OpenAI-Organization", u.org)
	}
	if u.project != nil {
		req.Header.SetBytesV("OpenAI-Project", u.project)
	}
}

// classify maps a failed upstream call to the error clients see and counts
// it: timeouts are 504, anything else (refused, reset, DNS, pool
// exhausted) is 502.
func (u *upstream) classify(err error) errKind {
	var de *dialError
	if errors.As(err, &de) {
		u.errUnreachable.Inc()
		return errUpstreamUnreachable
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, fasthttp.ErrTimeout) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		u.errTimeout.Inc()
		return errUpstreamTimeout
	}
	u.errUnreachable.Inc()
	return errUpstreamUnreachable
}

// dialError marks a failure to connect, so it is never mistaken for a
// timeout waiting for an answer.
type dialError struct{ err error }

func (e *dialError) Error() string { return "cannot connect to upstream: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// timedConn enforces the upstream timeouts on the connection itself: each
// Read gets a deadline of FirstByte (no byte of the answer yet) or Idle
// (since the last byte), capped by Total since the request was sent. A
// per-read deadline is what lets a long stream run while a stalled one is
// cut; fasthttp's own ReadTimeout is one deadline for the whole response.
type timedConn struct {
	net.Conn
	firstByte, idle, total time.Duration
	// reading reports that the current exchange has started reading; the
	// next Write begins a new exchange.
	reading bool
	// gotByte reports that the current answer has sent at least one byte.
	gotByte bool
	// end is the Total deadline of the current exchange.
	end time.Time
	// deadline is the read deadline last set on Conn.
	deadline time.Time
	// line is the line the connection belongs to (conns.go); nil in tests.
	line *line
	// plain turns the deadlines off (a TLS handshake, bounded by its own).
	plain bool
}

func (c *timedConn) Write(p []byte) (int, error) {
	if c.plain {
		return c.Conn.Write(p)
	}
	if c.reading || c.end.IsZero() {
		c.reading, c.gotByte = false, false
		c.end = time.Now().Add(c.total)
		if c.line != nil && c.line.gone.Load() {
			return 0, errClientLeft
		}
	}
	return c.Conn.Write(p)
}

func (c *timedConn) Read(p []byte) (int, error) {
	if c.plain {
		return c.Conn.Read(p)
	}
	c.reading = true
	wait := c.idle
	if !c.gotByte {
		wait = c.firstByte
	}
	d := time.Now().Add(wait)
	if d.After(c.end) {
		d = c.end
	}
	// Moving the deadline re-arms a runtime timer on every read; a deadline
	// already set no later than d and within wait/64 of it is kept (the cut
	// comes at most 1.6 % early), which on a busy keep-alive connection is
	// most reads.
	if diff := d.Sub(c.deadline); diff < 0 || diff > wait/64 || c.deadline.IsZero() {
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
		c.deadline = d
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.gotByte = true
	}
	return n, err
}

// newBreaker builds an upstream's circuit breaker; its state changes are
// logged and exported.
func (s *Server) newBreaker(c *config.Upstream) *queue.Breaker {
	b := c.Breaker
	name := c.Name
	s.qm.Breaker(name, queue.BreakerClosed)
	return queue.NewBreaker(queue.BreakerOptions{Ratio: b.FailureRatio, MinCalls: b.MinCalls, Window: b.Window, Cooldown: b.Cooldown},
		func(state int) {
			s.qm.Breaker(name, state)
			switch state {
			case queue.BreakerOpen:
				s.log.Error("upstream breaker open: calls stop for the cooldown", "upstream", name)
			case queue.BreakerClosed:
				s.log.Info("upstream breaker closed: the upstream answers again", "upstream", name)
			}
		})
}

// newScheduler builds an upstream's fair queue from its configuration.
func newScheduler(c *config.Upstream, o *Options) *queue.Scheduler {
	budget := func(b config.Budget) queue.Budget {
		return queue.Budget{RPM: b.RPM, RPMBurst: b.RPMBurst, TPM: b.TPM, TPMBurst: b.TPMBurst, Concurrent: b.Concurrent}
	}
	keys := []queue.Key{{ID: "default", Weight: 1}}
	if len(c.Keys) > 0 {
		keys = keys[:0]
		for _, k := range c.Keys {
			keys = append(keys, queue.Key{ID: k.ID, Weight: k.Weight, Budget: budget(k.Budget)})
		}
	}
	store := o.BudgetStore
	if store == nil {
		// A budget has a fixed handful of keys: no sweeper goroutine needed.
		store = limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	}
	// A shared store (Redis) keeps the retry slots' book too, so a user's
	// retry claims its slot on whichever replica it reaches.
	slots, _ := store.(limit.SlotBook)
	return queue.New(queue.Options{
		Name: c.Name, Budget: budget(c.Budget), Keys: keys,
		Store: store, Fallback: o.BudgetFallback, Replicas: o.Replicas, Slots: slots,
		LeaseTTL: o.Config.Limits.LeaseTTL, MaxQueue: c.MaxQueue,
		Metrics: o.QueueMetrics, Logger: o.Logger,
	})
}
