package proxy

import (
	"sluice/policy/queue"
	"time"

	"github.com/valyala/fasthttp"
)

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	x := exchange{start: time.Now(), ep: classify(ctx.Path())}
	s.m.inFlight.Inc()
	s.setRequestID(ctx, &x.idBuf)
	x.tr = s.beginTranscript(ctx, &x)
	if s.serve(ctx, &x) {
		return // the relay finishes the exchange when the stream ends
	}
	x.status = ctx.Response.StatusCode()
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
	s.compressAnswer(ctx, &x)
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
	}
	s.finish(ctx.Response.Header.Peek("X-Request-Id"), &x, end, x.gone, actual)
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

// finish records a completed exchange: metrics, and the access log line.
// actual is the tokens the answer used (-1: unknown, keep the reservation).
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
	if x.usage.ok {
		s.m.usedTokens(x.tier, x.route.Group, x.usage)
	}
	if x.adm != nil {
		s.limiter.Settle(x.adm, actual)
		x.adm = nil
	}
	if x.ticket != nil {
		x.up.sched.Done(x.ticket, actual)
		x.ticket = nil
	}
	if s.cfg.Server.AccessLog {
		s.log.Info("request", "request_id", string(reqID), "route", endpointLabels[x.ep],
			"status", x.status, "duration_ms", float64(total.Microseconds())/1000,
			"key_id", x.keyID, "user", x.user, "model", x.model, "client_gone", clientGone)
	}
	s.record(reqID, x, end, clientGone)
}

// serve answers one request. It returns true when the answer is a stream
// that a relay will finish later.
func (s *Server) serve(ctx *fasthttp.RequestCtx, x *exchange) bool {
	if s.draining.Load() {
		ctx.SetConnectionClose()
		writeError(ctx, errShuttingDown, "", "Sluice is shutting down; retry the request.")
		return false
	}
	if !cleanPath(ctx) {
		return false
	}
	if x.ep == epUnknown {
		writeError(ctx, errNotFound, "", "Unknown request URL: "+string(ctx.Method())+" "+string(ctx.Path())+". Sluice serves the OpenAI API under /v1/.")
		return false
	}
	if !s.methodAllowed(ctx, x.ep) {
		return false
	}
	pol := s.policy.Load()
	key, ok := s.identify(ctx, pol)
	if !ok {
		return false
	}
	x.keyID, x.project = key.ID, key.Project
	// Every record names its tenant, models and passthrough calls too (the
	// JSON endpoints refine user and tier below): /admin/transcripts?team=
	// keeps them.
	x.team, x.tier = key.Team, key.Tier
	if !key.AllowsPath(ctx.Path()) {
		writeError(ctx, errEndpointForbidden, "", "This key may not call "+string(ctx.Path())+".")
		return false
	}

	if !x.ep.parsesBody() {
		return s.servePlain(ctx, x, pol, key) // models and passthrough (plain.go)
	}

	// The JSON endpoints: decompress, scan once, identify the end user, route.
	if !s.decodeRequestBody(ctx, x.ep, s.cfg.Server.MaxBodyBytes) {
		return false
	}
	body := ctx.PostBody()
	var f reqFields
	if err := scanRequest(body, &f); err != nil {
		writeError(ctx, err.kind, err.param, err.msg)
		return false
	}
	if f.model == nil {
		writeError(ctx, errInvalidRequest, "model", "You must provide a model parameter.")
		return false
	}
	endUser, ok := s.endUser(ctx, key, &f)
	if !ok {
		return false
	}
	p := pol.Principal(key, endUser)
	x.user, x.team, x.tier = p.User, p.Team, p.Tier
	model, known := s.models.get(f.model)
	x.modelAsked = model
	route, ok := s.router.Resolve(model)
	if !ok || !key.AllowsModel(route.Model) {
		writeModelNotFound(ctx, model)
		return false
	}
	if !known {
		s.models.add(model)
	}
	x.model = route.Model
	if route.Rewritten {
		body = rewriteModel(body, &f, route.Model)
		_ = scanRequest(body, &f) // offsets into the new body; it scanned once already
	}
	stream := f.stream && x.ep.streams()
	x.route = route
	up := s.upstreams[route.Upstream]
	wait, ok := s.claimFor(ctx, x, pol, p)
	if !ok {
		return false
	}
	tier := pol.Tiers[p.Tier]
	// cache: a hit, a request joining an identical one in flight, or a
	// leader whose answer is stored (proxy/cache.go); nil when not cached.
	cc, ok := s.cacheStart(ctx, x, pol, key, p, &body, &f, stream)
	if !ok {
		return false
	}
	// transcript: the request as the client sent it (proxy/transcript.go)
	x.tr.noteContent(f.content(body), f.stream)
	if s.limiter != nil {
		if body, ok = s.admit(ctx, x, pol, key, p, body, &f, stream, up, wait); !ok {
			cc.abandon()
			return false
		}
	} else if up.sched.CountsTokens() {
		x.claim.tokens = s.reservation(x, body, &f, tier)
	}
	// A stream that must wait and asked for keep-alives gets its 200 now,
	// and comments keep the connection busy while it waits.
	var every time.Duration
	if stream && (cc == nil || cc.leader) {
		every = keepaliveEvery(ctx)
	}
	queued := x.adm != nil && x.adm.Wait > 0
	if every > 0 && queued {
		return s.serveQueuedStream(ctx, x, &route, body, cc, every, nil, nil, "")
	}
	if queued {
		if fl := s.waitSlot(ctx, x, nil); fl != nil {
			fl.write(ctx)
			cc.abandon()
			return false
		}
	}
	if cc != nil && !cc.leader {
		if streamed, done := s.cacheServe(ctx, x, cc); done {
			return streamed
		}
	}
	// Hits and coalesced answers are served above even when the upstream
	// fails; a call needs an upstream whose breaker lets calls through, and
	// its capacity.
	up, deployment, ok := s.pickUpstream(ctx, &route)
	var fl *failure
	if ok {
		var t *queue.Ticket
		if t, fl = s.enqueue(ctx, x, up); t != nil {
			if every > 0 {
				return s.serveQueuedStream(ctx, x, &route, body, cc, every, t, up, deployment)
			}
			fl = s.awaitTicket(ctx, x, up, t, nil)
		}
		if fl != nil {
			fl.write(ctx)
		}
	}
	if !ok || fl != nil {
		if x.adm != nil {
			s.limiter.Cancel(ctx, x.adm)
			x.adm = nil
		}
		cc.abandon()
		return false
	}
	streamed := s.forward(ctx, x, up, body, deployment, stream)
	cc.forwarded(ctx, x, streamed) // cache: store a buffered answer; the relay stores a stream
	return streamed
}

// forward calls the upstream and answers the client (see call and
// deliver). It returns true when a relay finishes the exchange.
func (s *Server) forward(ctx *fasthttp.RequestCtx, x *exchange, up *upstream, body []byte, deployment string, stream bool) bool {
	resp, f := s.call(ctx, x, up, body, deployment, stream, nil)
	if f != nil {
		f.write(ctx)
		return false
	}
	return s.deliver(ctx, x, resp, stream)
}
