package proxy

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/cache"
	"sluice/internal/jsonw"
	"sluice/policy"
)

// The response cache in the request path (issue 5). serve calls cacheStart
// after routing: it answers 403/400 for bad cache headers, and otherwise
// returns the request's cacheCall (nil when the cache is not used). A hit or
// a follower of an identical request in flight is answered by cacheServe,
// after admission; a leader is forwarded as usual and stored by
// cacheCall.forwarded (a buffered answer) or by its relay (a stream).

// Cache headers.
const (
	hdrCache          = "X-Sluice-Cache"
	hdrCacheTTL       = "X-Sluice-Cache-TTL"
	hdrCacheNamespace = "X-Sluice-Cache-Namespace"
)

// Values of the X-Sluice-Cache header and exchange.cacheStatus.
const (
	cacheHit       = "hit"
	cacheMiss      = "miss"
	cacheBypass    = "bypass"
	cacheCoalesced = "coalesced"
)

// cacheEndpoints name the endpoints whose answers are cached, as they enter
// the key; "" is not cached.
var cacheEndpoints = [epCount]string{epChat: "chat", epCompletions: "completions", epEmbeddings: "embeddings"}

// cacheCall is one request's use of the cache.
type cacheCall struct {
	c   *cache.Cache
	key cache.Key
	// ttl is how long the answer is stored; 0: not stored.
	ttl time.Duration
	// entry is the stored answer of a hit.
	entry *cache.Entry
	// flight is the call this request leads or follows; nil for a hit.
	flight *cache.Flight
	leader bool
	// remote reports a leader whose key another replica is calling for:
	// it waits for that answer in cacheServe (cache.AwaitRemote).
	remote bool
	// stream is the client's stream flag; includeUsage its
	// stream_options.include_usage.
	stream, includeUsage bool
	// ended reports that the flight was finished.
	ended bool
}

// cacheStart decides how the request uses the cache. ok false means an
// error answer was written. A stream leader's body is rewritten to ask for
// usage (so the stored answer has it); x.body and f are updated then.
func (s *Server) cacheStart(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key, p policy.Principal,
	f *reqFields) (*cacheCall, bool) {
	if s.cache == nil || cacheEndpoints[x.ep] == "" {
		return nil, true
	}
	m := s.cache.Metrics()
	ns, allowed := key.CacheNamespace(string(ctx.Request.Header.Peek(hdrCacheNamespace)), p)
	if !allowed {
		writeError(ctx, errCacheNamespace, hdrCacheNamespace, "This key may not use the cache namespace "+
			strconv.Quote(string(ctx.Request.Header.Peek(hdrCacheNamespace)))+".")
		return nil, false
	}
	rule := pol.CacheRule(p)
	ttl := rule.TTL
	if ttl == 0 {
		ttl = s.cfg.Cache.TTL
	}
	if v := ctx.Request.Header.Peek(hdrCacheTTL); len(v) > 0 {
		secs, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || secs < 0 {
			writeError(ctx, errInvalidRequest, hdrCacheTTL, "X-Sluice-Cache-TTL must be a whole number of seconds (0: do not store).")
			return nil, false
		}
		ttl = min(ttl, time.Duration(secs)*time.Second)
	}
	noStore, noCache := cacheControl(ctx.Request.Header.Peek("Cache-Control"))
	if noStore {
		return nil, s.cacheBypass(ctx, x, m, cache.BypassNoStore)
	}
	if rule.Mode == policy.CacheOff {
		return nil, s.cacheBypass(ctx, x, m, cache.BypassPolicy)
	}
	k, info, err := cache.NewKey(s.cache.Namespace(ns), cacheEndpoints[x.ep], x.model, x.body)
	if err != nil {
		return nil, s.cacheBypass(ctx, x, m, cache.BypassUnkeyable)
	}
	if rule.Mode == policy.CacheDeterministic && !info.Deterministic && x.ep != epEmbeddings {
		return nil, s.cacheBypass(ctx, x, m, cache.BypassPolicy)
	}
	cc := &cacheCall{c: s.cache, key: k, ttl: ttl, stream: x.stream, includeUsage: f.includeUsage}
	if !noCache {
		if e := s.cache.Get(context.Background(), k); e != nil {
			cc.entry = e
			x.cacheStatus = cacheHit
			x.cacheFree = !rule.HitsCountTokens
			return cc, true
		}
		cc.flight, cc.leader = s.cache.Join(k, x.stream)
	} else {
		// Cache-Control: no-cache refreshes the entry: a call of its own,
		// stored at the end.
		cc.flight, cc.leader = cache.NewFlight(x.stream), true
	}
	if !cc.leader {
		x.cacheStatus = cacheCoalesced
		x.cacheFree = !rule.HitsCountTokens
		return cc, true
	}
	cc.remote = cc.flight.Remote()
	if cc.remote {
		// Answered by another replica's call, or a miss (cacheFallback).
		x.cacheStatus = cacheCoalesced
		x.cacheFree = !rule.HitsCountTokens
	} else {
		x.cacheStatus = cacheMiss
		m.Misses.Inc()
		ctx.Response.Header.Set(hdrCache, cacheMiss)
	}
	if x.stream && !f.includeUsage {
		// The stored answer needs the usage; the relay removes the usage
		// chunk again since the client did not ask for it.
		x.body = withIncludeUsage(x.body, f)
		_ = scanRequest(x.body, f)
		x.stripUsage = true
	}
	x.cache = cc
	return cc, true
}

func (s *Server) cacheBypass(ctx *fasthttp.RequestCtx, x *exchange, m *cache.Metrics, reason string) bool {
	x.cacheStatus = cacheBypass
	m.Bypasses[reason].Inc()
	ctx.Response.Header.Set(hdrCache, cacheBypass)
	return true
}

// cacheControl reads the no-store and no-cache directives of a request's
// Cache-Control header.
func cacheControl(v []byte) (noStore, noCache bool) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.TrimSpace(tok)
		switch {
		case bytes.EqualFold(tok, []byte("no-store")):
			noStore = true
		case bytes.EqualFold(tok, []byte("no-cache")):
			noCache = true
		}
	}
	return noStore, noCache
}

// abandon ends a leader's flight without an answer (the request was
// rejected before it was forwarded), so its followers call on their own.
func (cc *cacheCall) abandon() {
	if cc != nil && cc.leader && !cc.ended {
		cc.ended = true
		cc.flight.Finish(nil)
	}
}

// forwarded stores a leader's buffered answer when it is a complete 200
// JSON object labelled as JSON, and finishes its flight. Anything else (an
// HTML page from a broken proxy, a truncated body) is passed on to this
// client as it came but neither stored nor shared: a hit is always served
// as application/json. A streamed answer is left to the relay.
func (cc *cacheCall) forwarded(ctx *fasthttp.RequestCtx, x *exchange, streamed bool) {
	if cc == nil || !cc.leader || streamed || cc.ended {
		return
	}
	cc.ended = true
	resp := &ctx.Response
	if resp.StatusCode() != fasthttp.StatusOK || len(resp.Header.ContentEncoding()) > 0 || len(resp.Body()) == 0 ||
		!isJSONType(resp.Header.ContentType()) || !isJSONObject(resp.Body()) {
		cc.flight.Finish(nil)
		return
	}
	// The entry's body is the response's own buffer: the store encodes a
	// copy, and Finish copies it again only for followers.
	cc.flight.Finish(cc.store(resp.Body(), x.answerUsage(resp.Body())))
}

// store builds the entry of an answer body with its usage u and writes it
// (unless its TTL is 0).
func (cc *cacheCall) store(body []byte, u usage) *cache.Entry {
	now := cc.c.Now()
	e := &cache.Entry{Created: now, Expires: now.Add(cc.ttl), Body: body}
	e.PromptTokens, e.CompletionTokens = u.prompt, u.completion
	if cc.ttl > 0 {
		cc.c.Put(context.Background(), cc.key, e)
	}
	return e
}

// event receives each event of a leader's stream from its relay: followers
// read it from the flight, and the answer is assembled from it at the end.
func (cc *cacheCall) event(ev []byte) {
	cc.flight.Event(ev)
}

// shared reports a leader's stream that other requests follow.
func (cc *cacheCall) shared() bool { return cc.flight.Followers() > 0 }

// drain reads the rest of a leader's stream for its followers when the
// leader's own client went away (the relay is closing before the upstream
// body ended). The read is bounded by the upstream's idle and total timeouts.
func (cc *cacheCall) drain(r *relay) {
	if r.eof || r.readErr != nil || !r.sse || !cc.shared() {
		return
	}
	for {
		if _, err := r.next(); err != nil {
			return
		}
	}
}

// streamEnd is called by the leader's relay at a 200 stream's [DONE],
// before that event is written, and again when the stream ended; complete
// reports a 200 stream read to [DONE] or to its end without error. Only a
// complete stream that assembles into an answer is stored.
func (cc *cacheCall) streamEnd(complete bool) {
	if cc.ended {
		return
	}
	cc.ended = true
	if !complete {
		cc.flight.Finish(nil)
		return
	}
	body, err := cache.AssembleStream(cc.flight.Events())
	if err != nil {
		cc.flight.End(true, nil) // relayed whole, but not storable (logprobs, audio)
		return
	}
	cc.flight.Finish(cc.store(body, findUsage(body)))
}

// isJSONType reports a JSON media type: application/json or a +json one,
// parameters aside.
func isJSONType(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	return bytes.EqualFold(ct, jsonType) ||
		(len(ct) > len(jsonSuffix) && bytes.EqualFold(ct[len(ct)-len(jsonSuffix):], jsonSuffix))
}

var (
	jsonType   = []byte("application/json")
	jsonSuffix = []byte("+json")
)

// isJSONObject reports whether body is one whole, valid JSON object.
func isJSONObject(body []byte) bool {
	sc := jsonw.Scanner{B: body}
	sc.WS()
	if sc.Kind() != jsonw.Object || !sc.Value(1) {
		return false
	}
	sc.WS()
	return sc.I == len(sc.B)
}
