package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/config"
	"sluice/internal/testnet"
)

// dialKey is the upstream key of these tests: it must never show in what a
// proxy relays for a TLS upstream.
const dialKey = "sk-dial-test-3c1f9a7e5b2d4c6e8f0a"

// recordingUpstream is an HTTP server that records the credentials it was sent.
type recordingUpstream struct {
	srv  *httptest.Server
	port string
	mu   sync.Mutex
	auth []string
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.auth = append(u.auth, r.Header.Get("Authorization"))
	u.mu.Unlock()
	_, _ = io.WriteString(w, "hello from "+r.URL.Path)
}

// calls returns the Authorization values the upstream received.
func (u *recordingUpstream) calls() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.auth...)
}

// startUpstream serves a recordingUpstream on loopback: plain when cert is nil,
// else TLS with cert, demanding a client certificate signed by clientCA
// when that is set.
func startUpstream(t *testing.T, cert *tls.Certificate, clientCA *testnet.PKI) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{}
	u.srv = httptest.NewUnstartedServer(u)
	if cert == nil {
		u.srv.Start()
	} else {
		u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		if clientCA != nil {
			u.srv.TLS.ClientCAs, u.srv.TLS.ClientAuth = clientCA.Pool(), tls.RequireAndVerifyClientCert
		}
		// The handshake errors the tests cause are expected.
		u.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
		u.srv.StartTLS()
	}
	t.Cleanup(u.srv.Close)
	_, u.port, _ = net.SplitHostPort(u.srv.Listener.Addr().String())
	return u
}

// get sends GET base/models with dialKey through upstreamDialer's dial and
// TLS settings, as the upstream's HostClient does, and returns the body.
func get(t *testing.T, c *config.Upstream, base string) (string, error) {
	t.Helper()
	return getAt(t, c, base, "")
}

// getAt is get with the HostClient dialing addr instead of base's host:
// the name in base decides about the proxy, addr is where a direct
// connection goes.
func getAt(t *testing.T, c *config.Upstream, base, addr string) (string, error) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeouts.Connect == 0 {
		c.Timeouts.Connect = 2 * time.Second
	}
	dial, tlsConfig, err := upstreamDialer(c, u)
	if err != nil {
		t.Fatalf("upstreamDialer: %v", err)
	}
	if addr == "" {
		addr = u.Host
	}
	hc := &fasthttp.HostClient{Addr: addr, IsTLS: u.Scheme == "https", TLSConfig: tlsConfig, Dial: dial}
	defer hc.CloseIdleConnections()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(base + "/models")
	req.Header.Set("Authorization", "Bearer "+dialKey)
	if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil {
		return "", err
	}
	if resp.StatusCode() != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	return string(resp.Body()), nil
}

func TestDialPrivateCAAndMTLS(t *testing.T) {
	pki := testnet.NewPKI(t, "private")
	srvCert, _, _ := pki.Issue(t, "server", false, []string{"localhost"}, net.ParseIP("127.0.0.1"))
	_, clientCert, clientKey := pki.Issue(t, "client", true, nil)
	up := startUpstream(t, &srvCert, pki)
	base := "https://127.0.0.1:" + up.port + "/v1"

	body, err := get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile, CertFile: clientCert, KeyFile: clientKey}}, base)
	if err != nil || body != "hello from /v1/models" {
		t.Fatalf("private CA and client certificate: %q, %v", body, err)
	}
	if got := up.calls(); len(got) != 1 || got[0] != "Bearer "+dialKey {
		t.Fatalf("upstream saw %q", got)
	}

	// The same server by its DNS name: fasthttp takes the server name from
	// the address.
	body, err = get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile, CertFile: clientCert, KeyFile: clientKey}}, "https://localhost:"+up.port+"/v1")
	if err != nil || body != "hello from /v1/models" {
		t.Fatalf("by name: %q, %v", body, err)
	}

	// No client certificate: the server refuses the handshake.
	if _, err := get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile}}, base); err == nil {
		t.Fatal("an mTLS server answered a client without a certificate")
	}
	// A client certificate of another CA: refused too.
	other := testnet.NewPKI(t, "other")
	_, otherCert, otherKey := other.Issue(t, "stranger", true, nil)
	if _, err := get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile, CertFile: otherCert, KeyFile: otherKey}}, base); err == nil {
		t.Fatal("an mTLS server answered a client certificate of another CA")
	}
	// The wrong CA, and the system roots: the server is not trusted.
	for _, tc := range []config.UpstreamTLS{
		{CAFile: other.CAFile, CertFile: clientCert, KeyFile: clientKey},
		{CertFile: clientCert, KeyFile: clientKey},
	} {
		_, err := get(t, &config.Upstream{TLS: tc}, base)
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Fatalf("ca_file %q: want an unknown-authority error, got %v", tc.CAFile, err)
		}
	}
	if n := len(up.calls()); n != 2 {
		t.Fatalf("the upstream answered %d requests; want only the 2 trusted ones", n)
	}

	// insecure_skip_verify trusts anyone.
	if _, err := get(t, &config.Upstream{TLS: config.UpstreamTLS{InsecureSkipVerify: true, CertFile: clientCert, KeyFile: clientKey}}, base); err != nil {
		t.Fatalf("insecure_skip_verify: %v", err)
	}
}

func TestDialServerName(t *testing.T) {
	pki := testnet.NewPKI(t, "private")
	// A certificate for a name only, served at an IP address.
	srvCert, _, _ := pki.Issue(t, "server", false, []string{"llm.internal.example"})
	up := startUpstream(t, &srvCert, nil)
	base := "https://127.0.0.1:" + up.port + "/v1"

	_, err := get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile}}, base)
	var wrongHost x509.HostnameError
	if !errors.As(err, &wrongHost) {
		t.Fatalf("without server_name: want a hostname error, got %v", err)
	}
	body, err := get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile, ServerName: "llm.internal.example"}}, base)
	if err != nil || body != "hello from /v1/models" {
		t.Fatalf("server_name: %q, %v", body, err)
	}
	_, err = get(t, &config.Upstream{TLS: config.UpstreamTLS{CAFile: pki.CAFile, ServerName: "other.internal.example"}}, base)
	if !errors.As(err, &wrongHost) {
		t.Fatalf("a wrong server_name: want a hostname error, got %v", err)
	}
}

func TestDialThroughConnectProxy(t *testing.T) {
	pki := testnet.NewPKI(t, "private")
	srvCert, _, _ := pki.Issue(t, "server", false, []string{"upstream.sluice.test"})
	_, clientCert, clientKey := pki.Issue(t, "client", true, nil)
	tlsUp := startUpstream(t, &srvCert, pki)
	plainUp := startUpstream(t, nil, nil)
	p := testnet.StartConnectProxy(t)
	proxyURL := strings.Replace(p.URL, "http://", "http://gw-user:s3cr%40t:x@", 1)

	// A TLS upstream with mTLS, through the proxy with credentials.
	base := "https://upstream.sluice.test:" + tlsUp.port + "/v1"
	c := &config.Upstream{Proxy: proxyURL, TLS: config.UpstreamTLS{CAFile: pki.CAFile, CertFile: clientCert, KeyFile: clientKey}}
	for i := 0; i < 2; i++ {
		body, err := get(t, c, base)
		if err != nil || body != "hello from /v1/models" {
			t.Fatalf("through the proxy: %q, %v", body, err)
		}
	}
	targets, auth := p.Requests()
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("gw-user:s3cr@t:x"))
	if len(targets) != 2 || targets[0] != "upstream.sluice.test:"+tlsUp.port || auth[0] != wantAuth || auth[1] != wantAuth {
		t.Fatalf("proxy saw CONNECT %q with Proxy-Authorization %q; want %q", targets, auth, wantAuth)
	}
	if got := tlsUp.calls(); len(got) != 2 || got[0] != "Bearer "+dialKey {
		t.Fatalf("upstream saw %q", got)
	}
	seen := p.Seen()
	if len(seen) < 1000 {
		t.Fatalf("the proxy relayed only %d bytes: not the TLS exchanges", len(seen))
	}
	for _, secret := range []string{dialKey, "Bearer", "/v1/models", "hello from"} {
		if bytes.Contains(seen, []byte(secret)) {
			t.Fatalf("the proxy saw %q in clear text of a TLS upstream", secret)
		}
	}

	// A plain-http upstream goes through a CONNECT tunnel too, and the
	// proxy reads it: the recorder sees what a tunnel carries.
	body, err := get(t, &config.Upstream{Proxy: p.URL}, "http://plain.sluice.test:"+plainUp.port+"/v1")
	if err != nil || body != "hello from /v1/models" {
		t.Fatalf("plain upstream through the proxy: %q, %v", body, err)
	}
	if targets, auth := p.Requests(); len(targets) != 3 || targets[2] != "plain.sluice.test:"+plainUp.port || auth[2] != "" {
		t.Fatalf("proxy saw CONNECT %q with Proxy-Authorization %q", targets, auth)
	}
	if !bytes.Contains(p.Seen(), []byte("Bearer "+dialKey)) {
		t.Fatal("the recorder missed a plain request's key: it does not see what the tunnel carries")
	}

	// proxy: off connects directly.
	before := len(p.Seen())
	body, err = get(t, &config.Upstream{Proxy: config.ProxyOff}, "http://127.0.0.1:"+plainUp.port+"/v1")
	if err != nil || body != "hello from /v1/models" || len(p.Seen()) != before {
		t.Fatalf("proxy off: %q, %v; the proxy saw %d new bytes", body, err, len(p.Seen())-before)
	}
}

func TestDialProxyRefuses(t *testing.T) {
	up := startUpstream(t, nil, nil)
	for _, status := range []int{http.StatusProxyAuthRequired, http.StatusForbidden} {
		p := testnet.StartConnectProxy(t)
		p.Refuse = status
		u, _ := url.Parse("https://upstream.sluice.test:" + up.port + "/v1")
		dial, _, err := upstreamDialer(&config.Upstream{
			Proxy:    strings.Replace(p.URL, "http://", "http://gw-user:hunter2@", 1),
			Timeouts: config.Timeouts{Connect: 2 * time.Second},
		}, u)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := dial(u.Host)
		if err == nil {
			_ = conn.Close()
			t.Fatalf("proxy answering %d: dial succeeded", status)
		}
		var refused *proxyRefusedError
		if !errors.As(err, &refused) || refused.StatusCode != status {
			t.Fatalf("proxy answering %d: got %v", status, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, strings.TrimPrefix(p.URL, "http://")) || !strings.Contains(msg, strconv.Itoa(status)) || strings.Contains(msg, "hunter2") {
			t.Fatalf("error %q: want the proxy's address and status, never its password", msg)
		}
		if status == http.StatusProxyAuthRequired && !strings.Contains(msg, "user:password") {
			t.Fatalf("error %q: a 407 should point at the proxy's credentials", msg)
		}
	}
}

func TestDialConnectTimeoutCoversProxy(t *testing.T) {
	p := testnet.StartConnectProxy(t)
	p.Silent = true
	u, _ := url.Parse("https://upstream.sluice.test:443/v1")
	dial, _, err := upstreamDialer(&config.Upstream{Proxy: p.URL, Timeouts: config.Timeouts{Connect: 200 * time.Millisecond}}, u)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn, err := dial(u.Host)
	took := time.Since(start)
	if err == nil {
		_ = conn.Close()
		t.Fatal("a proxy that never answers CONNECT: dial succeeded")
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) || took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("dial ended after %v with %v; want a deadline error after about 200ms", took, err)
	}
}

func TestEgressProxySetting(t *testing.T) {
	https, _ := url.Parse("https://api.example.com/v1")
	env := func(v string) func(*url.URL) (*url.URL, error) {
		return func(*url.URL) (*url.URL, error) {
			if v == "" {
				return nil, nil
			}
			return url.Parse(v)
		}
	}
	for _, tc := range []struct {
		setting, env, want, err string
	}{
		{"", "", "", ""},
		{"", "http://env-proxy:3128", "env-proxy:3128", ""},
		{"off", "http://env-proxy:3128", "", ""},
		{"http://cfg-proxy:8080", "http://env-proxy:3128", "cfg-proxy:8080", ""},
		{"http://u:pw@cfg-proxy", "", "cfg-proxy:80", ""},
		{"socks5://u:pw@cfg-proxy:1080", "", "", "only http:// proxies"},
		{"", "socks5://u:pw@env-proxy:1080", "", "HTTPS_PROXY"},
		{"http://u:pw@cfg-proxy:8080/path", "", "", "without a path"},
	} {
		p, err := egressProxy(tc.setting, https, env(tc.env))
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "pw") {
				t.Errorf("%q (env %q): error %v; want one saying %q, without the password", tc.setting, tc.env, err, tc.err)
			}
		case err != nil:
			t.Errorf("%q (env %q): %v", tc.setting, tc.env, err)
		case tc.want == "" && p != nil, tc.want != "" && (p == nil || canonicalAddr(p) != tc.want):
			t.Errorf("%q (env %q): proxy %v; want %q", tc.setting, tc.env, p, tc.want)
		}
	}
}

// TestDialEnvProxy checks HTTPS_PROXY, HTTP_PROXY and NO_PROXY through
// net/http's own rules. net/http reads them once per process, so the test
// runs itself again in a process of its own with them set.
func TestDialEnvProxy(t *testing.T) {
	if os.Getenv("SLUICE_TEST_DIAL_ENV") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDialEnvProxy$", "-test.count=1", "-test.v", "-test.timeout=60s")
		cmd.Env = append(os.Environ(), "SLUICE_TEST_DIAL_ENV=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestDialEnvProxy")) {
			t.Fatalf("the test in its own process: %v\n%s", err, out)
		}
		return
	}
	pki := testnet.NewPKI(t, "private")
	srvCert, _, _ := pki.Issue(t, "server", false, []string{"upstream.sluice.test", "direct.sluice.test"}, net.ParseIP("127.0.0.1"))
	tlsUp := startUpstream(t, &srvCert, nil)
	plainUp := startUpstream(t, nil, nil)
	p := testnet.StartConnectProxy(t)
	for _, k := range []string{"https_proxy", "http_proxy", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(k, "")
	}
	t.Setenv("HTTPS_PROXY", p.URL)
	t.Setenv("HTTP_PROXY", p.URL)
	t.Setenv("NO_PROXY", "direct.sluice.test,.corp.example")

	caOnly := config.UpstreamTLS{CAFile: pki.CAFile}
	proxied := func(name string, want int, do func() (string, error)) {
		t.Helper()
		before, _ := p.Requests()
		body, err := do()
		if err != nil || body != "hello from /v1/models" {
			t.Fatalf("%s: %q, %v", name, body, err)
		}
		after, _ := p.Requests()
		if len(after)-len(before) != want {
			t.Fatalf("%s: %d CONNECTs; want %d", name, len(after)-len(before), want)
		}
	}
	// https: HTTPS_PROXY.
	proxied("https by HTTPS_PROXY", 1, func() (string, error) {
		return get(t, &config.Upstream{TLS: caOnly}, "https://upstream.sluice.test:"+tlsUp.port+"/v1")
	})
	// http: HTTP_PROXY.
	proxied("http by HTTP_PROXY", 1, func() (string, error) {
		return get(t, &config.Upstream{}, "http://upstream.sluice.test:"+plainUp.port+"/v1")
	})
	// Loopback is never proxied by the environment's rules.
	proxied("loopback", 0, func() (string, error) {
		return get(t, &config.Upstream{TLS: caOnly}, "https://127.0.0.1:"+tlsUp.port+"/v1")
	})
	// NO_PROXY: the upstream's connections go directly (to the address the
	// HostClient dials; the name is only the base_url's).
	proxied("NO_PROXY", 0, func() (string, error) {
		return getAt(t, &config.Upstream{TLS: caOnly}, "https://direct.sluice.test:"+tlsUp.port+"/v1", "127.0.0.1:"+tlsUp.port)
	})
	// upstreams[].proxy: off wins over the environment.
	proxied("proxy off", 0, func() (string, error) {
		return getAt(t, &config.Upstream{Proxy: config.ProxyOff}, "http://upstream.sluice.test:"+plainUp.port+"/v1", "127.0.0.1:"+plainUp.port)
	})
	// An explicit proxy wins over NO_PROXY and the loopback rule.
	proxied("explicit proxy", 1, func() (string, error) {
		return get(t, &config.Upstream{Proxy: p.URL}, "http://127.0.0.1:"+plainUp.port+"/v1")
	})
}

// TestDialSessionResumption checks that an upstream's connections resume
// the TLS session of an earlier one instead of a full handshake: with
// idle_conn_timeout short, every call here dials anew.
func TestDialSessionResumption(t *testing.T) {
	pki := testnet.NewPKI(t, "private")
	srvCert, _, _ := pki.Issue(t, "server", false, nil, net.ParseIP("127.0.0.1"))
	var mu sync.Mutex
	var resumed []bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resumed = append(resumed, r.TLS.DidResume)
		mu.Unlock()
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	up := testUpstream(t, config.Upstream{Name: "tls", BaseURL: srv.URL + "/v1", AuthHeader: "authorization",
		TLS: config.UpstreamTLS{CAFile: pki.CAFile}, MaxConns: 4, MaxConnsPerUser: 4, IdleConnTimeout: time.Millisecond,
		Timeouts: config.Timeouts{Connect: 2 * time.Second, FirstByte: 2 * time.Second, Idle: 2 * time.Second, Total: 5 * time.Second}})
	for i := 0; i < 3; i++ {
		time.Sleep(5 * time.Millisecond) // past idle_conn_timeout: a new connection
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		up.setURI(req, epModels, []byte("/v1/models"), nil, "")
		_, err := up.do(req, resp, "u", nil, nil)
		if err != nil || resp.StatusCode() != http.StatusOK {
			t.Fatalf("call %d: %d, %v", i, resp.StatusCode(), err)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(resumed) != 3 || resumed[0] || !resumed[1] || !resumed[2] {
		t.Fatalf("resumed sessions %v; want a full handshake, then resumptions", resumed)
	}
}
