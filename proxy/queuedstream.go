package proxy

import (
	"bytes"
	"io"
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
	cc    *cacheCall
	every time.Duration
	reqID []byte
	relay *relay // the upstream's stream, once it began
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
func (s *Server) serveQueuedStream(ctx *fasthttp.RequestCtx, x *exchange, cc *cacheCall, every time.Duration) bool {
	q := &queuedStream{s: s, ctx: ctx, x: *x, cc: cc, every: every}
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

// WriteTo resumes the request's steps where dispatch parked it (reach:
// the waits, with keep-alives, then the call) and relays the upstream's
// stream into w.
func (q *queuedStream) WriteTo(w io.Writer) (int64, error) {
	s, ctx, x := q.s, q.ctx, &q.x
	k := &keepalive{w: w, every: q.every}
	// The first comment goes out at once, with the headers.
	if !k.ping(time.Now()) {
		x.gone = true
		return q.fail(w, failGone)
	}
	resp, f, _ := s.reach(ctx, x, q.cc, k, false)
	if f != nil {
		return q.fail(w, f)
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

// fail ends a queued stream that reach could not take to an answer: the
// reservation of a request that never reached the upstream is given back
// (a failed call is settled at 0 tokens), and f goes out as the stream's
// error event unless the client is gone.
func (q *queuedStream) fail(w io.Writer, f *failure) (int64, error) {
	s, x := q.s, &q.x
	actual := int64(0)
	if x.adm != nil && x.upStart.IsZero() {
		s.limiter.Cancel(q.ctx, x.adm)
		x.adm, actual = nil, -1
	}
	q.cc.abandon()
	if !f.gone {
		f.event(w)
	}
	x.status = f.status()
	s.finish(q.reqID, x, time.Now(), x.gone, actual)
	return 0, nil
}
