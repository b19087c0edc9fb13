package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/internal/testnet"
)

func TestUpstreamTLSAndProxy(t *testing.T) {
	dir := t.TempDir()
	pki := testnet.NewPKI(t, "ca")
	ca := pki.CAFile
	_, cert, key := pki.Issue(t, "client", true, nil)
	_, _, otherKey := pki.Issue(t, "other", true, nil)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	up := func(base, extra string) string {
		return "upstreams:\n  - name: a\n    base_url: " + base + "\n" + extra
	}

	c, err := Parse("s.yaml", []byte(up("https://llm.internal:8443/v1",
		"    proxy: http://user:pw@proxy.corp:3128\n    tls:\n      ca_file: "+ca+"\n      server_name: llm.internal\n      cert_file: "+cert+"\n      key_file: "+key+"\n")), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	tc, err := u.TLS.ClientConfig()
	if err != nil || tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "llm.internal" || tc.InsecureSkipVerify {
		t.Fatalf("tls settings: %+v, %v", tc, err)
	}
	if p, err := ParseProxy(u.Proxy); err != nil || p.Host != "proxy.corp:3128" || p.User.Username() != "user" {
		t.Fatalf("proxy: %v, %v", p, err)
	}
	// Nothing set: the defaults, no settings of its own.
	c, err = Parse("s.yaml", []byte(up("https://api.example.com/v1", "")), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := c.Upstreams[0].TLS.ClientConfig(); tc != nil || err != nil || c.Upstreams[0].Proxy != "" {
		t.Fatalf("default tls: %+v, %v, proxy %q", tc, err, c.Upstreams[0].Proxy)
	}
	for _, extra := range []string{"    proxy: off\n", "    tls: {insecure_skip_verify: true}\n"} {
		if _, err := Parse("s.yaml", []byte(up("https://x/v1", extra)), env(nil)); err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
	}

	bad := func(base, extra, want string) {
		t.Helper()
		_, err := Parse("s.yaml", []byte(up(base, extra)), env(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: error %v; want it to contain %q", extra, err, want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("the error shows the proxy's password: %v", err)
		}
	}
	bad("http://x/v1", "    tls:\n      ca_file: "+ca+"\n", "s.yaml:4: upstreams[0].tls: applies to an https base_url only")
	bad("https://x/v1", "    tls:\n      cert_file: "+cert+"\n", "s.yaml:4: upstreams[0].tls: cert_file and key_file go together")
	bad("https://x/v1", "    tls:\n      key_file: "+key+"\n", "cert_file and key_file go together")
	bad("https://x/v1", "    tls:\n      ca_file: "+filepath.Join(dir, "missing.pem")+"\n", "ca_file: open ")
	bad("https://x/v1", "    tls:\n      ca_file: "+notPEM+"\n", "no PEM certificate")
	bad("https://x/v1", "    tls:\n      cert_file: "+cert+"\n      key_file: "+otherKey+"\n", "private key does not match")
	bad("https://x/v1", "    tls:\n      ca_file: "+ca+"\n      insecure_skip_verify: true\n", "exclude each other")
	bad("https://x/v1", "    tls:\n      ca_fle: x\n", "upstreams[0].tls.ca_fle")
	bad("https://x/v1", "    proxy: socks5://u:hunter2@p:1080\n", "s.yaml:4: upstreams[0].proxy: proxy socks5://u:xxxxx@p:1080: only http:// proxies")
	bad("https://x/v1", "    proxy: https://u:hunter2@p:443\n", "only http:// proxies")
	bad("https://x/v1", "    proxy: http://u:hunter2@p:3128/path\n", "without a path")
	bad("https://x/v1", "    proxy: 'http://u:hunter2@:3128'\n", "has no host")
	bad("https://x/v1", "    proxy: 'http://u:hunter2 @p:3128'\n", "not a proxy URL")
}
