package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"sluice/fakeai"
)

// egressHost is the upstream's name in these tests: not loopback-looking,
// so the environment's proxy applies to it; the test proxy maps it to
// 127.0.0.1.
const egressHost = "upstream.sluice.test"

// egressPKI is a private CA with a server certificate for egressHost and a
// client certificate, as PEM files.
type egressPKI struct {
	caFile, clientCert, clientKey string
	ca                            *x509.CertPool
	server                        tls.Certificate
}

func newEgressPKI(t *testing.T) *egressPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
		return path
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice e2e private CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &egressPKI{caFile: write("ca.pem", "CERTIFICATE", caDER), ca: x509.NewCertPool()}
	p.ca.AddCert(caCert)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, dns []string) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", kder)
	}
	srvCert, srvKey := leaf(2, "upstream", x509.ExtKeyUsageServerAuth, []string{egressHost})
	p.clientCert, p.clientKey = leaf(3, "sluice-client", x509.ExtKeyUsageClientAuth, nil)
	if p.server, err = tls.LoadX509KeyPair(srvCert, srvKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// startMTLSFake serves a fake upstream over TLS with the PKI's server
// certificate, demanding a client certificate of the PKI's CA. peers counts
// the requests by the client certificate's name.
func startMTLSFake(t *testing.T, p *egressPKI) (fake *fakeai.Server, port string, peers func() map[string]int) {
	t.Helper()
	fake = fakeai.New(fakeai.Config{APIKey: upstreamKey})
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			seen[r.TLS.PeerCertificates[0].Subject.CommonName]++
		}
		mu.Unlock()
		fake.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.ca, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ = net.SplitHostPort(srv.Listener.Addr().String())
	return fake, port, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// egressProxy is a CONNECT proxy on loopback that records every byte it
// receives or relays and maps *.sluice.test to 127.0.0.1.
type egressProxy struct {
	URL string
	// refuse is the status answered to every CONNECT instead of 200 (0:
	// tunnel). Set before the first connection.
	refuse  int
	wg      sync.WaitGroup
	mu      sync.Mutex
	seen    bytes.Buffer
	targets []string
	auth    []string
	conns   map[net.Conn]bool
}

func startEgressProxy(t *testing.T) *egressProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &egressProxy{URL: "http://" + ln.Addr().String(), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil || !p.track(c) {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.conns = nil
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *egressProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		_ = c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *egressProxy) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen.Write(b)
}

// record returns what the proxy saw: every byte, the CONNECT targets and
// the Proxy-Authorization values.
func (p *egressProxy) record() (seen []byte, targets, auth []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.seen.Bytes()), append([]string(nil), p.targets...), append([]string(nil), p.auth...)
}

func (p *egressProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(io.TeeReader(c, p))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.auth = append(p.auth, req.Header.Get("Proxy-Authorization"))
	p.mu.Unlock()
	host, port, err := net.SplitHostPort(req.Host)
	if req.Method != http.MethodConnect || err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if p.refuse != 0 {
		_, _ = io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(p.refuse)+" "+http.StatusText(p.refuse)+"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if strings.HasSuffix(host, ".sluice.test") {
		host = "127.0.0.1"
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 2*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	if !p.track(up) {
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(c, io.TeeReader(up, p))
		_ = c.Close()
		close(done)
	}()
	_, _ = io.Copy(up, br)
	_ = up.Close()
	<-done
}

// egressConfig is a sluice.yaml with one upstream at base, tls as given,
// and proxyLine ("" or "    proxy: …\n").
func egressConfig(base, tlsBlock, proxyLine string) string {
	return `server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  shutdown_timeout: 10s
upstreams:
  - name: internal
    base_url: ` + base + `
    api_key: ${OPENAI_API_KEY}
    timeouts:
      connect: 2s
      first_byte: 20s
      idle: 20s
      total: 1m
` + tlsBlock + proxyLine + `routes:
  - model: "*"
    upstream: internal
aliases: {}
`
}

// noEnvProxy clears the environment's proxy variables for sluice.
func noEnvProxy() map[string]string {
	env := map[string]string{}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"} {
		env[k] = ""
	}
	return env
}

// TestEgressPrivateCAMTLSProxy chats through sluice with an upstream that
// has a private CA and demands a client certificate, reached through a
// CONNECT proxy given by HTTPS_PROXY or by upstreams[].proxy, and checks
// that the proxy never saw the key or the conversation.
func TestEgressPrivateCAMTLSProxy(t *testing.T) {
	pki := newEgressPKI(t)
	fake, port, peers := startMTLSFake(t, pki)
	base := "https://" + egressHost + ":" + port + "/v1"
	tlsBlock := "    tls:\n      ca_file: " + pki.caFile + "\n      cert_file: " + pki.clientCert + "\n      key_file: " + pki.clientKey + "\n"

	chat := func(t *testing.T, s *sluiceProc) {
		t.Helper()
		ctx := testContext(t, 20*time.Second)
		prompt := "through the tunnel " + nonce()
		comp, err := s.client(demoKey).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
		})
		if err != nil {
			t.Fatalf("chat through sluice: %v", err)
		}
		if len(comp.Choices) != 1 || comp.Choices[0].Message.Content != "echo: "+prompt {
			t.Fatalf("answer %+v; want echo: %s", comp.Choices, prompt)
		}
		prompt = "streamed through the tunnel " + nonce()
		r := readChatStream(time.Now(), s.client(demoKey).Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
		}))
		if r.err != nil || r.content != "echo: "+prompt || r.finish != "stop" {
			t.Fatalf("stream: err %v content %q finish %q", r.err, r.content, r.finish)
		}
		if got := fake.LastRequest().Header.Get("Authorization"); got != "Bearer "+upstreamKey {
			t.Fatalf("upstream Authorization = %q", got)
		}
	}
	// checkProxy asserts the proxy tunnelled to the upstream with auth and
	// never saw the key or the prompts in clear text.
	checkProxy := func(t *testing.T, p *egressProxy, wantAuth string) {
		t.Helper()
		seen, targets, auth := p.record()
		if len(targets) == 0 {
			t.Fatal("the proxy saw no CONNECT: sluice went around it")
		}
		for i := range targets {
			if targets[i] != egressHost+":"+port || auth[i] != wantAuth {
				t.Fatalf("CONNECT %q with Proxy-Authorization %q; want %s:%s with %q", targets[i], auth[i], egressHost, port, wantAuth)
			}
		}
		if len(seen) < 2000 {
			t.Fatalf("the proxy relayed only %d bytes", len(seen))
		}
		for _, secret := range []string{upstreamKey, "Bearer", "through the tunnel", "chat/completions"} {
			if bytes.Contains(seen, []byte(secret)) {
				t.Fatalf("the proxy saw %q in clear text", secret)
			}
		}
	}

	t.Run("HTTPS_PROXY", func(t *testing.T) {
		p := startEgressProxy(t)
		env := noEnvProxy()
		env["HTTPS_PROXY"] = p.URL
		env["NO_PROXY"] = "other.sluice.test"
		before := peers()["sluice-client"]
		s := startSluice(t, sluiceOptions{Config: egressConfig(base, tlsBlock, ""), BaseURL: base, Env: env})
		chat(t, s)
		checkProxy(t, p, "")
		if got := peers()["sluice-client"] - before; got != 2 {
			t.Fatalf("the upstream saw %d requests with sluice's client certificate; want 2", got)
		}
	})

	t.Run("upstreams.proxy", func(t *testing.T) {
		p := startEgressProxy(t)
		env := noEnvProxy()
		// A proxy in the environment that is not used: the config's wins.
		env["HTTPS_PROXY"] = "http://127.0.0.1:9"
		proxyURL := strings.Replace(p.URL, "http://", "http://egress-user:p%40ss@", 1)
		s := startSluice(t, sluiceOptions{Config: egressConfig(base, tlsBlock, "    proxy: "+proxyURL+"\n"), BaseURL: base, Env: env})
		chat(t, s)
		checkProxy(t, p, "Basic "+base64.StdEncoding.EncodeToString([]byte("egress-user:p@ss")))
	})

	t.Run("proxy refuses", func(t *testing.T) {
		p := startEgressProxy(t)
		p.refuse = http.StatusProxyAuthRequired
		proxyURL := strings.Replace(p.URL, "http://", "http://egress-user:hunter2@", 1)
		s := startSluice(t, sluiceOptions{Config: egressConfig(base, tlsBlock, "    proxy: "+proxyURL+"\n"), BaseURL: base, Env: noEnvProxy()})
		ctx := testContext(t, 20*time.Second)
		_, err := s.client(demoKey).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("refused " + nonce()),
		})
		if e := asAPIError(t, err); e.StatusCode != http.StatusBadGateway {
			t.Fatalf("status %d; want 502", e.StatusCode)
		}
		line := s.waitLogLine(5*time.Second, "upstream call failed", "refused CONNECT "+egressHost+":"+port, "407 Proxy Authentication Required")
		if line == "" {
			t.Fatalf("no log line names the proxy's refusal:\n%s", s.Output())
		}
		if strings.Contains(s.Output(), "hunter2") || strings.Contains(s.Output(), upstreamKey) {
			t.Fatalf("the log shows the proxy's password or the upstream key:\n%s", s.Output())
		}
	})

	t.Run("validate", func(t *testing.T) {
		// sluice validate loads the certificates as serve does.
		dir := t.TempDir()
		for _, tc := range []struct{ tlsBlock, want string }{
			{tlsBlock, "ok: 1 upstream(s)"},
			{"    tls:\n      ca_file: " + filepath.Join(dir, "missing.pem") + "\n", "upstreams[0].tls: ca_file: open "},
			{"    tls:\n      cert_file: " + pki.clientCert + "\n", "cert_file and key_file go together"},
		} {
			cfg := filepath.Join(dir, "sluice.yaml")
			writeFile(t, cfg, egressConfig(base, tc.tlsBlock, ""))
			cmd := exec.Command(sluiceBin, "validate", "-config", cfg)
			cmd.Env = append(os.Environ(), "OPENAI_API_KEY="+upstreamKey)
			out, err := cmd.CombinedOutput()
			if !bytes.Contains(out, []byte(tc.want)) || (err == nil) != strings.HasPrefix(tc.want, "ok") {
				t.Fatalf("validate: %v\n%s\nwant %q", err, out, tc.want)
			}
		}
	})
}
