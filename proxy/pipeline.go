package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// One request, start to end. Each step of DESIGN.md's picture is one call
// below, in order, and each lives in the file named for it:
//
//	1  accept, read       the request line; the body decoded and scanned once  read.go, compress.go, scan.go
//	2  identify           the key, then the end user and the principal          identify.go
//	   owned              the stored objects it names are its team's            owners.go
//	3  route              model → upstream (aliases, fallbacks)                 route.go
//	   claimFor           what the request asks of the upstream's queue          admit.go
//	4  cacheStart         a hit, a follower of an identical call, or a leader    cachecall.go
//	5  admit              the user's buckets: go, wait for a slot, or 429        admit.go
//	6  reach              wait for the slot; the cache's answer; pick the        reach.go, wait.go, cachereply.go
//	                      upstream; wait for its capacity
//	7  call, deliver      the upstream call with retries and failover; relay     call.go, deliver.go, relay.go
//	                      a stream or buffer an answer
//	8  settle             finish: the limiter and the upstream's budget settle   pipeline.go
//	                      from the answer's usage
//	9  store              cacheCall.forwarded, or the relay at the stream's end  cachecall.go
//	10 record             record: the transcript, handed to the sink              transcript.go
//
// A buffered answer is finished by handle when serve returns; a streamed one
// (relay, tee, queued stream) by its body stream when fasthttp closes it.
// The request's state is an exchange (exchange.go); each field is written by
// the step that owns it.

// handle runs one request through the pipeline.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	x := exchange{start: time.Now(), ep: classify(ctx.Path())}
	s.m.inFlight.Inc()
	s.setRequestID(ctx, &x.idBuf)
	if s.cfg.Server.AccessLog {
		x.method, x.peer = accessMethod(ctx.Method()), remoteAddrPort(ctx)
	}
	x.tr = s.beginTranscript(ctx, &x)
	if s.serve(ctx, &x) {
		return // the body stream finishes the exchange when the stream ends
	}
	s.finishBuffered(ctx, &x)
}

// serve runs steps 1 to 7 (and 9 for a buffered answer). It returns true
// when the answer is a stream that its body stream finishes later.
func (s *Server) serve(ctx *fasthttp.RequestCtx, x *exchange) bool {
	if !s.accept(ctx, x) { // 1: the request line
		return false
	}
	pol := s.policy.Load()
	key, ok := s.identify(ctx, x, pol) // 2: the key, and what it may call
	if !ok {
		return false
	}
	var f reqFields
	if !s.read(ctx, x, &f) { // 1: the body, decoded and scanned once
		return false
	}
	if !s.owned(ctx, x, key, &f) { // 2: the stored objects it names are its owner's (owners.go)
		return false
	}
	p, ok := s.principal(ctx, x, pol, key, &f) // 2: the end user, tier and team
	if !ok {
		return false
	}
	if !s.route(ctx, x, pol, key, &f) { // 3
		return false
	}
	wait, ok := s.claimFor(ctx, x, pol, p)
	if !ok {
		return false
	}
	cc, ok := s.cacheStart(ctx, x, pol, key, p, &f) // 4
	if !ok {
		return false
	}
	if x.ep.parsesBody() {
		x.tr.noteContent(f.content(x.body), f.stream) // the transcript keeps what the client asked
	}
	if !s.admit(ctx, x, pol, key, p, &f, wait) { // 5
		cc.abandon()
		return false
	}
	return s.dispatch(ctx, x, cc) // 6, 7 and 9
}

// dispatch takes an admitted request to its answer: reach (the waits, the
// cache's answer, the upstream's capacity, the call), then deliver, then
// the cache's store. A stream that must wait and asked for keep-alives
// parks at its first wait: its 200 goes out at once and the same steps
// resume in its queued stream (queuedstream.go).
func (s *Server) dispatch(ctx *fasthttp.RequestCtx, x *exchange, cc *cacheCall) bool {
	var every time.Duration
	if x.stream && (cc == nil || (cc.leader && !cc.remote)) {
		every = keepaliveEvery(ctx)
	}
	resp, fl, at := s.reach(ctx, x, cc, nil, every > 0)
	switch at {
	case reachedCache:
		return false
	case reachedCacheStream:
		return true
	case reachedWait:
		return s.serveQueuedStream(ctx, x, cc, every)
	}
	if fl != nil {
		s.refuse(ctx, x, cc, fl)
		return false
	}
	streamed := s.deliver(ctx, x, resp) // 7
	cc.forwarded(ctx, x, streamed)      // 9: a buffered answer; the relay stores a stream
	return streamed
}

// refuse answers a request that reach could not take to an answer: the
// reservation of a request that never reached the upstream is given back
// (a failed call is settled by finish), and followers of a leader that
// will not answer call on their own.
func (s *Server) refuse(ctx *fasthttp.RequestCtx, x *exchange, cc *cacheCall, fl *failure) {
	if x.adm != nil && x.upStart.IsZero() {
		s.limiter.Cancel(ctx, x.adm)
		x.adm = nil
	}
	cc.abandon()
	fl.write(ctx)
}

// hdrCost is the answer's cost in USD for keys with show_cost.
const hdrCost = "X-Sluice-Cost-Usd"

// finishBuffered runs steps 8 and 10 for an answer written whole (an
// error, a buffered answer, a cache hit): its usage found once for the
// transcript, the settlement and the metrics, then finish.
func (s *Server) finishBuffered(ctx *fasthttp.RequestCtx, x *exchange) {
	s.ownedAnswer(ctx, x) // owned mode: record created ids, filter lists (owners.go)
	x.status = ctx.Response.StatusCode()
	x.bytesOut = int64(len(ctx.Response.Body()))
	if !x.gone && !x.upStart.IsZero() {
		// A buffered answer: nothing watched the client while the upstream
		// worked. A client gone meanwhile is counted and recorded as such
		// (the answer, billed by the provider, is written to nobody).
		if raw := x.clientSocket(ctx); raw != nil && peerClosed(raw) {
			x.gone = true
		}
	}
	// The answer's usage, found once for the transcript, the settlement and
	// the token metrics (before compression changes the body).
	var u usage
	if x.status < 400 && (x.tr != nil || x.adm != nil || x.ticket != nil || !x.upFirst.IsZero()) {
		u = x.answerUsage(ctx.Response.Body())
	}
	x.tr.answerUsage(x.ep, x.status, ctx.Response.Body(), u)
	s.compressAnswer(ctx, x)
	end := time.Now()
	if !x.upFirst.IsZero() {
		// The answer was read whole: the upstream's share ends with it;
		// time spent queued is not Sluice's overhead either.
		s.m.overhead[x.ep].Observe((end.Sub(x.start) - x.upFirst.Sub(x.upStart) - x.queueWait).Seconds())
	}
	actual := int64(-1)
	if x.adm != nil || x.ticket != nil {
		actual = bufferedUsage(x.status, u, !x.upFirst.IsZero() && !x.cacheFree)
	}
	if x.status == fasthttp.StatusOK && !x.upFirst.IsZero() && !x.cacheFree {
		x.usage = u
		if x.showCost && x.answerCost() > 0 {
			var b [32]byte
			ctx.Response.Header.SetBytesV(hdrCost, strconv.AppendFloat(b[:0], x.cost, 'f', -1, 64))
		}
	}
	s.finish(ctx.Response.Header.Peek("X-Request-Id"), x, end, x.gone, actual)
}

// bufferedUsage is the tokens a buffered answer used: its usage when it is a
// success that reports one, none for an error or no answer at all (the
// provider bills neither), else -1 (unknown: keep the reservation).
func bufferedUsage(status int, u usage, answered bool) int64 {
	if !answered || status >= 400 {
		return 0
	}
	if u.ok {
		return u.total()
	}
	return -1
}

// finish ends every exchange, buffered or streamed (step 8 and 10): the
// metrics, the settlement of the user's admission and of the upstream's
// grant, the access log line, and the transcript. actual is the tokens the
// answer used (-1: unknown, keep the reservation).
func (s *Server) finish(reqID []byte, x *exchange, end time.Time, clientGone bool, actual int64) {
	total := end.Sub(x.start)
	s.m.done(x.ep, x.status, total.Seconds())
	s.m.inFlight.Dec()
	if x.up != nil && !x.upEnd.IsZero() {
		x.up.duration.Observe(x.upEnd.Sub(x.upStart).Seconds())
	}
	if clientGone {
		s.m.disconnects[x.ep].Inc()
	}
	if x.route.Group != "" {
		s.m.routedRequest(x.tier, x.route.Group, x.cacheStatus, x.status)
	}
	if x.usage.ok || x.cutUsage.ok {
		s.m.usedTokens(x.tier, x.route.Group, x.usage, x.answerCost())
	}
	if x.adm != nil {
		s.limiter.Settle(x.adm, actual, x.answerCost())
		x.adm = nil
	}
	if x.ticket != nil {
		x.up.sched.Done(x.ticket, actual)
		x.ticket = nil
	}
	if s.cfg.Server.AccessLog {
		s.accessLog(reqID, x, total, clientGone)
	}
	s.record(reqID, x, end, clientGone)
}
