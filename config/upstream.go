package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Upstream is one OpenAI-compatible provider endpoint.
type Upstream struct {
	// Name identifies the upstream in routes, logs and metric labels. Required.
	Name string `yaml:"name"`
	// Type is "openai" (any OpenAI-compatible server: OpenAI, vLLM, Ollama,
	// Azure's /openai/v1 API) or "azure" (Azure OpenAI deployment URLs).
	// Default "openai".
	Type string `yaml:"type"`
	// BaseURL is the provider's base URL. For "openai" it ends where OpenAI's
	// ends ("https://api.openai.com/v1"); the part of a request path after /v1
	// is appended. For "azure" it is the resource URL
	// ("https://NAME.openai.azure.com"). Required.
	BaseURL string `yaml:"base_url"`
	// APIKey is sent to the provider (usually "${OPENAI_API_KEY}"). Empty
	// means no credential is sent (local servers).
	APIKey string `yaml:"api_key"`
	// AuthHeader names how the key is sent: "authorization" (Bearer, the
	// default for "openai") or "api-key" (the default for "azure").
	AuthHeader string `yaml:"auth_header"`
	// APIVersion is Azure's api-version query value. Default "2024-10-21"
	// for "azure"; unused otherwise.
	APIVersion string `yaml:"api_version"`
	// Organization, when set, is sent as OpenAI-Organization; a client's own
	// value is never forwarded.
	Organization string `yaml:"organization"`
	// Project, when set, is sent as OpenAI-Project; a client's own value is
	// never forwarded.
	Project string `yaml:"project"`
	// Timeouts bound each phase of a call.
	Timeouts Timeouts `yaml:"timeouts"`
	// MaxConns caps open connections to this upstream. Default 512.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerUser caps the connections to this upstream one user (a
	// key's user, or an app's end user) holds at once, so no user's slow
	// calls take every connection from the others; a user at the cap waits
	// for one of its own. Default MaxConns less an eighth of them (at least
	// one) kept for the other users: a single-tenant deployment keeps
	// nearly all its connections (448 of 512).
	MaxConnsPerUser int `yaml:"max_conns_per_user"`
	// MaxConnWait is how long a request waits for a free connection when
	// MaxConns are busy before failing with 502. Default 5s.
	MaxConnWait time.Duration `yaml:"max_conn_wait"`
	// IdleConnTimeout is how long a pooled connection may sit unused before
	// it is closed rather than reused. Node's http server and uvicorn (vLLM)
	// close idle connections after 5 s, so the default stays under that; a
	// far provider that keeps connections longer (OpenAI: about 90 s) saves
	// a TCP and TLS handshake per pause with a longer value. Default 4s.
	IdleConnTimeout time.Duration `yaml:"idle_conn_timeout"`
	// Budget is the provider's capacity for this upstream (its account's
	// rate limits): requests beyond it wait in a fair queue instead of
	// being sent. Zero fields are unlimited. Shared by replicas when
	// limits.store is redis.
	Budget Budget `yaml:"budget"`
	// Keys is a pool of API keys (or projects) for this upstream, each with
	// a weight and its own budget; a request is sent with a key that has
	// capacity, and a key that answered 429 rests for its retry-after. When
	// empty, APIKey is the only key.
	Keys []UpstreamKey `yaml:"keys"`
	// MaxQueue bounds the requests waiting for this upstream's capacity in
	// one replica; more are rejected with 429. Default 10000.
	MaxQueue int `yaml:"max_queue"`
	// MaxAttempts bounds the calls made for one request when the upstream
	// answers 429 or 503 (each retried within the request's max wait, and
	// only before any byte reached the client), fallbacks included.
	// Default 3.
	MaxAttempts int `yaml:"max_attempts"`
	// Breaker stops calls to an upstream that keeps failing.
	Breaker Breaker `yaml:"breaker"`
	// TLS verifies a private or self-signed upstream (its own CA, another
	// server name) and holds a client certificate for mTLS. Only for an
	// https base_url: a tls block on an http one is an error, since nothing
	// of it would apply. Default: the system's roots, the base_url's host as
	// server name, no client certificate.
	TLS UpstreamTLS `yaml:"tls"`
	// Proxy is the egress HTTP proxy for this upstream:
	// "http://[user:pass@]host:port" (port default 80; user:pass, when set,
	// is sent as Proxy-Authorization: Basic), or "off" to connect directly
	// whatever the environment says. Default "": the environment's
	// HTTPS_PROXY (https base_url) or HTTP_PROXY (http base_url), with
	// NO_PROXY's exceptions, by Go's rules, which never proxy "localhost" or
	// a loopback address. Connections go through a CONNECT tunnel, so TLS
	// runs end to end and the proxy sees neither the key nor the
	// conversation of an https upstream; the traffic of an http upstream is
	// plain text to the proxy as to the network.
	Proxy string `yaml:"proxy"`
}

// UpstreamTLS configures the TLS client of an https upstream. Relative
// paths are read from the working directory, once, at startup (and by
// sluice validate).
type UpstreamTLS struct {
	// CAFile is a PEM file of the CA certificates that verify the upstream,
	// instead of the system's roots (as curl's --cacert): an internal server
	// is trusted through its private CA alone. To trust both, put the system
	// bundle and the private CA in one file, or add a CA for the whole
	// process with SSL_CERT_FILE / SSL_CERT_DIR. Default "": the system's
	// roots.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the upstream's certificate is verified against
	// and sent as SNI, when it is not the base_url's host (an upstream
	// addressed by IP, or through a name its certificate does not carry).
	// Default "": the base_url's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate the upstream presents: the
	// traffic is encrypted but anyone on the path can pose as the upstream
	// and read the key. For a test bench only; ca_file is the way to trust
	// a self-signed server. Excludes ca_file. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// CertFile and KeyFile are a PEM client certificate (with its chain)
	// and its private key, presented to an upstream that requires mTLS.
	// Both or neither. Default "": no client certificate.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// IsZero reports that t sets nothing (the defaults).
func (t *UpstreamTLS) IsZero() bool { return *t == UpstreamTLS{} }

// ClientConfig reads t's files and returns the TLS client settings they
// make, nil when t sets nothing. Startup and validation both call it, so a
// file that sluice validate accepts is one serve loads.
func (t *UpstreamTLS) ClientConfig() (*tls.Config, error) {
	if t.IsZero() {
		return nil, nil
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("cert_file and key_file go together: set both or neither")
	}
	if t.InsecureSkipVerify && t.CAFile != "" {
		return nil, fmt.Errorf("ca_file and insecure_skip_verify exclude each other")
	}
	c := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file, key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// ProxyOff as upstreams[].proxy connects directly, whatever the
// environment's HTTPS_PROXY or HTTP_PROXY say.
const ProxyOff = "off"

// ParseProxy parses an egress proxy's URL, "http://[user:pass@]host[:port]"
// (scheme-less "host:port" is taken as http, as in HTTPS_PROXY). Only http
// proxies are supported. Errors never show the password.
func ParseProxy(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("not a proxy URL (http://[user:pass@]host:port)")
	}
	switch {
	case u.Scheme != "http":
		return nil, fmt.Errorf("proxy %s: only http:// proxies are supported (CONNECT), not %s://", u.Redacted(), u.Scheme)
	case u.Hostname() == "":
		return nil, fmt.Errorf("proxy %s: has no host", u.Redacted())
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("proxy %s: must be http://[user:pass@]host:port, without a path or query", u.Redacted())
	}
	return u, nil
}

// Breaker configures an upstream's circuit breaker: when at least MinCalls
// calls ended within Window and FailureRatio of them failed (transport
// error, timeout or 5xx), the upstream is skipped (its route's fallbacks
// take over, else 503) for Cooldown; then one probe call decides.
type Breaker struct {
	// FailureRatio opens the breaker. Default 0.5; -1 disables it.
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinCalls is the fewest calls the ratio is judged on. Default 20.
	MinCalls int64 `yaml:"min_calls"`
	// Window is the rolling window of calls. Default 10s.
	Window time.Duration `yaml:"window"`
	// Cooldown is how long the breaker stays open. Default 10s.
	Cooldown time.Duration `yaml:"cooldown"`
}

// Budget is a provider's capacity. Zero fields are unlimited.
type Budget struct {
	// RPM is requests per minute.
	RPM int64 `yaml:"rpm"`
	// RPMBurst is how many requests may start at once. Default RPM/60 (one
	// second's worth, at least 1): an even drip.
	RPMBurst int64 `yaml:"rpm_burst"`
	// TPM is tokens (prompt + completion, as reserved before the call and
	// settled from usage) per minute.
	TPM int64 `yaml:"tpm"`
	// TPMBurst is how many tokens may be reserved at once. Default TPM/6
	// (ten seconds' worth).
	TPMBurst int64 `yaml:"tpm_burst"`
	// Concurrent is the number of calls in flight at once.
	Concurrent int64 `yaml:"concurrent"`
}

// UpstreamKey is one API key of an upstream's pool.
type UpstreamKey struct {
	// ID names the key in logs and metrics. Required, unique per upstream.
	ID string `yaml:"id"`
	// APIKey is the secret (usually "${ENV}").
	APIKey string `yaml:"api_key"`
	// Weight is the key's share of requests. Default 1.
	Weight int64 `yaml:"weight"`
	// Budget is the key's own capacity, within the upstream's.
	Budget Budget `yaml:"budget"`
}

// Timeouts bound an upstream call. Zero values take the defaults.
type Timeouts struct {
	// Connect bounds dialing (TCP and TLS). Default 5s.
	Connect time.Duration `yaml:"connect"`
	// FirstByte bounds the wait from sending the request to the first byte of
	// the response: a model's time to think. Default 120s.
	FirstByte time.Duration `yaml:"first_byte"`
	// Idle bounds the silence between two reads of a response, such as two
	// stream events. Default 60s.
	Idle time.Duration `yaml:"idle"`
	// Total bounds the whole call, stream included. Default 30m.
	Total time.Duration `yaml:"total"`
}

func checkBaseURL(s string) error {
	if s == "" {
		return fmt.Errorf("is required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %q", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https: %q", s)
	}
	if u.Host == "" {
		return fmt.Errorf("has no host: %q", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("must not carry a query or fragment: %q", s)
	}
	return nil
}

func (b Budget) validate(path string, add func(path, format string, args ...any)) {
	if b.RPM < 0 || b.RPMBurst < 0 || b.TPM < 0 || b.TPMBurst < 0 || b.Concurrent < 0 {
		add(path, "values must not be negative")
	}
}
