package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

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
	// watch checks the clients of calls waiting for an answer and of
	// streams (watch.go).
	watch watchSet
	// own holds the owners of stored objects (owners.go).
	own *owners
	// console is the web console's state (console.go).
	console *consoleState
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
		up, err := newUpstream(&cfg.Upstreams[i], s.m, &s.watch)
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
	if err := opts.Registry.Register(s.m.newActiveGauge(s.queuedAtProviders)); err != nil {
		return nil, err
	}
	if s.console, err = newConsoleState(opts.Registry); err != nil {
		return nil, err
	}
	if s.own, err = newOwners(&opts); err != nil {
		return nil, err
	}
	return s, nil
}

// SetPolicy swaps in a new compiled policy. Requests already past identity
// finish under the policy they started with. The per-tier series of tiers
// the new policy lacks are deleted (metrics and queue waits).
func (s *Server) SetPolicy(p *policy.Policy) {
	old := s.policy.Swap(p)
	keep := func(tier string) bool { _, ok := p.Tiers[tier]; return ok }
	s.m.forgetTiers(keep)
	if old != nil {
		for name := range old.Tiers {
			if !keep(name) {
				s.qm.ForgetTier(name) // the queues' wait and outcome series
			}
		}
	}
}

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

// setRequestID gives the answer a new X-Request-Id, also written to buf.
func (s *Server) setRequestID(ctx *fasthttp.RequestCtx, buf *[reqIDLen]byte) {
	ctx.Response.Header.SetBytesV("X-Request-Id", s.ids.next(buf[:0]))
}

// fasthttpLogger sends fasthttp's own messages to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(scrubLogMessage(fmt.Sprintf(format, args...)), "component", "fasthttp")
}
