package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"sluice/cache"
	"sluice/config"
	"sluice/policy"
	"sluice/policy/limit"
	"sluice/policy/queue"
	"sluice/policy/tokens"
)

// Options configure a Server.
type Options struct {
	// Config is the parsed sluice.yaml. Required.
	Config *config.Config
	// Policy is the first compiled policies.yaml. Required; SetPolicy swaps it.
	Policy *policy.Policy
	// Registry receives the proxy's metrics. Required.
	Registry prometheus.Registerer
	// Logger receives error and access lines. Default slog.Default().
	Logger *slog.Logger
	// Version is reported by sluice_build_info. Default "dev".
	Version string
	// Limiter meters users' budgets; nil disables limits.
	Limiter *policy.Limiter
	// Tokens estimates prompt tokens for reservations. Default: a new
	// counter.
	Tokens *tokens.Counter
	// BudgetStore holds the upstreams' budgets (the limiter's store: memory,
	// or Redis to share budgets among replicas). Default: a memory store.
	BudgetStore limit.Store
	// BudgetFallback takes over while a shared BudgetStore fails, with
	// budgets divided by Replicas. Optional.
	BudgetFallback limit.Store
	// Replicas is the number of replicas sharing BudgetStore. Default 1.
	Replicas int64
	// QueueMetrics receives the queues' metrics. Optional.
	QueueMetrics *queue.Metrics
	// Cache is the response cache; nil disables it.
	Cache *cache.Cache
}

// Server is the OpenAI-compatible API listener.
type Server struct {
	cfg       *config.Config
	policy    atomic.Pointer[policy.Policy]
	router    *policy.Router
	upstreams []*upstream
	srv       *fasthttp.Server
	m         *metrics
	log       *slog.Logger
	limiter   *policy.Limiter
	tokens    *tokens.Counter
	cache     *cache.Cache
	ids       idGen
	// draining is set by Shutdown; new requests then get a 503.
	draining atomic.Bool
	// drain is closed by Shutdown to end the waits of queued requests.
	drain     chan struct{}
	drainOnce sync.Once
	qm        *queue.Metrics
	// tr records transcripts (transcript.go); nil: off.
	tr *transcripts
	// admin is the /admin/ API (adminapi.go); nil: 404.
	admin *adminAPI
	// models interns the model names requests name (intern.go).
	models names
	// endUsers interns the end-user names trusted keys send.
	endUsers names
	// own holds the owners of stored objects (owners.go).
	own *owners
}

// New builds a Server from its configuration. It opens no socket.
func New(opts Options) (*Server, error) {
	if opts.Config == nil || opts.Policy == nil || opts.Registry == nil {
		return nil, errors.New("proxy: Config, Policy and Registry are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	cfg := opts.Config
	if opts.Tokens == nil {
		opts.Tokens = tokens.NewCounter(tokens.Options{})
	}
	s := &Server{cfg: cfg, log: opts.Logger, m: newMetrics(opts.Registry, opts.Version), limiter: opts.Limiter,
		tokens: opts.Tokens, drain: make(chan struct{}), qm: opts.QueueMetrics, cache: opts.Cache}
	s.ids.init()
	s.policy.Store(opts.Policy)

	index := make(map[string]int, len(cfg.Upstreams))
	for i := range cfg.Upstreams {
		up, err := newUpstream(&cfg.Upstreams[i], s.m)
		if err != nil {
			return nil, err
		}
		index[up.name] = i
		up.sched = newScheduler(&cfg.Upstreams[i], &opts)
		up.breaker = s.newBreaker(&cfg.Upstreams[i])
		s.upstreams = append(s.upstreams, up)
	}
	rules := make([]policy.RouteRule, 0, len(cfg.Routes)+1)
	for _, r := range cfg.Routes {
		i, ok := index[r.Upstream]
		if !ok {
			return nil, fmt.Errorf("route %q: unknown upstream %q", r.Model, r.Upstream)
		}
		rule := policy.RouteRule{Pattern: r.Model, Upstream: i, Deployment: r.Deployment}
		for _, fb := range r.Fallbacks {
			j, ok := index[fb]
			if !ok {
				return nil, fmt.Errorf("route %q: unknown fallback upstream %q", r.Model, fb)
			}
			rule.Fallbacks = append(rule.Fallbacks, j)
		}
		rules = append(rules, rule)
	}
	if len(rules) == 0 {
		rules = append(rules, policy.RouteRule{Pattern: "*", Upstream: 0})
	}
	router, err := policy.NewRouter(rules, cfg.Aliases)
	if err != nil {
		return nil, err
	}
	s.router = router

	sc := &cfg.Server
	s.srv = &fasthttp.Server{
		Handler:                       s.handle,
		ErrorHandler:                  s.handleServerError,
		HeaderReceived:                s.headerReceived,
		Name:                          "sluice",
		ReadBufferSize:                sc.MaxHeaderBytes,
		MaxRequestBodySize:            sc.MaxBodyBytes,
		ReadTimeout:                   sc.ReadTimeout,
		IdleTimeout:                   sc.IdleTimeout,
		CloseOnShutdown:               true,
		DisablePreParseMultipartForm:  true,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		// Streams may run for many minutes; a write deadline would cut them.
		WriteTimeout: 0,
		Logger:       fasthttpLogger{s.log},
		// Give the connection's read buffer (MaxHeaderBytes, 16 KiB by
		// default) back once a request is read, rather than hold it through
		// a stream or a keep-alive wait: it was a third of a held stream's
		// heap. The write buffer goes back after each answer too.
		ReduceMemoryUsage: true,
	}
	if err := opts.Registry.Register(newConnCollector(s)); err != nil {
		return nil, err
	}
	if s.own, err = newOwners(&opts); err != nil {
		return nil, err
	}
	return s, nil
}

// SetPolicy swaps in a new compiled policy. Requests already past identity
// finish under the policy they started with.
func (s *Server) SetPolicy(p *policy.Policy) { s.policy.Store(p) }

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if n := s.cfg.Server.MaxConnsPerIP; n > 0 {
		ln = newPerIPListener(ln, n)
	}
	return s.srv.Serve(ln)
}

// Ready reports whether the server takes new requests.
func (s *Server) Ready() bool { return !s.draining.Load() }

// Shutdown stops accepting connections, answers new requests on open
// connections with 503, and waits for in-flight requests and streams until
// ctx ends.
// Requests waiting in a queue get a 503 with a retry hint at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.drainOnce.Do(func() {
		close(s.drain)
		for _, up := range s.upstreams {
			up.sched.Close()
		}
	})
	return s.srv.ShutdownWithContext(ctx)
}

// exchange is the state of one request, kept on the handler's stack and
// copied into a relay when the answer is streamed.
type exchange struct {
	// idBuf holds Sluice's request id (also the answer's X-Request-Id
	// until an upstream's own replaces it); id is it as a string, made on
	// first use (requestID).
	idBuf   [reqIDLen]byte
	id      string
	start   time.Time
	ep      endpoint
	up      *upstream
	upStart time.Time
	// upFirst is when the upstream's answer began (headers received; the
	// whole body too unless it is relayed as a stream).
	upFirst time.Time
	// upEnd is when the upstream call ended: answer read, or failed.
	upEnd time.Time
	keyID string
	user  string
	// team and tier are the principal's, for transcripts; empty before
	// identity.
	team, tier string
	// modelAsked is the model the client named, before aliases.
	modelAsked string
	model      string
	status     int
	// queueWait is how long the request waited for its budgets or the
	// provider's capacity before it was forwarded.
	queueWait time.Duration
	// retries counts upstream calls repeated after a 429/5xx or failover.
	retries int
	// cacheStatus is "", "hit", "miss", "bypass" or "coalesced".
	cacheStatus string
	// usage is what the upstream's answer reported (metrics); zero for
	// answers from the cache.
	usage usage
	// adm is the request's admission, settled when the exchange finishes;
	// nil without limits.
	adm *policy.Admission
	// promptEst is the prompt's token estimate.
	promptEst int64
	// stripUsage reports that Sluice asked for the stream's usage chunk on
	// the client's behalf, so the relay removes it.
	stripUsage bool
	// claim is what the request asks of its upstream's queue; ticket is
	// its grant, ended by finish.
	claim  claim
	ticket *queue.Ticket
	// gone reports a client that hung up before the answer began.
	gone bool
	// route is the request's route (fallbacks included).
	route policy.Route
	// cache is the cache call a leading request stores its answer through;
	// nil otherwise (proxy/cache.go).
	cache *cacheCall
	// cacheFree reports an answer from the cache (hit or coalesced) whose
	// tokens the tier does not count: admitted and settled at 0 tokens.
	cacheFree bool
	// tr collects the transcript (transcript.go); nil when off.
	tr *txState
	// bodyUsage is the buffered answer's usage once scanned (bodyScanned),
	// so the cache, the transcript and the limits share one scan.
	bodyUsage   usage
	bodyScanned bool
	// line is the upstream connection an answer's body is still read from,
	// given back by releaseLine once that body is closed; nil otherwise.
	line *line
	// client is the client's socket, for checks that it is still there;
	// looked up once (clientSocket), nil when it has none to poll.
	client       syscall.RawConn
	clientLooked bool
	// project is the key's provider project (OpenAI-Project), "" for the
	// upstream's.
	project string
	// decoding is the content coding ("gzip", "br", …) the relay decodes a
	// streamed answer from: the upstream compressed it although asked for
	// identity (answerenc.go). "" for most answers.
	decoding string
	// own is the exchange's part in owned mode (owners.go).
	own ownCall
}

// clientSocket is the client's socket, or nil when there is none to poll
// (an in-memory connection).
func (x *exchange) clientSocket(ctx *fasthttp.RequestCtx) syscall.RawConn {
	if !x.clientLooked {
		x.client, x.clientLooked = rawConn(ctx.Conn()), true
	}
	return x.client
}

// releaseLine gives the upstream connection of an answer whose body stream
// was closed back to its pool; reusable reports that the body was read to
// its end (otherwise the connection is closed).
func (x *exchange) releaseLine(reusable bool) {
	if x.line != nil {
		x.up.conns.put(x.line, reusable)
		x.line = nil
	}
}

// answerUsage returns the usage of the buffered answer body, scanning it
// once per exchange.
func (x *exchange) answerUsage(body []byte) usage {
	if !x.bodyScanned {
		x.bodyUsage, x.bodyScanned = findUsage(body), true
	}
	return x.bodyUsage
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	x := exchange{start: time.Now(), ep: classify(ctx.Path())}
	s.m.inFlight.Inc()
	s.setRequestID(ctx, &x.idBuf)
	x.tr = s.beginTranscript(ctx, &x)
	if s.serve(ctx, &x) {
		return // the relay finishes the exchange when the stream ends
	}
	s.ownedAnswer(ctx, &x) // owned mode: record created ids, filter lists (owners.go)
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
	if !s.ownedRequest(ctx, x, key, body, f.model) { // stored objects' owners (owners.go)
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

// fallback is the next upstream of the request's route after cur whose
// breaker lets calls through, or nil.
func (s *Server) fallback(x *exchange, cur *upstream) *upstream {
	now := time.Now()
	past := cur == s.upstreams[x.route.Upstream]
	for _, i := range x.route.Fallbacks {
		fb := s.upstreams[i]
		if !past {
			past = fb == cur
			continue
		}
		if ok, _ := fb.breaker.Allow(now); ok {
			return fb
		}
	}
	return nil
}

// pickUpstream is the route's first upstream whose breaker lets calls
// through; when none does it answers 503 with the time until the primary
// half-opens.
func (s *Server) pickUpstream(ctx *fasthttp.RequestCtx, route *policy.Route) (*upstream, string, bool) {
	up, dep, f := s.pickUpstreamFailure(route)
	if f != nil {
		f.write(ctx)
		return nil, "", false
	}
	return up, dep, true
}

// pickUpstreamFailure is pickUpstream's choice, or the failure to answer.
func (s *Server) pickUpstreamFailure(route *policy.Route) (*upstream, string, *failure) {
	now := time.Now()
	up := s.upstreams[route.Upstream]
	ok, wait := up.breaker.Allow(now)
	if ok {
		return up, route.Deployment, nil
	}
	for _, i := range route.Fallbacks {
		fb := s.upstreams[i]
		if ok, _ := fb.breaker.Allow(now); ok {
			dep := ""
			if fb.azure {
				dep = route.Model
			}
			return fb, dep, nil
		}
	}
	return nil, "", &failure{kind: errUpstreamUnavailable, retry: max(wait, time.Second), position: -1,
		msg: "The upstream provider is failing; Sluice stopped calling it for " + wait.Round(time.Second).String() + ". Retry the request later."}
}

// claimFor sets what x asks of its upstream's queue for principal p (its
// user, the tier's weight and priority, the deadline of the tier's max
// wait or the client's shorter X-Sluice-Max-Wait) and returns that wait;
// false when the header was unusable (answered 400).
func (s *Server) claimFor(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, p policy.Principal) (time.Duration, bool) {
	tier := pol.Tiers[p.Tier]
	wait, ok := maxWait(ctx, tier)
	if !ok {
		return 0, false
	}
	x.claim = claim{flow: p.User, weight: 1, deadline: x.start.Add(wait)}
	if tier != nil {
		x.claim.weight, x.claim.priority = tier.Queue.Weight, tier.Queue.Priority
	}
	return wait, true
}

// reservation is a request's token reservation: the prompt's estimate plus
// the completion allowance (max tokens, or the tier's default, times n).
func (s *Server) reservation(x *exchange, body []byte, f *reqFields, tier *policy.Tier) int64 {
	prompt := s.tokens.Estimate(tokenKinds[x.ep], body)
	x.promptEst = prompt
	return satAdd(prompt, completionAllowance(x.ep, f, tier))
}

// completionAllowance is the completion tokens a request reserves: its max
// tokens (or the tier's default) times n, saturating at MaxReservation (the
// scan bounds both numbers; a tier's default is the admin's).
func completionAllowance(ep endpoint, f *reqFields, tier *policy.Tier) int64 {
	if ep == epEmbeddings {
		return 0
	}
	c := f.maxTokens
	if c < 0 {
		c = policy.DefaultMaxTokens
		if tier != nil {
			c = tier.DefaultMaxTokens
		}
	}
	return satMul(max(c, 0), max(f.n, 1))
}

// admit reserves the request's budgets, answering 429 (or 503) when they
// are used up. On success x holds the admission, settled by finish, and the
// body to send: a stream metered in tokens asks the upstream for its usage.
func (s *Server) admit(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key, p policy.Principal,
	body []byte, f *reqFields, stream bool, up *upstream, wait time.Duration) ([]byte, bool) {
	plan := pol.Plan(p, key, x.model)
	x.claim.flow = plan.UserScope
	if !plan.Limited() {
		if up.sched.CountsTokens() {
			x.claim.tokens = s.reservation(x, body, f, plan.Tier)
		}
		return body, true
	}
	// An answer from the cache may count requests only (proxy/cache.go).
	countTokens := plan.CountsTokens() && !x.cacheFree
	if stream && x.ep != epResponses && !f.includeUsage && (countTokens || up.sched.CountsTokens()) {
		// Ask for usage to settle the reservation; the relay removes the
		// usage chunk again since the client did not ask for it.
		body = withIncludeUsage(body, f)
		x.stripUsage = true
	}
	kind := tokenKinds[x.ep]
	var prompt, completion int64
	if countTokens || up.sched.CountsTokens() {
		est, allowance := s.tokens.Estimate(kind, body), completionAllowance(x.ep, f, plan.Tier)
		x.claim.tokens = est + allowance
		if countTokens {
			prompt, completion = est, allowance
		}
	}
	model := x.model
	ask := policy.Ask{
		Plan:      plan,
		RequestID: x.requestID(),
		Tokens:    prompt + completion,
		MaxWait:   wait,
	}
	exact := func() int64 {
		if !countTokens {
			return 0
		}
		n, err := s.tokens.Count(kind, model, body)
		if err != nil {
			return prompt + completion
		}
		return n + completion
	}
	ad := s.limiter.AdmitCounting(context.Background(), pol, &ask, exact)
	if ad.Outcome != policy.Admitted {
		writeRejected(ctx, ad, p.User)
		s.limiter.Finish(context.Background(), ad, -1)
		return nil, false
	}
	x.adm, x.promptEst = ad, prompt
	return body, true
}

func (s *Server) methodAllowed(ctx *fasthttp.RequestCtx, ep endpoint) bool {
	want := ""
	switch {
	case ep.parsesBody():
		if !ctx.IsPost() {
			want = fasthttp.MethodPost
		}
	case ep == epModels:
		if !ctx.IsGet() {
			want = fasthttp.MethodGet
		}
	case ep == epModel:
		// GET retrieves a model, DELETE removes a fine-tuned one.
		if !ctx.IsGet() && !ctx.IsDelete() {
			want = fasthttp.MethodGet
		}
	}
	if want == "" {
		return true
	}
	ctx.Response.Header.Set("Allow", want)
	writeError(ctx, errMethodNotAllowed, "", "Method "+string(ctx.Method())+" is not allowed on "+string(ctx.Path())+"; use "+want+".")
	return false
}

var (
	bearerPrefix   = []byte("Bearer ")
	acceptEncoding = []byte("Accept-Encoding")
)

// identify finds the virtual key of the request, from "Authorization:
// Bearer KEY" or Azure's "api-key: KEY", and answers 401 when there is none.
func (s *Server) identify(ctx *fasthttp.RequestCtx, pol *policy.Policy) (*policy.Key, bool) {
	secret := requestKey(&ctx.Request.Header)
	if len(secret) == 0 {
		writeError(ctx, errInvalidKey, "", "You didn't provide an API key. Provide your Sluice key in an Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY).")
		return nil, false
	}
	key, ok := pol.Identify(secret)
	if !ok {
		writeError(ctx, errInvalidKey, "", "Incorrect API key provided.")
		return nil, false
	}
	return key, true
}

// requestKey is the key a request carries: "Authorization: Bearer KEY"
// (the scheme in any case) or Azure's "api-key: KEY"; nil when none.
func requestKey(h *fasthttp.RequestHeader) []byte {
	secret := h.Peek("Authorization")
	switch {
	case len(secret) > len(bearerPrefix) && asciiEqualFold(secret[:len(bearerPrefix)], bearerPrefix):
		return secret[len(bearerPrefix):]
	case len(secret) == 0:
		return h.Peek("Api-Key")
	}
	return nil
}

// unauthBodyLimit is the most of a request body read before its key is
// known to be valid, in bytes (64 KiB): a request without a valid key gets
// its 401 after that much at most, not after server.max_body_bytes.
const unauthBodyLimit = 64 << 10

// headerReceived runs once a request's headers are in, before its body is
// read: a body larger than unauthBodyLimit (or of unknown length) is read
// only for a valid key. Without one the body stops at the limit and the
// client gets a 401 (handleServerError), so slow uploads without a key
// cannot hold memory.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if cl := h.ContentLength(); cl >= 0 && cl <= unauthBodyLimit {
		return fasthttp.RequestConfig{}
	}
	if s.cfg.Server.MaxBodyBytes <= unauthBodyLimit {
		return fasthttp.RequestConfig{} // the server's own limit is lower
	}
	if _, ok := s.policy.Load().Identify(requestKey(h)); ok {
		return fasthttp.RequestConfig{}
	}
	return fasthttp.RequestConfig{MaxRequestBodySize: unauthBodyLimit}
}

// endUser returns the end user a trusted key names (X-Sluice-User, else the
// body's "user"), or "" for other keys, answering 400 for an unusable name
// and for a trusted key that names no end user (it would otherwise run as
// the key's own user, in the key's tier: often unlimited).
func (s *Server) endUser(ctx *fasthttp.RequestCtx, key *policy.Key, f *reqFields) (string, bool) {
	if !key.Trusted {
		return "", true
	}
	name := ctx.Request.Header.Peek("X-Sluice-User")
	param := "X-Sluice-User"
	if len(name) == 0 {
		name, param = f.user, "user"
	}
	if len(name) == 0 {
		writeError(ctx, errInvalidRequest, "user", "This is an app key: name the end user of every request with the X-Sluice-User header or the body's \"user\" field.")
		return "", false
	}
	if len(name) > policy.MaxUserLen || !utf8.Valid(name) || hasControl(name) {
		writeError(ctx, errInvalidRequest, param, fmt.Sprintf("The end-user name must be valid UTF-8 without control characters, at most %d bytes.", policy.MaxUserLen))
		return "", false
	}
	user, known := s.endUsers.get(name)
	if !known {
		s.endUsers.add(user)
	}
	return user, true
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		ca, cb := a[i]|0x20, b[i]|0x20
		if ca != cb {
			return false
		}
	}
	return true
}

func writeModelNotFound(ctx *fasthttp.RequestCtx, model string) {
	writeError(ctx, errModelNotFound, "model", "The model `"+model+"` does not exist or you do not have access to it.")
}

// rewriteModel returns body with its model value replaced by model.
func rewriteModel(body []byte, f *reqFields, model string) []byte {
	out := make([]byte, 0, len(body)+len(model))
	out = append(out, body[:f.modelStart]...)
	out = appendJSONString(out, model)
	return append(out, body[f.modelEnd:]...)
}

// call sends the request to up and returns the upstream's answer (the
// caller owns it), or the failure to answer with when there is none.
//
// Before any byte reached the client a failed call is tried again: a
// transport error, timeout or 5xx goes to the route's next fallback whose
// breaker is closed; a 429 or 503 (with no fallback left) pauses and slows
// the upstream's queue and is retried there after the upstream's
// retry-after, while the request's max wait allows. At most
// upstream.max_attempts calls are made; the last answer is the client's.
// Waits in the queue send keep-alives through k when it is not nil.
func (s *Server) call(ctx *fasthttp.RequestCtx, x *exchange, up *upstream, body []byte, deployment string,
	stream bool, k *keepalive) (*fasthttp.Response, *failure) {
	resp := fasthttp.AcquireResponse()
	for attempt := 1; ; attempt++ {
		x.up = up
		req := fasthttp.AcquireRequest()
		req.Header.SetMethodBytes(ctx.Method())
		copyRequestHeaders(&req.Header, &ctx.Request.Header, x.ep.parsesBody())
		if x.ep.parsesBody() {
			// Sluice reads these answers: ask for them plain (no header at
			// all would allow any coding).
			req.Header.SetBytesKV(acceptEncoding, identity)
		}
		up.setURI(req, x.ep, ctx.Path(), ctx.URI().QueryString(), deployment)
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
		resp.StreamBody = stream || x.ep == epPassthrough && !x.own.buffer // owners.go reads some whole
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
		failed := err != nil || st >= 500
		up.breaker.Done(time.Now(), failed)
		if err != nil {
			x.upEnd = time.Now()
			s.log.Warn("upstream call failed", "request_id", string(ctx.Response.Header.Peek("X-Request-Id")),
				"upstream", up.name, "route", endpointLabels[x.ep], "attempt", attempt, "error", err)
		}
		throttled := err == nil && (st == fasthttp.StatusTooManyRequests || st == fasthttp.StatusServiceUnavailable)
		if !failed && !throttled {
			up.sched.Succeeded()
			break
		}
		var ra time.Duration
		if throttled {
			ra = upstreamRetryAfter(&resp.Header)
			up.sched.Throttled(key, ra)
			s.m.throttled(up.name, st)
		}
		next := up
		if failed && attempt < up.maxAttempts {
			if fb := s.fallback(x, up); fb != nil {
				next, ra = fb, 0
				if fb.azure {
					deployment = x.model
				}
			}
		}
		if attempt >= up.maxAttempts || (next == up && (!throttled || time.Now().Add(ra).After(x.claim.deadline))) {
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
		if f := s.acquire(ctx, x, up, k); f != nil {
			fasthttp.ReleaseResponse(resp)
			return nil, f
		}
	}
	x.upFirst = time.Now()
	x.upEnd = x.upFirst
	if x.ep.parsesBody() {
		x.decoding = decodeAnswer(resp)
	}
	up.scrubError(resp)
	if x.line != nil && resp.BodyStream() == nil {
		x.releaseLine(false) // the answer was read whole after all (an error, decoded or scrubbed)
	}
	return resp, nil
}

// deliver answers the client with the upstream's answer resp, which it
// takes over. It returns true when the answer is streamed by a relay that
// finishes the exchange.
func (s *Server) deliver(ctx *fasthttp.RequestCtx, x *exchange, resp *fasthttp.Response, stream bool) bool {
	var idBuf [40]byte
	ourID := append(idBuf[:0], ctx.Response.Header.Peek("X-Request-Id")...)
	ctx.Response.Header.Del("X-Request-Id")
	copyResponseHeaders(&ctx.Response.Header, &resp.Header)
	if x.adm != nil && resp.StatusCode() != fasthttp.StatusTooManyRequests {
		setRateLimitHeaders(ctx, x.adm)
	}
	if len(resp.Header.Peek("X-Request-Id")) == 0 {
		ctx.Response.Header.SetBytesV("X-Request-Id", ourID)
	}
	if x.queueWait > 0 {
		var b [20]byte
		ctx.Response.Header.SetBytesV("X-Sluice-Queue-Wait-Ms", strconv.AppendInt(b[:0], x.queueWait.Milliseconds(), 10))
	}
	bs := resp.BodyStream()
	if bs == nil {
		ctx.Response.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return false
	}
	r := newRelay(s, x, resp, stream && resp.StatusCode() == fasthttp.StatusOK)
	// Nothing reads the request body from here on (x and the transcript
	// hold copies): give it back rather than hold a chat's whole history
	// through the stream.
	ctx.Request.ResetBody()
	r.reqID = append(r.reqID[:0], ctx.Response.Header.Peek("X-Request-Id")...)
	if r.sse {
		ctx.Response.ImmediateHeaderFlush = true
		r.watch(ctx.Conn())
		if len(resp.Header.ContentEncoding()) == 0 {
			if r.enc = negotiate(ctx.Request.Header.Peek("Accept-Encoding")); r.enc != encIdentity {
				ctx.Response.Header.Set("Content-Encoding", encodingNames[r.enc])
				ctx.Response.Header.Add("Vary", "Accept-Encoding")
			}
		}
	}
	size := resp.Header.ContentLength()
	if r.sse || size < 0 || x.decoding != "" { // a decoded body's length is not the upstream's
		size = -1
	}
	ctx.SetBodyStream(r, size)
	return true
}

// handleServerError answers the errors fasthttp finds before the handler
// runs: bodies and headers over the limits, malformed HTTP, read timeouts.
func (s *Server) handleServerError(ctx *fasthttp.RequestCtx, err error) {
	var id [reqIDLen]byte
	s.setRequestID(ctx, &id)
	ctx.SetConnectionClose()
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge) && s.cfg.Server.MaxBodyBytes > unauthBodyLimit && !s.validKey(&ctx.Request.Header):
		// Cut at unauthBodyLimit (headerReceived): the key is what is wrong.
		s.m.protocol[protoUnauthenticatedBody].Inc()
		writeError(ctx, errInvalidKey, "", "A valid Sluice key is required before a request body of more than 64 KiB is read.")
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.m.protocol[protoBodyTooLarge].Inc()
		writeError(ctx, errBodyTooLarge, "", fmt.Sprintf("The request body is larger than the limit of %d bytes.", s.cfg.Server.MaxBodyBytes))
	case errors.Is(err, fasthttp.ErrSmallReadBuffer) || errors.As(err, new(*fasthttp.ErrSmallBuffer)):
		s.m.protocol[protoHeadersTooLarge].Inc()
		writeError(ctx, errHeaderTooLarge, "", fmt.Sprintf("The request headers are larger than the limit of %d bytes.", s.cfg.Server.MaxHeaderBytes))
	case errors.As(err, &te) && te.Timeout():
		s.m.protocol[protoTimeout].Inc()
		writeError(ctx, errInvalidRequest, "", "The request was not received in time.")
		ctx.SetStatusCode(fasthttp.StatusRequestTimeout)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		// The client closed the connection halfway through its request;
		// the answer goes nowhere.
		s.m.protocol[protoIncomplete].Inc()
		writeError(ctx, errInvalidRequest, "", "The request ended before it was complete.")
	default:
		s.m.protocol[protoMalformed].Inc()
		writeError(ctx, errInvalidRequest, "", "The request is not valid HTTP.")
	}
}

// validKey reports whether h carries a key of the running policy.
func (s *Server) validKey(h *fasthttp.RequestHeader) bool {
	_, ok := s.policy.Load().Identify(requestKey(h))
	return ok
}

// setRequestID gives the answer a new X-Request-Id, also written to buf.
func (s *Server) setRequestID(ctx *fasthttp.RequestCtx, buf *[reqIDLen]byte) {
	ctx.Response.Header.SetBytesV("X-Request-Id", s.ids.next(buf[:0]))
}

// requestID returns the exchange's request id as a string; the limiter and
// the transcript share one copy.
func (x *exchange) requestID() string {
	if x.id == "" {
		x.id = string(x.idBuf[:])
	}
	return x.id
}

// fasthttpLogger sends fasthttp's own messages to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(scrubLogMessage(fmt.Sprintf(format, args...)), "component", "fasthttp")
}
