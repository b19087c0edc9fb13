// Command sluice runs the Sluice gateway and its helper commands.
//
//	sluice [serve] [-config sluice.yaml] [-policies policies.yaml]
//	sluice validate [-config sluice.yaml] [-policies policies.yaml]
//	sluice diff OLD.yaml NEW.yaml
//	sluice hash-key [KEY]     (reads the key from stdin when not given)
//	sluice gen-key
//	sluice healthcheck [-addr 127.0.0.1:9090]
//	sluice version
//
// Without -config or -policies the embedded example files are used.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"sluice/cache"
	"sluice/config"
	"sluice/configs"
	"sluice/policy"
	"sluice/policy/limit"
	"sluice/policy/queue"
	"sluice/policy/tokens"
	"sluice/proxy"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version or "dev".
var version = ""

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || isHelp(args[0])) {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "validate":
		err = validate(args)
	case "diff":
		err = diff(args)
	case "hash-key":
		err = hashKey(args)
	case "gen-key":
		err = genKey()
	case "healthcheck":
		err = healthcheck(args)
	case "version":
		fmt.Println("sluice", buildVersion(), runtime.Version())
	case "help", "-h", "-help", "--help":
		fmt.Print(usage)
	default:
		err = fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	if errors.Is(err, flag.ErrHelp) {
		// "sluice serve -h": the flag set printed its flags; asking is no error.
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

const usage = `Sluice, a gateway for LLM traffic.

usage:
  sluice help               print this list of commands
  sluice [serve] [-config FILE] [-policies FILE] [-log-format json|text] [-log-level LEVEL]
  sluice validate [-config FILE] [-policies FILE]
  sluice diff OLD NEW       print the effective changes between two policies files
  sluice hash-key [KEY]     print the sha256 policies.yaml stores for KEY (stdin when absent)
  sluice gen-key            print a new random key and its sha256
  sluice healthcheck [-addr HOST:PORT]  exit 0 when the admin listener's /readyz answers 200
  sluice version
Without -config or -policies the embedded example files are used; with the
embedded policies and SLUICE_DEMO_KEY unset, serve prints a demo key for the run.
"sluice COMMAND -h" lists a command's flags.
`

// files are the two configuration files a command reads.
type files struct {
	config, policies string
	// logFormat is json (default) or text; logLevel debug, info (default),
	// warn or error.
	logFormat, logLevel string
	logJSON             bool
	// watch is how often serve polls policies.yaml for a change; 0: never.
	watch time.Duration
}

func parseFlags(name string, args []string) (*files, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &files{}
	fs.StringVar(&f.config, "config", os.Getenv("SLUICE_CONFIG"), "sluice.yaml to read (env SLUICE_CONFIG); empty: the embedded example")
	fs.StringVar(&f.policies, "policies", os.Getenv("SLUICE_POLICIES"), "policies.yaml to read (env SLUICE_POLICIES); empty: the embedded example")
	fs.StringVar(&f.logFormat, "log-format", envOr("SLUICE_LOG_FORMAT", defaultLogFormat), "log lines as json or text (env SLUICE_LOG_FORMAT)")
	fs.StringVar(&f.logLevel, "log-level", envOr("SLUICE_LOG_LEVEL", defaultLogLevel), "least severe level logged: debug, info, warn or error (env SLUICE_LOG_LEVEL)")
	fs.BoolVar(&f.logJSON, "log-json", os.Getenv("SLUICE_LOG_JSON") != "", "same as -log-format json, kept for existing scripts (env SLUICE_LOG_JSON)")
	watch := time.Second
	if v := os.Getenv("SLUICE_POLICY_WATCH"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("SLUICE_POLICY_WATCH=%q: %w", v, err)
		}
		watch = d
	}
	fs.DurationVar(&f.watch, "policy-watch", watch, "how often serve polls the policies file for a change; 0: only SIGHUP and POST /admin/reload (env SLUICE_POLICY_WATCH)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return f, nil
}

// load reads and checks both files; validate and serve share it.
func (f *files) load() (*config.Config, *policy.Policy, error) {
	var cfg *config.Config
	var err error
	if f.config == "" {
		cfg, err = config.Parse("sluice.yaml (embedded)", configs.Sluice, nil)
	} else {
		cfg, err = config.LoadFile(f.config)
	}
	var pol *policy.Policy
	var perr error
	if f.policies == "" {
		pol, perr = policy.Parse("policies.yaml (embedded)", configs.Policies, nil)
	} else {
		pol, perr = policy.LoadFile(f.policies)
	}
	if err := errors.Join(err, perr); err != nil {
		return nil, nil, err
	}
	return cfg, pol, nil
}

func validate(args []string) error {
	f, err := parseFlags("validate", args)
	if err != nil {
		return err
	}
	cfg, pol, err := f.load()
	if err != nil {
		return err
	}
	fmt.Printf("ok: %d upstream(s), %d route(s), %d tier(s)", len(cfg.Upstreams), len(cfg.Routes), len(pol.Tiers))
	if len(pol.Skipped) > 0 {
		fmt.Printf("; keys skipped (key_env unset): %s", strings.Join(pol.Skipped, ", "))
	}
	fmt.Println()
	if len(pol.UnmatchedUsers) > 0 {
		// users entries reach personal keys' users only (docs/security.md).
		fmt.Printf("warning: users %s match no key's own user and apply to nobody; overrides for a trusted key's end users go in its end_users\n",
			strings.Join(pol.UnmatchedUsers, ", "))
	}
	if f.policies != "" {
		for _, w := range policy.CheckFile(f.policies, pol) {
			fmt.Printf("warning: %s: %s\n", f.policies, w)
		}
	}
	return nil
}

func serve(args []string) error {
	f, err := parseFlags("serve", args)
	if err != nil {
		return err
	}
	if f.logJSON {
		f.logFormat = "json"
	}
	log, err := newLogger(os.Stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	slog.SetDefault(log)

	// SIGHUP is registered before the first load, so a reload asked for
	// while starting is not lost (it is served once the server runs).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// First run: the embedded policies enable the demo key only when
	// SLUICE_DEMO_KEY is set; without it every request would be a 401. A key
	// made for this run is set instead and printed once the listener is up.
	demoKey := ""
	if f.policies == "" && os.Getenv(demoKeyEnv) == "" {
		if demoKey, err = newDemoKey(); err != nil {
			return err
		}
		_ = os.Setenv(demoKeyEnv, demoKey)
	}
	cfg, pol, err := f.load()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	// The policy in force: srv is set below, before any reload can run.
	var srv *proxy.Server
	var reloader *policy.Reloader
	if f.policies != "" {
		reloader, err = policy.NewReloader(policy.ReloaderOptions{Path: f.policies, Interval: f.watch,
			Registry: reg, Logger: log, Apply: func(p *policy.Policy) { srv.SetPolicy(p) }})
		if err != nil {
			return err
		}
		if pol, err = reloader.Load(); err != nil {
			return err
		}
	}
	if len(pol.Skipped) > 0 {
		log.Warn("keys skipped: their key_env variable is unset", "keys", strings.Join(pol.Skipped, ","))
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The limiter's Redis client and the cache's (the same one unless
	// cache.redis is set); closed last.
	rc, cacheRC := newRedisClients(cfg, log)
	if rc != nil {
		defer func() { _ = rc.Close() }()
	}
	if cacheRC != nil && cacheRC != rc {
		defer func() { _ = cacheRC.Close() }()
	}
	limiter, closeStore, err := newLimiter(cfg, reg, log, rc)
	if err != nil {
		return err
	}
	defer closeStore()
	respCache, err := newCache(cfg, reg, log, cacheRC)
	if err != nil {
		return err
	}
	if respCache != nil {
		defer respCache.Close()
	}
	// The upstreams' budgets live in the users' bucket store: shared by the
	// replicas when it is Redis.
	budgets, fallback := limiter.Stores()
	srv, err = proxy.New(proxy.Options{Config: cfg, Policy: pol, Registry: reg, Logger: log, Version: buildVersion(),
		Limiter: limiter, Tokens: tokens.NewCounter(tokens.Options{}), Cache: respCache,
		BudgetStore: budgets, BudgetFallback: fallback, Replicas: pol.Replicas, QueueMetrics: queue.NewMetrics(reg)})
	if err != nil {
		return err
	}
	transcripts, reader, err := newSink(cfg, reg, log)
	if err != nil {
		return fmt.Errorf("transcripts: %w", err)
	}
	if transcripts != nil {
		srv.SetTranscripts(proxy.TranscriptOptions{Sink: transcripts, Reader: reader,
			MetadataOnly: cfg.Transcripts.Content == "metadata", MaxContentBytes: cfg.Transcripts.MaxContentBytes})
	}

	admin := proxy.AdminOptions{Token: cfg.Server.AdminToken}
	if reloader != nil {
		admin.Reload, admin.Status = reloader.ReloadWith, reloader.Status
		reloader.Start()
		// Every return stops the watch; the shutdown path stops it earlier,
		// after the drain (Stop is idempotent).
		defer reloader.Stop()
		log.Info("policies hot reload", "file", f.policies, "poll", f.watch)
	}
	srv.SetAdmin(admin)

	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on server.listen=%q: %w", cfg.Server.Listen, err)
	}
	// leaving turns /readyz to 503 at SIGTERM, while the API listener still
	// serves for server.shutdown_delay (the endpoint's removal).
	var leaving atomic.Bool
	var adminSrv *http.Server
	if cfg.Server.AdminListen != "off" {
		aln, err := net.Listen("tcp", cfg.Server.AdminListen)
		if err != nil {
			return fmt.Errorf("cannot listen on server.admin_listen=%q: %w", cfg.Server.AdminListen, err)
		}
		// Bounded like any listener: a client that never finishes its
		// request, or never reads the answer, does not hold a connection
		// for ever. The write timeout leaves room for a 60 s CPU profile
		// and a large transcript export.
		adminSrv = &http.Server{Handler: readyGate(&leaving, proxy.AdminHandler(reg, srv)), ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 5 * time.Minute, IdleTimeout: 2 * time.Minute}
		go func() {
			if err := adminSrv.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener failed", "error", err)
			}
		}()
		log.Info("admin listening", "addr", aln.Addr().String())
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("sluice listening", "addr", ln.Addr().String(), "version", buildVersion(), "upstreams", len(cfg.Upstreams))
	if demoKey != "" {
		log.Warn("no "+demoKeyEnv+" set: a demo key was made for this run (user demo); set "+demoKeyEnv+" to choose it",
			"demo_key", demoKey)
		fmt.Fprint(os.Stderr, firstRun(ln.Addr().String(), demoKey))
	}

wait:
	for {
		select {
		case err := <-served:
			return fmt.Errorf("server stopped: %w", err)
		case <-hup:
			if reloader == nil {
				log.Warn("SIGHUP ignored: the embedded example policy is in use (start with -policies FILE)")
				continue
			}
			// Logged and counted by Reload: like the watch, SIGHUP waits for
			// the file to settle and refuses a policy that lifts limits.
			_, _ = reloader.Reload("sighup")
		case s := <-sig:
			log.Info("shutting down", "signal", s.String(), "delay", cfg.Server.ShutdownDelay,
				"deadline", cfg.Server.ShutdownTimeout)
			break wait
		}
	}

	// Shutdown delay: /readyz answers 503 at once, the API listener keeps
	// serving until the endpoint is removed from the load balancer (or
	// Kubernetes' Service), so no new connection is refused at a rollout.
	leaving.Store(true)
	if d := cfg.Server.ShutdownDelay; d > 0 {
		select {
		case <-time.After(d):
		case s := <-sig:
			log.Info("second signal: shutdown delay cut short", "signal", s.String())
		}
	}

	// Shutdown order: stop accepting and drain the API listener (queued
	// requests get a 503 with a retry hint at once, in-flight requests and
	// streams finish, new requests on open connections get a 503), settle
	// tokens, flush the transcript sink (or spool it), then close the admin
	// listener so /readyz reports draining until the end.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("drain deadline passed; exiting with requests in flight", "error", err)
	}
	log.Info("api listener drained", "took", time.Since(start))
	// No reload after the drain: the watch stops (SIGHUP is no longer read).
	if reloader != nil {
		reloader.Stop()
	}
	// Pending token settlements reach the store before it closes (deferred).
	limiter.Close()
	// Transcripts: the queue is closed only now that no handler can enqueue;
	// what is queued is written within transcripts.write_timeout, else
	// spooled to disk for the next start.
	stopSink(transcripts, cfg.Transcripts.WriteTimeout, log)
	if adminSrv != nil {
		_ = adminSrv.Close()
	}
	log.Info("stopped")
	return nil
}

const demoKeyEnv = "SLUICE_DEMO_KEY"

// newDemoKey returns a random key for the embedded policies' demo user.
func newDemoKey() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "sk-demo-" + base64.RawURLEncoding.EncodeToString(b), nil
}

// firstRun is what serve prints when it made the demo key: the key and a
// request to try.
func firstRun(addr, key string) string {
	return fmt.Sprintf(`
First run: no %[1]s was set, so this run accepts the demo key
  %[2]s
Try (the upstream is OPENAI_BASE_URL with OPENAI_API_KEY):
  curl http://%[3]s/v1/chat/completions -H "Authorization: Bearer %[2]s" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
Set %[1]s to choose the key, or -policies FILE to use your own keys.

`, demoKeyEnv, key, addr)
}

// readyGate answers /readyz 503 once leaving is set; the rest goes to h.
func readyGate(leaving *atomic.Bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && leaving.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// newRedisClients returns the Redis clients of the process: the limiter's
// (redis:) and the cache's (cache.redis:, else the same client), each nil
// when nothing uses it. At start each is asked its maxmemory-policy
// (checkEviction).
func newRedisClients(cfg *config.Config, log *slog.Logger) (limiter, cache redis.UniversalClient) {
	useLimits := cfg.Limits.Store == "redis"
	useCache := cfg.Cache.Store == "redis" || cfg.Cache.Store == "tiered"
	// The limiter and the cache log a Redis incident once; go-redis would
	// log every failed dial.
	redis.SetLogger(redisLogger{log})
	if useLimits || (useCache && cfg.Cache.Redis == nil) {
		limiter = newRedisClient(cfg.Redis)
		// A Redis the limiter shares with the cache is judged as the
		// limiter's: it must not evict.
		role := "limits"
		if !useLimits {
			role = "cache"
		}
		checkEviction(limiter, cfg.Redis, role, log)
	}
	if useCache {
		if cfg.Cache.Redis == nil {
			return limiter, limiter
		}
		cr := cfg.CacheRedis()
		cache = newRedisClient(cr)
		checkEviction(cache, cr, "cache", log)
	}
	return limiter, cache
}

// newRedisClient returns a client for one redis block's mode. Every mode
// has the same policy: a call is bounded by r.Timeout, and a dead Redis
// must not hold requests: one try, then the policy's on_store_error decides
// (limits) or the request misses (cache).
//
// A Cluster client keeps go-redis's MaxRedirects (3): MOVED and ASK are
// not failures but the cluster saying where a slot lives now (after a
// resharding, or once a replica is promoted), so they are followed at
// once; the same loop retries a refused dial on another node. All of it
// stays inside the call's deadline (r.Timeout), so a request waits no
// longer than with one Redis. go-redis refreshes its slot map only on
// MOVED and every ClusterStateReloadInterval (60 s by default); a dead
// master answers nothing, so without a short interval the client keeps
// calling it for up to a minute after its replica took over. Sluice asks
// for the map every second instead (one CLUSTER SLOTS a second, in the
// background, only while calls are made). A Sentinel client asks the sentinels for the
// primary and follows a promotion (its +switch-master message).
func newRedisClient(r config.Redis) redis.UniversalClient {
	addrs := r.Addrs()
	switch r.Mode {
	case config.RedisCluster:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: addrs, Username: r.Username, Password: r.Password,
			DialTimeout: r.Timeout, ReadTimeout: r.Timeout, WriteTimeout: r.Timeout, PoolTimeout: r.Timeout,
			MaxRetries: -1, DialerRetries: 1, MaxRedirects: 3,
			ClusterStateReloadInterval: time.Second,
		})
	case config.RedisSentinel:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: r.MasterName, SentinelAddrs: addrs,
			SentinelUsername: r.SentinelUsername, SentinelPassword: r.SentinelPassword,
			Username: r.Username, Password: r.Password, DB: r.DB,
			DialTimeout: r.Timeout, ReadTimeout: r.Timeout, WriteTimeout: r.Timeout, PoolTimeout: r.Timeout,
			MaxRetries: -1, DialerRetries: 1,
		})
	}
	return redis.NewClient(&redis.Options{
		Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB,
		DialTimeout: r.Timeout, ReadTimeout: r.Timeout, WriteTimeout: r.Timeout, PoolTimeout: r.Timeout,
		MaxRetries: -1, DialerRetries: 1,
	})
}

// checkEviction reads the maxmemory-policy of every primary behind c and
// logs what it means for role ("limits" or "cache"): the limiter's Redis
// must not evict (an evicted bucket is a full budget again; every limiter
// key has a TTL, so volatile-* evicts them too), and a cache's Redis that
// never evicts refuses writes once full. Managed Redis often refuses
// CONFIG: then it says the policy could not be checked.
func checkEviction(c redis.UniversalClient, r config.Redis, role string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	get := func(ctx context.Context, n redis.UniversalClient, addr string) {
		v, err := n.ConfigGet(ctx, "maxmemory-policy").Result()
		pol := v["maxmemory-policy"]
		switch {
		case err != nil || pol == "":
			log.Info("redis maxmemory-policy could not be checked", "role", role, "addr", addr, "err", err)
		case role == "limits" && pol != "noeviction":
			log.Warn("the limiter's redis can evict its buckets and budgets (an evicted bucket is a full budget): set maxmemory-policy noeviction, or give the cache its own redis (cache.redis)",
				"role", role, "addr", addr, "maxmemory-policy", pol)
		case role == "cache" && pol == "noeviction":
			log.Info("the cache's redis never evicts: once full, cache writes fail (answers are then not stored); allkeys-lru suits a cache",
				"role", role, "addr", addr, "maxmemory-policy", pol)
		default:
			log.Info("redis maxmemory-policy", "role", role, "addr", addr, "maxmemory-policy", pol)
		}
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			get(ctx, n, n.Options().Addr)
			return nil
		})
		if err != nil {
			log.Info("redis maxmemory-policy could not be checked", "role", role, "addr", r.Addr, "err", err)
		}
		return
	}
	get(ctx, c, r.Addr)
}

// newLimiter opens the bucket store sluice.yaml names and the limiter on
// it. The returned func closes the in-memory store; rc (the shared Redis
// client, nil without Redis) is closed by the caller.
func newLimiter(cfg *config.Config, reg prometheus.Registerer, log *slog.Logger, rc redis.UniversalClient) (*policy.Limiter, func(), error) {
	opts := policy.LimiterOptions{LeaseTTL: cfg.Limits.LeaseTTL, Registry: reg, Logger: log}
	if cfg.Limits.Store != "redis" {
		mem := limit.NewMemory(limit.MemoryOptions{})
		opts.Store = mem
		return policy.NewLimiter(opts), mem.Close, nil
	}
	r := cfg.Redis
	opts.Store = limit.NewRedis(rc, limit.RedisOptions{Prefix: r.Prefix + "rl:", Timeout: r.Timeout})
	opts.Shared = true
	log.Info("buckets in redis", "addr", r.Addr, "mode", r.Mode)
	return policy.NewLimiter(opts), func() {}, nil
}

// newCache builds the response cache sluice.yaml's cache section names; nil
// for store: off.
func newCache(cfg *config.Config, reg prometheus.Registerer, log *slog.Logger, rc redis.UniversalClient) (*cache.Cache, error) {
	c := cfg.Cache
	// Purges made through other replicas (namespaces, and single keys in
	// the memory tier) are taken up within a second (shared stores only).
	opts := cache.Options{MaxEntryBytes: c.MaxEntryBytes, CoalesceWait: c.CoalesceWait, Registry: reg, Logger: log,
		GenerationSync: 500 * time.Millisecond}
	var mem *cache.Memory
	if c.Store == "memory" || c.Store == "tiered" {
		mem = cache.NewMemory(cache.MemoryOptions{MaxBytes: c.MaxBytes})
		opts.Memory = mem
	}
	var shared cache.Store
	if c.Store == "redis" || c.Store == "tiered" {
		r := cfg.CacheRedis()
		shared = cache.NewRedis(rc, cache.RedisOptions{Prefix: r.Prefix + "cache:", Timeout: r.Timeout})
	}
	switch c.Store {
	case "off":
		return nil, nil
	case "memory":
		opts.Store = mem
	case "redis":
		opts.Store = shared
	case "tiered":
		opts.Store = &cache.Tiered{Front: mem, Back: shared}
	}
	log.Info("response cache", "store", c.Store)
	return cache.New(opts)
}

// redisLogger sends go-redis's own messages to the debug log.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug(fmt.Sprintf(format, v...), "component", "redis")
}

func hashKey(args []string) error {
	var key string
	switch len(args) {
	case 0:
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("cannot read key from stdin: %w", err)
		}
		key = strings.TrimRight(line, "\r\n")
	case 1:
		key = args[0]
	default:
		return errors.New("hash-key takes at most one key")
	}
	if key == "" {
		return errors.New("empty key")
	}
	fmt.Println(policy.HashKey(key))
	return nil
}

func genKey() error {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	key := "sk-sluice-" + base64.RawURLEncoding.EncodeToString(b[:])
	fmt.Printf("key:    %s\nsha256: %s\n", key, policy.HashKey(key))
	return nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// healthcheck asks a running Sluice's /readyz, for container health checks
// in images that carry no shell or curl.
func healthcheck(args []string) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	def := os.Getenv("SLUICE_ADMIN_ADDR")
	if def == "" {
		def = config.DefaultAdminListen
	}
	addr := fs.String("addr", def, "admin listener address (env SLUICE_ADMIN_ADDR)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + *addr + "/readyz")
	if err != nil {
		return fmt.Errorf("not healthy: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s", resp.Status)
	}
	return nil
}

// diff prints the effective changes between two policies files, after both
// compiled with the code a reload runs; it fails when either does not.
func diff(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: sluice diff OLD.yaml NEW.yaml")
	}
	old, _, oerr := policy.Load(args[0], nil)
	cur, _, nerr := policy.Load(args[1], nil)
	if err := errors.Join(oerr, nerr); err != nil {
		return err
	}
	changes := policy.Diff(old, cur)
	if skipped := slices.Compact(slices.Sorted(slices.Values(append(old.Skipped, cur.Skipped...)))); len(skipped) > 0 {
		fmt.Printf("note: keys whose key_env is unset here are left out: %s\n", strings.Join(skipped, ", "))
	}
	if len(changes) == 0 {
		fmt.Println("no effective changes")
		return nil
	}
	for _, c := range changes {
		fmt.Println(c)
	}
	return nil
}
