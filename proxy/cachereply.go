package proxy

import (
	"context"
	"io"
	"sluice/cache"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// cacheServe answers a hit or a follower. It returns done false when a
// follower's flight failed or its wait ran out: the request is then
// forwarded like any other. streamed reports an answer finished later by a
// tee.
func (s *Server) cacheServe(ctx *fasthttp.RequestCtx, x *exchange, cc *cacheCall) (streamed, done bool) {
	m := s.cache.Metrics()
	if cc.entry != nil {
		if !s.cacheAnswer(ctx, x, cc, cc.entry) {
			return s.cacheFallback(ctx, x) // an entry that cannot be rendered as a stream
		}
		m.Hits.Inc()
		m.CallsSaved.Inc()
		m.TokensSaved.Add(float64(cc.entry.PromptTokens + cc.entry.CompletionTokens))
		return false, true
	}
	wait, cancel := context.WithTimeout(context.Background(), s.cache.CoalesceWait())
	defer cancel()
	if cc.remote {
		// Another replica calls: its stored answer, replayed (as SSE for
		// a stream); without one this request leads the call.
		cc.remote = false
		e := s.cache.AwaitRemote(wait, cc.flight)
		if e == nil {
			return s.cacheFallback(ctx, x)
		}
		cc.ended = true // AwaitRemote finished the flight
		if !s.cacheAnswer(ctx, x, cc, e) {
			return s.cacheFallback(ctx, x)
		}
		m.CoalescedRemote.Inc()
		m.CallsSaved.Inc()
		m.TokensSaved.Add(float64(e.PromptTokens + e.CompletionTokens))
		ctx.Response.Header.Set("Age", "0")
		return false, true
	}
	if cc.stream && cc.flight.Streamed() {
		// Tee the leader's stream from its start, once it has begun; a
		// flight that ended with an entry and no events (its leader's
		// answer came from another replica) is replayed from the entry.
		_, ok, e, err := cc.flight.Next(wait, 0)
		if err == nil && !ok && e != nil && s.cacheAnswer(ctx, x, cc, e) {
			m.Coalesced.Inc()
			m.CallsSaved.Inc()
			m.TokensSaved.Add(float64(e.PromptTokens + e.CompletionTokens))
			return false, true
		}
		if err != nil || !ok {
			return s.cacheFallback(ctx, x)
		}
		m.Coalesced.Inc()
		m.CallsSaved.Inc()
		t := &tee{s: s, x: *x, cc: cc}
		t.reqID = append(t.reqID, ctx.Response.Header.Peek("X-Request-Id")...)
		ctx.Response.Header.Set(hdrCache, cacheCoalesced)
		ctx.Response.Header.Set("Age", "0")
		ctx.Response.Header.SetContentType("text/event-stream; charset=utf-8")
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		ctx.Response.ImmediateHeaderFlush = true
		if x.adm != nil {
			setRateLimitHeaders(ctx, x.adm)
		}
		ctx.SetBodyStream(t, -1)
		return true, true
	}
	e, err := cc.flight.Wait(wait)
	if err != nil || e == nil || !s.cacheAnswer(ctx, x, cc, e) {
		return s.cacheFallback(ctx, x)
	}
	m.Coalesced.Inc()
	m.CallsSaved.Inc()
	m.TokensSaved.Add(float64(e.PromptTokens + e.CompletionTokens))
	ctx.Response.Header.Set("Age", "0")
	return false, true
}

// cacheFallback turns a follower whose flight gave nothing into a miss
// that calls the provider: its tokens are settled from the answer's usage
// like any other call.
func (s *Server) cacheFallback(ctx *fasthttp.RequestCtx, x *exchange) (bool, bool) {
	x.cacheStatus = cacheMiss
	x.cacheFree = false
	s.cache.Metrics().Misses.Inc()
	ctx.Response.Header.Set(hdrCache, cacheMiss)
	return false, false
}

// cacheAnswer writes a stored answer: the body, or for a stream the SSE
// rendering of it. It returns false when a stream cannot be rendered from
// the entry.
func (s *Server) cacheAnswer(ctx *fasthttp.RequestCtx, x *exchange, cc *cacheCall, e *cache.Entry) bool {
	body := e.Body
	ct := "application/json"
	if cc.stream {
		sse, err := cache.RenderStream(e.Body, cc.includeUsage)
		if err != nil {
			return false
		}
		body, ct = sse, "text/event-stream; charset=utf-8"
		ctx.Response.Header.Set("Cache-Control", "no-cache")
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType(ct)
	ctx.Response.Header.Set(hdrCache, x.cacheStatus)
	age := max(int64(s.cache.Now().Sub(e.Created)/time.Second), 0)
	ctx.Response.Header.Set("Age", strconv.FormatInt(age, 10))
	if x.adm != nil {
		setRateLimitHeaders(ctx, x.adm)
	}
	ctx.SetBody(body)
	if !x.cacheFree {
		// The tier counts a hit's tokens: settle at the stored usage.
		now := time.Now()
		x.upStart, x.upFirst, x.upEnd = now, now, now
	}
	return true
}

// tee relays a leader's live stream to a follower, from its first event,
// as fasthttp's body stream. It finishes the follower's exchange when
// fasthttp closes it.
type tee struct {
	s     *Server
	x     exchange
	cc    *cacheCall
	reqID []byte
	i     int
	// pending is the part of the current event not yet read.
	pending []byte
	// failed reports that the leader's stream broke.
	failed bool
}

// errLeaderFailed cuts a follower's stream when the leader's broke, so the
// client sees a truncated answer rather than a clean end.
var errLeaderFailed = io.ErrUnexpectedEOF

// next returns the next event to relay, io.EOF at a clean end.
func (t *tee) next() ([]byte, error) {
	for {
		ev, ok, e, err := t.cc.flight.Next(context.Background(), t.i)
		if err != nil {
			return nil, err
		}
		if !ok {
			if !t.cc.flight.Complete() {
				t.failed = true
				return nil, errLeaderFailed
			}
			if e != nil {
				t.s.cache.Metrics().TokensSaved.Add(float64(e.PromptTokens + e.CompletionTokens))
			}
			return nil, io.EOF
		}
		t.i++
		if !t.cc.includeUsage && isUsageOnlyEvent(ev) {
			continue // the leader asked for usage; this client did not
		}
		return ev, nil
	}
}

// SupportsBodyWriteTo tells fasthttp that WriteTo may replace Read.
func (t *tee) SupportsBodyWriteTo() bool { return true }

// WriteTo writes each event as it arrives, one write (one chunk) per event.
func (t *tee) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		ev, err := t.next()
		if err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
		n, werr := w.Write(ev)
		total += int64(n)
		if werr != nil {
			return total, werr
		}
	}
}

// Read implements io.Reader.
func (t *tee) Read(p []byte) (int, error) {
	for len(t.pending) == 0 {
		ev, err := t.next()
		if err != nil {
			return 0, err
		}
		t.pending = ev
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

// CloseWithError finishes the follower's exchange.
func (t *tee) CloseWithError(err error) error {
	t.x.status = fasthttp.StatusOK
	actual := int64(0)
	if !t.x.cacheFree {
		actual = -1
	}
	t.s.finish(t.reqID, &t.x, time.Now(), err != nil && !t.failed, actual)
	return nil
}
