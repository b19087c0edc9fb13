package proxy

import (
	"bytes"
	"io"
	"sluice/policy"
	"sluice/policy/queue"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

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
