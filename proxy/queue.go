package proxy

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/config"
	"sluice/policy"
	"sluice/policy/limit"
	"sluice/policy/queue"
)

// Waiting: a request over its user's budget waits for the slot its bucket
// reserved (policy.Admission.Wait); then it waits for its upstream's
// capacity in the upstream's fair queue (queue.Scheduler). Both waits end
// early when the client hangs up (the reservation is given back, no
// upstream call is made) or the server drains (503).

// waitCheck is how often a waiting request checks that its client is still
// connected (about half a microsecond per check).
const waitCheck = 50 * time.Millisecond

// waitEnd is why a wait ended.
type waitEnd uint8

const (
	waitDone     waitEnd = iota // the slot came, or the ticket is ready
	waitGone                    // the client hung up
	waitDraining                // the server is shutting down
)

// keepalive sends SSE comments to a stream client that waits in a queue,
// once every period (see serveQueuedStream).
type keepalive struct {
	w      io.Writer // each Write is one flushed chunk
	every  time.Duration
	next   time.Time
	status func() (position int, eta time.Duration)
}

// ping writes ": queued position=N eta=Xs" when one is due, and reports
// false when the client can no longer be written to.
func (k *keepalive) ping(now time.Time) bool {
	if k == nil || now.Before(k.next) {
		return true
	}
	k.next = now.Add(k.every)
	pos, eta := 0, time.Duration(0)
	if k.status != nil {
		pos, eta = k.status()
	}
	var b [64]byte
	line := append(b[:0], ": queued position="...)
	line = strconv.AppendInt(line, int64(pos), 10)
	line = append(line, " eta="...)
	line = strconv.AppendFloat(line, eta.Seconds(), 'f', 1, 64)
	line = append(line, "s\n\n"...)
	_, err := k.w.Write(line)
	return err == nil
}

// await blocks until ready is closed (or, when ready is nil, until d has
// passed), the client hangs up, or the server drains. With k it sends the
// client keep-alive comments meanwhile.
func (s *Server) await(ctx *fasthttp.RequestCtx, d time.Duration, ready <-chan struct{}, k *keepalive) waitEnd {
	raw := rawConn(ctx.Conn())
	var timeout <-chan time.Time
	if ready == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	tick := time.NewTicker(waitCheck)
	defer tick.Stop()
	for {
		select {
		case <-ready:
			return waitDone
		case <-timeout:
			return waitDone
		case <-s.drain:
			return waitDraining
		case now := <-tick.C:
			if (raw != nil && peerClosed(raw)) || !k.ping(now) {
				return waitGone
			}
		}
	}
}

// maxWait is how long the request may wait: its tier's max_wait, shortened
// (never lengthened) by X-Sluice-Max-Wait (seconds, or a Go duration such
// as "1500ms"). It answers 400 for an unreadable header.
func maxWait(ctx *fasthttp.RequestCtx, t *policy.Tier) (time.Duration, bool) {
	var limit time.Duration
	if t != nil {
		limit = t.Queue.MaxWait
	}
	h := ctx.Request.Header.Peek("X-Sluice-Max-Wait")
	if len(h) == 0 {
		return limit, true
	}
	d, ok := parseSeconds(h)
	if !ok {
		writeError(ctx, errInvalidRequest, "X-Sluice-Max-Wait", "X-Sluice-Max-Wait must be a number of seconds or a duration such as 1500ms.")
		return 0, false
	}
	return min(d, limit), true
}

// parseSeconds reads a header value in seconds ("2.5") or as a Go duration
// ("1500ms").
func parseSeconds(h []byte) (time.Duration, bool) {
	if f, err := strconv.ParseFloat(string(h), 64); err == nil && f >= 0 && f < 1e9 {
		return time.Duration(f * float64(time.Second)), true
	}
	if d, err := time.ParseDuration(string(h)); err == nil && d >= 0 {
		return d, true
	}
	return 0, false
}

// failure is an error answer decided before any byte of an answer went
// out: written as an HTTP error, or, for a stream whose 200 was already
// sent while it waited, as an SSE error event.
type failure struct {
	kind  errKind
	msg   string
	retry time.Duration // > 0: retry-after and retry-after-ms
	// position is the queue position to report (x-sluice-queue-position);
	// -1 for none.
	position int
	gone     bool // the client hung up: connection closed, nobody reads
}

// write answers ctx with f.
func (f *failure) write(ctx *fasthttp.RequestCtx) {
	if f.gone || f.kind == errShuttingDown {
		ctx.SetConnectionClose()
	}
	if f.retry > 0 {
		setRetryAfter(&ctx.Response.Header, f.retry)
	}
	if f.position >= 0 {
		var b [20]byte
		ctx.Response.Header.SetBytesV("X-Sluice-Queue-Position", strconv.AppendInt(b[:0], int64(f.position), 10))
	}
	writeError(ctx, f.kind, "", f.msg)
}

// event writes f as one SSE event, `data: {"error":{...}}`, which the
// official SDKs raise as a stream error.
func (f *failure) event(w io.Writer) {
	b := append([]byte("data: "), appendError(nil, f.kind, "", f.msg)...)
	_, _ = w.Write(append(b, "\n\n"...))
}

// status is the HTTP status of f, for metrics.
func (f *failure) status() int { return statusTable[f.kind].status }

var (
	failGone     = &failure{kind: errClientClosed, msg: "The client closed the request while it waited.", position: -1, gone: true}
	failDraining = &failure{kind: errShuttingDown, msg: "Sluice is shutting down; retry the request.", retry: time.Second, position: -1}
)

// waitSlot waits for the future slot the user's buckets reserved. On a
// failure the reservation was given back.
func (s *Server) waitSlot(ctx *fasthttp.RequestCtx, x *exchange, k *keepalive) *failure {
	ad := x.adm
	s.qm.Waiting(queue.StageUser, x.tier, 1)
	start := time.Now()
	if k != nil {
		k.status = func() (int, time.Duration) { return ad.Queued, time.Until(start.Add(ad.Wait)) }
	}
	end := s.await(ctx, ad.Wait, nil, k)
	s.qm.Waiting(queue.StageUser, x.tier, -1)
	s.limiter.WaitEnded(ad)
	x.queueWait += time.Since(start)
	var f *failure
	switch end {
	case waitDone:
		s.qm.Outcome(queue.StageUser, x.tier, "served")
		s.qm.Wait(queue.StageUser, x.tier, time.Since(start))
		return nil
	case waitGone:
		s.qm.Outcome(queue.StageUser, x.tier, "abandoned")
		x.gone = true
		f = failGone
	default:
		s.qm.Outcome(queue.StageUser, x.tier, "shutdown")
		f = failDraining
	}
	s.limiter.Cancel(ctx, ad)
	x.adm = nil
	return f
}

// claim is what a request asks of its upstream's queue.
type claim struct {
	flow     string // the user's bucket scope: the fairness unit
	weight   int64
	priority int
	tokens   int64
	deadline time.Time
}

// acquire waits for the upstream's capacity; on success x.ticket holds the
// grant.
func (s *Server) acquire(ctx *fasthttp.RequestCtx, x *exchange, up *upstream, k *keepalive) *failure {
	t, f := s.enqueue(ctx, x, up)
	if t == nil {
		return f
	}
	return s.awaitTicket(ctx, x, up, t, k)
}

// enqueue asks the upstream's queue for capacity: granted at once (x.ticket
// set; nil, nil), queued (the ticket to wait for), or refused (the failure).
func (s *Server) enqueue(ctx *fasthttp.RequestCtx, x *exchange, up *upstream) (*queue.Ticket, *failure) {
	t := queue.NewTicket()
	c := &x.claim
	t.Flow, t.Tier, t.Weight, t.Priority, t.Tokens, t.Deadline = c.flow, x.tier, c.weight, c.priority, c.tokens, c.deadline
	if up.sched.NeedsID() {
		t.ID = string(ctx.Response.Header.Peek("X-Request-Id"))
	}
	now, err := up.sched.Acquire(t)
	if now {
		x.ticket = t
		return nil, nil
	}
	if err != nil {
		f := rejectQueued(t, err)
		queue.Release(t)
		return nil, f
	}
	return t, nil
}

// awaitTicket waits for a queued ticket; on success x.ticket holds it.
func (s *Server) awaitTicket(ctx *fasthttp.RequestCtx, x *exchange, up *upstream, t *queue.Ticket, k *keepalive) *failure {
	sch := up.sched
	if k != nil {
		start := time.Now()
		k.status = func() (int, time.Duration) { return t.Position, max(t.ETA-time.Since(start), 0) }
	}
	end := s.await(ctx, 0, t.Ready(), k)
	switch end {
	case waitGone:
		sch.Cancel(t) // gives back the capacity when it was granted as the client left
		x.gone = true
		return failGone
	case waitDraining:
		sch.Cancel(t)
		return failDraining
	}
	x.queueWait += t.Waited
	if err := t.Err(); err != nil {
		return rejectQueued(t, err)
	}
	x.ticket = t
	return nil
}

// rejectQueued is the answer to a request the upstream's queue turned away.
func rejectQueued(t *queue.Ticket, err error) *failure {
	if errors.Is(err, queue.ErrClosed) {
		return failDraining
	}
	retry := t.ETA
	if errors.Is(err, queue.ErrExpired) || retry <= 0 {
		retry = time.Second
	}
	f := &failure{kind: errProviderBusy, retry: retry, position: t.Position}
	switch {
	case errors.Is(err, queue.ErrQueueFull):
		f.msg = "The provider's queue is full. Please try again in " + retry.Round(time.Millisecond).String() + "."
	case errors.Is(err, queue.ErrExpired):
		f.msg = "The request waited its maximum wait for the provider's capacity. Please try again in " + retry.Round(time.Millisecond).String() + "."
	default:
		f.msg = "The provider is at capacity: the expected wait of " + retry.Round(time.Millisecond).String() +
			" (position " + strconv.Itoa(t.Position) + ") is longer than this request's maximum wait. Please try again later."
	}
	return f
}

// upstreamRetryAfter is how long an upstream's 429/503 asks to wait:
// retry-after-ms, else retry-after (seconds), else the sooner of
// x-ratelimit-reset-requests / -tokens (durations such as "1s", "6m0s"),
// else 0 (unknown).
func upstreamRetryAfter(h *fasthttp.ResponseHeader) time.Duration {
	if v := h.Peek("Retry-After-Ms"); len(v) > 0 {
		if ms, err := strconv.ParseFloat(string(v), 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v := h.Peek("Retry-After"); len(v) > 0 {
		if s, err := strconv.ParseFloat(string(v), 64); err == nil && s >= 0 {
			return time.Duration(s * float64(time.Second))
		}
		if t, err := time.Parse(time.RFC1123, string(v)); err == nil {
			return max(time.Until(t), 0)
		}
	}
	var best time.Duration
	for _, name := range []string{"X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens"} {
		if v := h.Peek(name); len(v) > 0 {
			if d, err := time.ParseDuration(string(bytes.TrimSpace(v))); err == nil && d > 0 && (best == 0 || d < best) {
				best = d
			}
		}
	}
	return best
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
	return queue.New(queue.Options{
		Name: c.Name, Budget: budget(c.Budget), Keys: keys,
		Store: store, Fallback: o.BudgetFallback, Replicas: o.Replicas,
		LeaseTTL: o.Config.Limits.LeaseTTL, MaxQueue: c.MaxQueue,
		Metrics: o.QueueMetrics, Logger: o.Logger,
	})
}

// keepaliveEvery is the period of the keep-alive comments a stream request
// asks for while it waits, X-Sluice-Queue-Keepalive (seconds, or a duration
// such as "500ms"; at least 100 ms), or 0 when it asks for none.
func keepaliveEvery(ctx *fasthttp.RequestCtx) time.Duration {
	h := ctx.Request.Header.Peek("X-Sluice-Queue-Keepalive")
	if len(h) == 0 {
		return 0
	}
	d, ok := parseSeconds(h)
	if !ok || d <= 0 {
		return 0
	}
	return max(d, 100*time.Millisecond)
}

// queuedStream is a stream request that waits with its 200 already sent.
// It is the response's body stream: fasthttp calls WriteTo on the
// connection's goroutine (so ctx stays valid throughout), each Write one
// flushed chunk, then CloseWithError.
type queuedStream struct {
	s     *Server
	ctx   *fasthttp.RequestCtx
	x     exchange
	route policy.Route
	body  []byte
	cc    *cacheCall
	every time.Duration
	reqID []byte
	relay *relay // the upstream's stream, once it began
	// pending is a ticket already queued for up (with deployment), when
	// the wait was found at the provider's queue; nil: the user's slot
	// comes first, and the queue after.
	pending    *queue.Ticket
	up         *upstream
	deployment string
}

// serveQueuedStream answers a stream request that must wait and asked for
// keep-alives: the 200 and the SSE headers go out at once, then, while the
// request waits for its user's slot and the provider's capacity, a comment
// ": queued position=N eta=Xs" every period (SSE clients, the official SDKs
// included, ignore comments; proxies see traffic). When it is granted, the
// upstream's events follow. Whatever fails after the 200 went out — the
// wait (rejected, expired, shutting down) or the upstream (an error answer,
// no answer) — reaches the client as one SSE event carrying the
// OpenAI-shaped error object, `data: {"error":{...}}`, which the official
// SDKs raise as a stream error; then the stream ends without [DONE].
func (s *Server) serveQueuedStream(ctx *fasthttp.RequestCtx, x *exchange, route *policy.Route, body []byte,
	cc *cacheCall, every time.Duration, pending *queue.Ticket, up *upstream, deployment string) bool {
	q := &queuedStream{s: s, ctx: ctx, x: *x, route: *route, body: body, cc: cc, every: every,
		pending: pending, up: up, deployment: deployment}
	q.reqID = append(q.reqID, ctx.Response.Header.Peek("X-Request-Id")...)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("text/event-stream; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-cache")
	ctx.Response.Header.Set("X-Sluice-Queued", "1")
	if x.adm != nil {
		setRateLimitHeaders(ctx, x.adm)
	}
	ctx.Response.ImmediateHeaderFlush = true
	ctx.SetBodyStream(q, -1)
	return true
}

// SupportsBodyWriteTo tells fasthttp that WriteTo replaces Read.
func (q *queuedStream) SupportsBodyWriteTo() bool { return true }

// Read is never used (WriteTo is).
func (q *queuedStream) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// WriteTo waits, calls the upstream and relays its stream into w.
func (q *queuedStream) WriteTo(w io.Writer) (int64, error) {
	s, ctx, x := q.s, q.ctx, &q.x
	k := &keepalive{w: w, every: q.every}
	fail := func(f *failure) (int64, error) {
		if x.adm != nil {
			s.limiter.Cancel(ctx, x.adm)
			x.adm = nil
		}
		q.cc.abandon()
		if !f.gone {
			f.event(w)
		}
		x.status = f.status()
		s.finish(q.reqID, x, time.Now(), x.gone, -1)
		return 0, nil
	}
	// The first comment goes out at once, with the headers.
	if !k.ping(time.Now()) {
		x.gone = true
		return fail(failGone)
	}
	up, deployment := q.up, q.deployment
	var f *failure
	if q.pending != nil {
		f = s.awaitTicket(ctx, x, up, q.pending, k)
	} else {
		if x.adm != nil && x.adm.Wait > 0 {
			f = s.waitSlot(ctx, x, k)
		}
		if f == nil {
			up, deployment, f = s.pickUpstreamFailure(&q.route)
		}
		if f == nil {
			f = s.acquire(ctx, x, up, k)
		}
	}
	if f != nil {
		return fail(f)
	}
	resp, f := s.call(ctx, x, up, q.body, deployment, true, k)
	if f != nil {
		return fail(f)
	}
	if resp.StatusCode() != fasthttp.StatusOK || resp.BodyStream() == nil {
		// An upstream error answer after our 200: its error object becomes
		// the stream's error event, on one line.
		var body []byte
		if resp.BodyStream() != nil {
			body, _ = io.ReadAll(io.LimitReader(resp.BodyStream(), 64<<10))
			_ = resp.CloseBodyStream()
			x.releaseLine(false)
		} else {
			body = resp.Body()
		}
		body = bytes.TrimSpace(body)
		if len(body) == 0 || body[0] != '{' {
			body = appendError(nil, errUpstreamUnreachable, "", "The upstream provider answered "+strconv.Itoa(resp.StatusCode())+".")
		}
		ev := append([]byte("data: "), bytes.ReplaceAll(body, []byte("\n"), nil)...)
		_, _ = w.Write(append(ev, "\n\n"...))
		x.status = resp.StatusCode()
		fasthttp.ReleaseResponse(resp)
		if x.ticket != nil {
			x.up.sched.Done(x.ticket, 0)
			x.ticket = nil
		}
		q.cc.abandon()
		s.finish(q.reqID, x, time.Now(), false, 0)
		return 0, nil
	}
	q.relay = newRelay(s, x, resp, true)
	q.relay.reqID = append(q.relay.reqID[:0], q.reqID...)
	q.relay.watch(ctx.Conn())
	return q.relay.WriteTo(w)
}

// CloseWithError ends the upstream's stream, when one began (the relay
// finishes the exchange then; otherwise WriteTo did).
func (q *queuedStream) CloseWithError(err error) error {
	if q.relay != nil {
		return q.relay.CloseWithError(err)
	}
	return nil
}
