package proxy

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// call sends the request to x.up (step 7) and returns the upstream's answer (the
// caller owns it), or the failure to answer with when there is none.
//
// Before any byte reached the client a failed call is tried again: a
// transport error, timeout or 5xx goes to the route's next fallback whose
// breaker is closed; a 429 or 503 (with no fallback left) rests the key it
// was made with and goes at once to another key of the upstream's pool that
// is not resting; with none, it pauses and slows the upstream's queue and
// is retried there after the upstream's retry-after, while the request's
// max wait allows. At most
// upstream.max_attempts calls are made; the last answer is the client's.
// Waits in the queue send keep-alives through k when it is not nil.
func (s *Server) call(ctx *fasthttp.RequestCtx, x *exchange, k *keepalive) (*fasthttp.Response, *failure) {
	resp := fasthttp.AcquireResponse()
	up, body := x.up, x.body
	for attempt := 1; ; attempt++ {
		req := fasthttp.AcquireRequest()
		req.Header.SetMethodBytes(ctx.Method())
		copyRequestHeaders(&req.Header, &ctx.Request.Header, x.ep.parsesBody())
		if x.ep.parsesBody() {
			// Sluice reads these answers: ask for them plain (no header at
			// all would allow any coding).
			req.Header.SetBytesKV(acceptEncoding, identity)
		}
		up.setURI(req, x.ep, ctx.Path(), ctx.URI().QueryString(), x.deployment)
		key := 0
		if x.ticket != nil {
			key = x.ticket.Key
		}
		up.setCredentials(req, key)
		if x.project != "" && !up.azure {
			req.Header.Set("OpenAI-Project", x.project) // the key's own, in place of the upstream's
		}
		if len(body) > 0 {
			req.SetBodyRaw(body)
		}
		// Streams and passthrough answers (files, audio) are relayed as they
		// arrive; JSON answers are read whole.
		resp.StreamBody = x.stream || x.ep == epPassthrough && !x.own.buffer // owners.go reads some whole
		x.upStart = time.Now()
		line, err := up.do(req, resp, x.claim.flow, x.clientSocket(ctx), x.cache)
		fasthttp.ReleaseRequest(req)
		if errors.Is(err, errClientGone) {
			// The client left while the call waited: its connection was
			// closed so the upstream stops. Not the upstream's failure.
			x.upEnd, x.gone = time.Now(), true
			fasthttp.ReleaseResponse(resp)
			return nil, failGone
		}
		if errors.Is(err, errUserConns) {
			// The user's own calls hold its share of the connections: a
			// busy answer for this user, not the upstream's failure.
			x.upEnd = time.Now()
			fasthttp.ReleaseResponse(resp)
			return nil, &failure{kind: errProviderBusy, retry: time.Second, position: -1,
				msg: "Your requests hold your share of the upstream's connections; retry when one of them has finished."}
		}
		x.line = line
		st := resp.StatusCode()
		if err == nil {
			up.responses[statusClass(st)].Inc()
		}
		failed := err != nil || st >= 500
		up.breaker.Done(time.Now(), failed)
		if err != nil {
			x.upEnd = time.Now()
			s.log.Warn("upstream call failed", "request_id", string(ctx.Response.Header.Peek("X-Request-Id")),
				"upstream", up.name, "route", endpointLabels[x.ep], "attempt", attempt, "error", err)
		}
		throttled := err == nil && (st == fasthttp.StatusTooManyRequests || st == fasthttp.StatusServiceUnavailable)
		if err == nil {
			up.keyAnswered(key, throttled)
		}
		if !failed && !throttled {
			up.sched.Succeeded()
			break
		}
		var ra time.Duration
		otherKey := false // another key of the pool can take the call now
		if throttled {
			ra = upstreamRetryAfter(&resp.Header)
			up.sched.Throttled(key, ra)
			s.m.throttled(up.name, st)
			// The key rests; another key of the pool, its own quota, may
			// take the call at once, whatever the request's max wait.
			otherKey = up.sched.KeyReady()
		}
		next := up
		if failed && attempt < up.maxAttempts {
			if fb := s.fallback(x, up); fb != nil {
				next, ra = fb, 0
				if fb.azure {
					x.deployment = x.model
				}
			}
		}
		if attempt >= up.maxAttempts || (next == up && (!throttled || !otherKey && time.Now().Add(ra).After(x.claim.deadline))) {
			if err != nil {
				fasthttp.ReleaseResponse(resp)
				f := &failure{kind: up.classify(err), msg: "The upstream provider could not be reached.", position: -1}
				if f.kind == errUpstreamTimeout {
					f.msg = "The upstream provider did not answer in time."
				}
				return nil, f
			}
			break // the client gets the upstream's answer
		}
		if err != nil {
			up.classify(err)
		}
		// Try again: the call used no tokens; its grant ends and a new one
		// is queued (behind the pause a retry-after set).
		if resp.BodyStream() != nil {
			_ = resp.CloseBodyStream()
		}
		x.releaseLine(false)
		resp.Reset()
		if x.ticket != nil {
			up.sched.Done(x.ticket, 0)
			x.ticket = nil
		}
		x.retries++
		s.m.retry(up.name)
		up = next
		x.up = up
		if f := s.acquire(ctx, x, k); f != nil {
			fasthttp.ReleaseResponse(resp)
			return nil, f
		}
	}
	x.upFirst = time.Now()
	x.upEnd = x.upFirst
	// Every answer is read decoded: the JSON endpoints' for usage, cache
	// and transcripts, and all of them so the relay can scrub the upstream's
	// key (a passthrough answer compressed at the client's request reaches
	// it decoded, in identity, rather than unscrubbed).
	x.decoding = decodeAnswer(resp)
	up.scrubError(resp)
	if x.line != nil && resp.BodyStream() == nil {
		x.releaseLine(false) // the answer was read whole after all (an error, decoded or scrubbed)
	}
	return resp, nil
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
