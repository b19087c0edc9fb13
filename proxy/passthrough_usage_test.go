package proxy

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/policy"
	"sluice/policy/limit"
)

// TestPassthroughUsageCharged: an images answer streamed through the
// passthrough relay (64 KiB of image data, its usage object last) charges
// the tokens it reports to the user's tokens-per-minute bucket: after an
// image of 900 tokens, a chat request reserving about 300 more does not fit
// the tier's 1,000 and gets a 429; an image answer without usage charges
// nothing.
func TestPassthroughUsageCharged(t *testing.T) {
	for _, c := range []struct {
		name     string
		usage    string
		wantChat int
	}{
		{"with usage", `,"usage":{"total_tokens":900,"input_tokens":100,"output_tokens":800,"input_tokens_details":{"text_tokens":100,"image_tokens":0}}`, 429},
		{"without usage", ``, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			image := `{"created":1,"data":[{"b64_json":"` + strings.Repeat("QUJD", 16<<10) + `"}]` + c.usage + "}\n"
			addr := policyServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.URL.Path == "/v1/images/generations" {
					_, _ = w.Write([]byte(image))
					return
				}
				_, _ = w.Write([]byte(connTestAnswer))
			}), "tiers:\n  t:\n    tpm: {limit: 1000, burst: 1000}\n    default_max_tokens: 300\n"+
				"keys:\n  - id: k\n    user: u\n    tier: t\n    sha256: "+policy.HashKey("sk-client")+"\n", nil)
			do := func(path, body string) (int, []byte) {
				req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer sk-client")
				req.Header.Set("Content-Type", "application/json")
				resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var b bytes.Buffer
				_, _ = b.ReadFrom(resp.Body)
				return resp.StatusCode, b.Bytes()
			}
			st, b := do("/v1/images/generations", `{"model":"gpt-image-1","prompt":"a cat"}`)
			if st != 200 || len(b) != len(image) {
				t.Fatalf("image: %d, %d bytes of %d", st, len(b), len(image))
			}
			st, b = do("/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
			if st != c.wantChat {
				t.Fatalf("chat after the image: %d %s; want %d", st, b, c.wantChat)
			}
			if st == 429 && !bytes.Contains(b, []byte("tokens")) {
				t.Fatalf("429 not for tokens: %s", b)
			}
		})
	}
}

// policyServer runs a Server with limits (a memory store) and the policy
// polYAML on a loopback listener, in front of an upstream served by h; it
// returns the Server's address. reg, when not nil, receives the metrics.
func policyServer(t *testing.T, h http.Handler, polYAML string, reg *prometheus.Registry) string {
	t.Helper()
	up := &http.Server{Handler: h}
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go up.Serve(upLn) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = up.Close() })
	pol, err := policy.Parse("p.yaml", []byte(polYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	lim := policy.NewLimiter(policy.LimiterOptions{Store: limit.NewMemory(limit.MemoryOptions{}), Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	s := newTestServer(t, "upstreams:\n  - name: up\n    base_url: http://"+upLn.Addr().String()+"/v1\n    api_key: sk-upstream-0123456789abcdef\n",
		Options{Policy: pol, Registry: reg, Limiter: lim})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends with the listener
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String()
}
