package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"sluice/fakeai"
	"sluice/internal/testnet"
)

// egressHost is the upstream's name in these tests: not loopback-looking,
// so the environment's proxy applies to it; the test proxy maps it to
// 127.0.0.1.
const egressHost = "upstream.sluice.test"

// egressPKI is a private CA with a server certificate for egressHost and a
// client certificate, as PEM files.
type egressPKI struct {
	*testnet.PKI
	clientCert, clientKey string
	server                tls.Certificate
}

func newEgressPKI(t *testing.T) *egressPKI {
	t.Helper()
	p := &egressPKI{PKI: testnet.NewPKI(t, "sluice e2e private CA")}
	p.server, _, _ = p.Issue(t, "upstream", false, []string{egressHost})
	_, p.clientCert, p.clientKey = p.Issue(t, "sluice-client", true, nil)
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
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
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
	tlsBlock := "    tls:\n      ca_file: " + pki.CAFile + "\n      cert_file: " + pki.clientCert + "\n      key_file: " + pki.clientKey + "\n"

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
	checkProxy := func(t *testing.T, p *testnet.ConnectProxy, wantAuth string) {
		t.Helper()
		seen := p.Seen()
		targets, auth := p.Requests()
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
		p := testnet.StartConnectProxy(t)
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
		p := testnet.StartConnectProxy(t)
		env := noEnvProxy()
		// A proxy in the environment that is not used: the config's wins.
		env["HTTPS_PROXY"] = "http://127.0.0.1:9"
		proxyURL := strings.Replace(p.URL, "http://", "http://egress-user:p%40ss@", 1)
		s := startSluice(t, sluiceOptions{Config: egressConfig(base, tlsBlock, "    proxy: "+proxyURL+"\n"), BaseURL: base, Env: env})
		chat(t, s)
		checkProxy(t, p, "Basic "+base64.StdEncoding.EncodeToString([]byte("egress-user:p@ss")))
	})

	t.Run("proxy refuses", func(t *testing.T) {
		p := testnet.StartConnectProxy(t)
		p.Refuse = http.StatusProxyAuthRequired
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
