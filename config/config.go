// Package config is the model of sluice.yaml: listeners, upstreams and model
// routes. These settings need a restart to change; policies (keys, users,
// tiers) live in policies.yaml and are handled by package policy.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"sluice/internal/yamlfile"
)

// Config is the whole of sluice.yaml.
type Config struct {
	// Server holds the API and admin listeners.
	Server Server `yaml:"server"`
	// Upstreams are the providers Sluice forwards to. At least one is required.
	Upstreams []Upstream `yaml:"upstreams"`
	// Routes map model names to upstreams, first match wins. When empty, every
	// model goes to the first upstream.
	Routes []Route `yaml:"routes"`
	// Aliases rename a model before routing: a request for the key is sent as
	// a request for the value (the body's "model" is rewritten).
	Aliases map[string]string `yaml:"aliases"`
	// Limits chooses where the users' buckets live.
	Limits Limits `yaml:"limits"`
	// Redis is the shared store for replicas (buckets and the cache).
	Redis Redis `yaml:"redis"`
	// Transcripts says where and how every exchange is recorded.
	Transcripts Transcripts `yaml:"transcripts"`
	// Cache configures the response cache (see Cache).
	Cache Cache `yaml:"cache"`
}

// Cache configures the response cache. Which requests use it is policy
// (policies.yaml: a tier's cache, cache_ttl); this is where entries live.
type Cache struct {
	// Store is "memory" (one process; the default), "redis" (shared by every
	// replica; needs redis.addr), "tiered" (memory in front of Redis) or
	// "off".
	Store string `yaml:"store"`
	// MaxBytes bounds the in-memory cache, entries plus overhead, in bytes.
	// Default 67108864 (64 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxEntryBytes bounds one stored answer, in bytes; larger answers are
	// not stored. Default 1048576 (1 MiB).
	MaxEntryBytes int `yaml:"max_entry_bytes"`
	// TTL is how long an answer is kept when its tier sets no cache_ttl.
	// Default 1h.
	TTL time.Duration `yaml:"ttl"`
	// CoalesceWait bounds how long a request waits for an identical request
	// in flight (for a stream: for its first event) before calling the
	// provider itself. Default 30s.
	CoalesceWait time.Duration `yaml:"coalesce_wait"`
	// Redis, when set, is the cache's own Redis deployment (the same shape
	// as the top-level redis block, whose unset fields it takes); unset,
	// the cache shares the limiter's. A cache's Redis should evict
	// (allkeys-lru) and the limiter's must not (noeviction): see
	// docs/operations.md.
	Redis *Redis `yaml:"redis"`
}

// Limits configures the bucket store.
type Limits struct {
	// Store is "memory" (one process; the default) or "redis" (shared by
	// every replica; needs redis.addr).
	Store string `yaml:"store"`
	// LeaseTTL is how long a concurrency slot lives unless released, so a
	// replica that dies frees its slots; longer than the longest request.
	// Default 31m.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// Redis modes (Redis.Mode).
const (
	RedisSingle   = "single"
	RedisCluster  = "cluster"
	RedisSentinel = "sentinel"
)

// Redis is a Redis deployment's addresses and credentials.
type Redis struct {
	// Mode is "single" (one server, the default), "cluster" (Redis Cluster:
	// addr lists some of its nodes) or "sentinel" (a primary and replicas
	// watched by Sentinel: addr lists the sentinels, master_name names the
	// primary).
	Mode string `yaml:"mode"`
	// Addr is host:port, or several separated by commas (cluster seed
	// nodes, or the sentinels). Required when a store uses Redis.
	Addr string `yaml:"addr"`
	// MasterName is the name the sentinels know the primary by; required
	// with mode: sentinel.
	MasterName string `yaml:"master_name"`
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// when they need it (mode: sentinel); usually from ${ENV}.
	SentinelUsername string `yaml:"sentinel_username"`
	SentinelPassword string `yaml:"sentinel_password"`
	// Username and Password authenticate (ACL); usually from ${ENV}.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DB is the database number. Default 0.
	DB int `yaml:"db"`
	// Prefix starts every key Sluice writes. Default "sluice:".
	Prefix string `yaml:"prefix"`
	// Timeout bounds one Redis call; a request never waits on Redis longer.
	// Default 100ms.
	Timeout time.Duration `yaml:"timeout"`
}

// Addrs returns Addr split at commas, blanks trimmed and empty parts left
// out.
func (r *Redis) Addrs() []string {
	var out []string
	for a := range strings.SplitSeq(r.Addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// CacheRedis returns the Redis the cache uses: cache.redis, its unset
// fields taken from the top-level redis block (the address and mode only
// together), else the top-level block itself.
func (c *Config) CacheRedis() Redis {
	if c.Cache.Redis == nil {
		return c.Redis
	}
	r := *c.Cache.Redis
	if r.Addr == "" {
		r.Addr, r.Mode, r.MasterName = c.Redis.Addr, c.Redis.Mode, c.Redis.MasterName
	}
	setDefault(&r.Mode, c.Redis.Mode)
	setDefault(&r.Username, c.Redis.Username)
	setDefault(&r.Password, c.Redis.Password)
	setDefault(&r.SentinelUsername, c.Redis.SentinelUsername)
	setDefault(&r.SentinelPassword, c.Redis.SentinelPassword)
	setDefault(&r.Prefix, c.Redis.Prefix)
	setDefault(&r.Timeout, c.Redis.Timeout)
	return r
}

// validateRedis checks one redis block at path (used is what needs it,
// for the message; "" when nothing does).
func validateRedis(r *Redis, path, used string, add func(path, format string, args ...any)) {
	addrs := r.Addrs()
	if used != "" && len(addrs) == 0 {
		add(path+".addr", "is required with %s", used)
	}
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			add(path+".addr", "%q is not host:port", a)
		}
	}
	switch r.Mode {
	case RedisSingle:
		if len(addrs) > 1 {
			add(path+".addr", "names %d servers; mode: single takes one (cluster or sentinel take several)", len(addrs))
		}
	case RedisCluster:
		if r.DB != 0 {
			add(path+".db", "must be 0 with mode: cluster (Redis Cluster has one database)")
		}
	case RedisSentinel:
		if r.MasterName == "" {
			add(path+".master_name", "is required with mode: sentinel (the name the sentinels know the primary by)")
		}
	default:
		add(path+".mode", "must be single, cluster or sentinel, not %q", r.Mode)
	}
	if strings.ContainsAny(r.Prefix, "{}") {
		add(path+".prefix", "must not hold { or }: Sluice puts a Redis Cluster hash tag after it")
	}
	if r.Timeout < 0 {
		add(path+".timeout", "must not be negative")
	}
}

// Server holds listener settings.
type Server struct {
	// Listen is the API listener address. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// AdminListen is the admin listener (/metrics, /healthz, /readyz).
	// Default "127.0.0.1:9090"; "off" disables it.
	AdminListen string `yaml:"admin_listen"`
	// MaxBodyBytes is the largest request body accepted, in bytes; larger
	// bodies get a 413. Default 33554432 (32 MiB).
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxConnsPerIP caps the connections one client address may hold open
	// on the API listener; more are refused. Default 0: no cap (behind a
	// load balancer every client has the balancer's address).
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// MaxHeaderBytes is the largest request header block, in bytes; larger
	// headers get a 431. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ReadTimeout bounds reading one request (headers and body). Default 60s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout is how long SIGTERM waits for in-flight requests and
	// streams before exiting. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ShutdownDelay is how long SIGTERM keeps the API listener serving with
	// /readyz answering 503, before the drain of ShutdownTimeout starts: the
	// time a load balancer or Kubernetes takes to remove the endpoint, so no
	// new connection is refused during a rollout. Default 0 (locally nothing
	// routes by /readyz); 5s in the Kubernetes example.
	ShutdownDelay time.Duration `yaml:"shutdown_delay"`
	// AccessLog logs one line per request (with its request id). Default false:
	// errors are always logged.
	AccessLog bool `yaml:"access_log"`
	// AdminToken guards the admin listener's /admin/ API (Authorization:
	// Bearer TOKEN), usually "${SLUICE_ADMIN_TOKEN}". Empty: the /admin/ API
	// answers 401 to everyone; /metrics and the probes stay open.
	AdminToken string `yaml:"admin_token"`
}

// Route sends models matching Model to Upstream.
type Route struct {
	// Model is an exact name ("gpt-4o"), a prefix wildcard ("gpt-4o*") or
	// the catch-all "*". Required.
	Model string `yaml:"model"`
	// Upstream names an entry of upstreams. Required.
	Upstream string `yaml:"upstream"`
	// Deployment is the Azure deployment to call for this route; default the
	// model name. Only for upstreams of type "azure".
	Deployment string `yaml:"deployment"`
	// Fallbacks name upstreams tried in order when Upstream's breaker is
	// open or its call fails before any byte reached the client (transport
	// error, timeout, 5xx). They must serve the same model name.
	Fallbacks []string `yaml:"fallbacks"`
}

// Upstream types.
const (
	TypeOpenAI = "openai"
	TypeAzure  = "azure"
)

// Defaults applied by Load to zero fields.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultAdminListen     = "127.0.0.1:9090"
	DefaultMaxBodyBytes    = 32 << 20
	DefaultMaxHeaderBytes  = 16 << 10
	DefaultReadTimeout     = 60 * time.Second
	DefaultIdleTimeout     = 120 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultMaxConns        = 512
	DefaultMaxConnWait     = 5 * time.Second
	DefaultIdleConnTimeout = 4 * time.Second
	DefaultConnectTimeout  = 5 * time.Second
	DefaultFirstByte       = 120 * time.Second
	DefaultIdle            = 60 * time.Second
	DefaultTotal           = 30 * time.Minute
	DefaultAzureAPIVersion = "2024-10-21"
)

// LoadFile reads and parses a sluice.yaml file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	return Parse(path, data, nil)
}

// Parse decodes, defaults and validates a sluice.yaml document. name is used
// in error messages; lookupEnv resolves ${VAR} references (nil: the process
// environment). Errors carry file, line and YAML path.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	var c Config
	doc, err := yamlfile.Decode(name, data, &c, yamlfile.Options{LookupEnv: lookupEnv})
	if err != nil {
		return nil, err
	}
	c.applyDefaults()
	if err := c.validate(doc); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	s := &c.Server
	setDefault(&s.Listen, DefaultListen)
	setDefault(&s.AdminListen, DefaultAdminListen)
	setDefault(&s.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&s.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&s.ReadTimeout, DefaultReadTimeout)
	setDefault(&s.IdleTimeout, DefaultIdleTimeout)
	setDefault(&s.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&c.Limits.Store, "memory")
	setDefault(&c.Limits.LeaseTTL, 31*time.Minute)
	setDefault(&c.Redis.Prefix, "sluice:")
	setDefault(&c.Redis.Timeout, 100*time.Millisecond)
	setDefault(&c.Redis.Mode, RedisSingle)
	setDefault(&c.Cache.Store, "memory")
	setDefault(&c.Cache.MaxBytes, 64<<20)
	setDefault(&c.Cache.MaxEntryBytes, 1<<20)
	setDefault(&c.Cache.TTL, time.Hour)
	setDefault(&c.Cache.CoalesceWait, 30*time.Second)
	c.Transcripts.applyDefaults()
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		setDefault(&u.Type, TypeOpenAI)
		if u.Type == TypeAzure {
			setDefault(&u.AuthHeader, "api-key")
			setDefault(&u.APIVersion, DefaultAzureAPIVersion)
		}
		setDefault(&u.AuthHeader, "authorization")
		setDefault(&u.MaxConns, DefaultMaxConns)
		setDefault(&u.MaxConnsPerUser, max(u.MaxConns-max(u.MaxConns/8, 1), 1))
		setDefault(&u.MaxConnWait, DefaultMaxConnWait)
		setDefault(&u.IdleConnTimeout, DefaultIdleConnTimeout)
		setDefault(&u.Timeouts.Connect, DefaultConnectTimeout)
		setDefault(&u.Timeouts.FirstByte, DefaultFirstByte)
		setDefault(&u.Timeouts.Idle, DefaultIdle)
		setDefault(&u.Timeouts.Total, DefaultTotal)
		setDefault(&u.MaxQueue, 10000)
		setDefault(&u.MaxAttempts, 3)
		for j := range u.Keys {
			setDefault(&u.Keys[j].Weight, 1)
		}
	}
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

func (c *Config) validate(doc *yamlfile.Doc) error {
	var errs yamlfile.Errors
	add := func(path, format string, args ...any) { errs.Add(doc.Errorf(path, format, args...)) }

	if c.Server.MaxBodyBytes < 0 {
		add("server.max_body_bytes", "must not be negative")
	}
	if c.Server.MaxHeaderBytes < 0 {
		add("server.max_header_bytes", "must not be negative")
	}
	if c.Server.MaxConnsPerIP < 0 {
		add("server.max_conns_per_ip", "must not be negative")
	}
	if c.Server.ShutdownDelay < 0 || c.Server.ShutdownDelay >= c.Server.ShutdownTimeout {
		add("server.shutdown_delay", "must be at least 0 and below shutdown_timeout (%s), not %s", c.Server.ShutdownTimeout, c.Server.ShutdownDelay)
	}
	var redisUse, cacheUse string
	switch c.Limits.Store {
	case "memory":
	case "redis":
		redisUse = "limits.store: redis"
	default:
		add("limits.store", "must be memory or redis, not %q", c.Limits.Store)
	}
	switch c.Cache.Store {
	case "memory", "off":
	case "redis", "tiered":
		cacheUse = "cache.store: " + c.Cache.Store
	default:
		add("cache.store", "must be memory, redis, tiered or off, not %q", c.Cache.Store)
	}
	if c.Cache.Redis == nil && redisUse == "" {
		redisUse = cacheUse
	}
	validateRedis(&c.Redis, "redis", redisUse, add)
	if c.Cache.Redis != nil {
		cr := c.CacheRedis()
		validateRedis(&cr, "cache.redis", cacheUse, add)
	}
	if c.Cache.MaxBytes < 0 || c.Cache.MaxEntryBytes < 0 || c.Cache.TTL < 0 || c.Cache.CoalesceWait < 0 {
		add("cache", "sizes and durations must not be negative")
	}
	if c.Limits.LeaseTTL < 0 {
		add("limits.lease_ttl", "durations must not be negative")
	}
	c.Transcripts.validate(add)
	if len(c.Upstreams) == 0 {
		add("upstreams", "at least one upstream is required")
	}
	names := make(map[string]*Upstream, len(c.Upstreams))
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		switch {
		case u.Name == "":
			add(p+".name", "is required")
		case names[u.Name] != nil:
			add(p+".name", "duplicate upstream name %q", u.Name)
		default:
			names[u.Name] = u
		}
		if u.Type != TypeOpenAI && u.Type != TypeAzure {
			add(p+".type", "must be %q or %q, not %q", TypeOpenAI, TypeAzure, u.Type)
		}
		if u.AuthHeader != "authorization" && u.AuthHeader != "api-key" {
			add(p+".auth_header", "must be \"authorization\" or \"api-key\", not %q", u.AuthHeader)
		}
		if err := checkBaseURL(u.BaseURL); err != nil {
			add(p+".base_url", "%v", err)
		}
		if u.MaxConns < 0 {
			add(p+".max_conns", "must not be negative")
		}
		if u.MaxConnsPerUser < 0 || u.MaxConnsPerUser > u.MaxConns {
			add(p+".max_conns_per_user", "must be between 1 and max_conns (%d)", u.MaxConns)
		}
		if u.IdleConnTimeout < 0 {
			add(p+".idle_conn_timeout", "must not be negative")
		}
		if !u.TLS.IsZero() {
			if b, err := url.Parse(u.BaseURL); err == nil && b.Scheme == "http" {
				add(p+".tls", "applies to an https base_url only (base_url is %s)", u.BaseURL)
			} else if _, err := u.TLS.ClientConfig(); err != nil {
				add(p+".tls", "%v", err)
			}
		}
		if u.Proxy != "" && u.Proxy != ProxyOff {
			if _, err := ParseProxy(u.Proxy); err != nil {
				add(p+".proxy", "%v", err)
			}
		}
		if u.MaxQueue < 0 || u.MaxAttempts < 1 {
			add(p, "max_queue must not be negative and max_attempts must be at least 1")
		}
		u.Budget.validate(p+".budget", add)
		keyIDs := map[string]bool{}
		for j, k := range u.Keys {
			kp := fmt.Sprintf("%s.keys[%d]", p, j)
			if k.ID == "" || keyIDs[k.ID] {
				add(kp+".id", "is required and must be unique in the upstream")
			}
			keyIDs[k.ID] = true
			if k.Weight < 1 {
				add(kp+".weight", "must be at least 1")
			}
			k.Budget.validate(kp+".budget", add)
		}
		for _, t := range []struct {
			name string
			d    time.Duration
		}{{"connect", u.Timeouts.Connect}, {"first_byte", u.Timeouts.FirstByte}, {"idle", u.Timeouts.Idle}, {"total", u.Timeouts.Total}} {
			if t.d < 0 {
				add(p+".timeouts."+t.name, "must not be negative")
			}
		}
	}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if r.Model == "" {
			add(p+".model", "is required")
		} else if strings.Contains(strings.TrimSuffix(r.Model, "*"), "*") {
			add(p+".model", "a wildcard may only end the pattern: %q", r.Model)
		}
		u := names[r.Upstream]
		switch {
		case r.Upstream == "":
			add(p+".upstream", "is required")
		case u == nil:
			add(p+".upstream", "unknown upstream %q", r.Upstream)
		case r.Deployment != "" && u.Type != TypeAzure:
			add(p+".deployment", "only upstreams of type %q take a deployment", TypeAzure)
		}
		for j, fb := range r.Fallbacks {
			if names[fb] == nil || fb == r.Upstream {
				add(fmt.Sprintf("%s.fallbacks[%d]", p, j), "unknown upstream %q (or the route's own)", fb)
			}
		}
	}
	for alias, target := range c.Aliases {
		if target == "" {
			add("aliases."+alias, "alias target must not be empty")
		}
		if _, ok := c.Aliases[target]; ok {
			add("aliases."+alias, "alias target %q is itself an alias", target)
		}
	}
	return errs.Err()
}
