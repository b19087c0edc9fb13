package proxy

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/internal/testkit"
	"sluice/policy"
)

// TestCostOfAnswers: through the server, a buffered chat answer's cost
// (from its usage, at the policy's prices) reaches a show_cost key's
// X-Sluice-Cost-Usd and sluice_spend_usd_total; a stream's cost, from its
// usage chunk, reaches the metric; a key without show_cost sees no price;
// an unpriced model is refused 403 when the policy says so.
func TestCostOfAnswers(t *testing.T) {
	const chat = `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":120}}}`
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"content":"cut"`) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, `data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}`+"\n\n", strings.Repeat("x", 300))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops: no usage, no [DONE]
		}
		if strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}`+"\n\n")
			fmt.Fprint(w, `data: {"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150}}`+"\n\n")
			fmt.Fprint(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, chat)
	})
	reg := prometheus.NewRegistry()
	pol := "tiers: {t: {}}\nkeys:\n" +
		"  - {id: shown, user: u, tier: t, show_cost: true, sha256: " + policy.HashKey("sk-shown") + "}\n" +
		"  - {id: hidden, user: v, tier: t, sha256: " + policy.HashKey("sk-hidden") + "}\n" +
		"prices:\n  \"gpt-4o-mini\": {input: 0.15, output: 0.60, cached_input: 0.075}\nunpriced: refuse\n"
	addr := policyServer(t, h, pol, reg)
	do := func(key, body string) (*http.Response, string) {
		return postAs(t, addr, key, "/v1/chat/completions", body)
	}
	// 176 uncached × $0.15 + 1,024 cached × $0.075 + 300 (120 of them
	// reasoning) × $0.60 per 1M = $0.0002832.
	const buffered = (176*0.15 + 1024*0.075 + 300*0.60) / 1e6
	resp, body := do("sk-shown", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	got, err := strconv.ParseFloat(resp.Header.Get("X-Sluice-Cost-Usd"), 64)
	if resp.StatusCode != 200 || err != nil || math.Abs(got-buffered) > 1e-12 {
		t.Fatalf("buffered: %d, X-Sluice-Cost-Usd %q (want %g): %s", resp.StatusCode, resp.Header.Get("X-Sluice-Cost-Usd"), buffered, body)
	}
	resp, _ = do("sk-hidden", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Sluice-Cost-Usd") != "" {
		t.Fatalf("a key without show_cost: %d, cost header %q", resp.StatusCode, resp.Header.Get("X-Sluice-Cost-Usd"))
	}
	resp, body = do("sk-hidden", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(body, "[DONE]") {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	// 100 × $0.15 + 50 × $0.60 per 1M = $0.000045.
	want := 2*buffered + (100*0.15+50*0.60)/1e6
	var spent float64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if spent = gatherCounter(t, reg, "sluice_spend_usd_total"); math.Abs(spent-want) < 1e-12 {
			break
		}
	}
	if math.Abs(spent-want) > 1e-12 {
		t.Fatalf("sluice_spend_usd_total = %g; want %g", spent, want)
	}
	// A stream the upstream cuts after 300 bytes of text, before its usage
	// chunk: its cost is estimated from the relayed text (3 bytes a token)
	// and the prompt's estimate.
	before := gatherCounter(t, reg, "sluice_spend_usd_total")
	resp, body = do("sk-hidden", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"cut"}]}`)
	if resp.StatusCode != 200 || strings.Contains(body, "[DONE]") {
		t.Fatalf("cut stream: %d %s", resp.StatusCode, body)
	}
	minCut := 100 * 0.60 / 1e6 // at least the 100 tokens of text
	var cut float64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cut = gatherCounter(t, reg, "sluice_spend_usd_total") - before; cut >= minCut {
			break
		}
	}
	if cut < minCut || cut > minCut+1000*0.15/1e6 {
		t.Fatalf("a cut stream cost $%g; want at least $%g (its text) plus a small prompt", cut, minCut)
	}
	resp, body = do("sk-shown", `{"model":"llama-3","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 403 || !strings.Contains(body, "model_not_priced") {
		t.Fatalf("unpriced model: %d %s", resp.StatusCode, body)
	}
}

// postAs posts a JSON body to path on the server at addr with the key, and
// returns the answer and its body.
func postAs(t *testing.T, addr, key, path, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return resp, string(b)
}

// gatherCounter sums every child of the counter name in reg.
func gatherCounter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	m, err := testkit.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m.Sum(name)
}

// TestFindUsageCached: the cached prompt tokens of chat
// (prompt_tokens_details) and responses (input_tokens_details) usage; a
// null or absent details object leaves them 0.
func TestFindUsageCached(t *testing.T) {
	for body, want := range map[string]usage{
		`{"usage":{"prompt_tokens":1200,"completion_tokens":3,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":1024}}}`: {prompt: 1200, completion: 3, cached: 1024, ok: true},
		`{"response":{"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":40},"output_tokens":7}}}`:               {prompt: 50, completion: 7, cached: 40, ok: true},
		`{"usage":{"prompt_tokens":5,"prompt_tokens_details":null,"completion_tokens":1}}`:                                       {prompt: 5, completion: 1, ok: true},
		`{"usage":{"prompt_tokens":5,"completion_tokens":1}}`:                                                                    {prompt: 5, completion: 1, ok: true},
		`{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":"x"}}}`:                                            {},
	} {
		if got := findUsage([]byte(body)); got != want {
			t.Errorf("findUsage(%s) = %+v; want %+v", body, got, want)
		}
	}
}

// TestCostEmbeddingsAndChoices: an embedding is priced by its input
// tokens alone; an answer with n > 1 choices by the usage the provider
// reports, which counts every choice's completion tokens.
func TestCostEmbeddingsAndChoices(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/embeddings") {
			fmt.Fprint(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":1000,"total_tokens":1000}}`)
			return
		}
		// three choices of 200 completion tokens each: the usage says 600
		fmt.Fprint(w, `{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[`+
			`{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"},`+
			`{"index":1,"message":{"role":"assistant","content":"b"},"finish_reason":"stop"},`+
			`{"index":2,"message":{"role":"assistant","content":"c"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":50,"completion_tokens":600,"total_tokens":650}}`)
	})
	pol := "tiers: {t: {}}\nkeys:\n  - {id: k, user: u, tier: t, show_cost: true, sha256: " + policy.HashKey("sk-k") + "}\n" +
		"prices:\n  \"gpt-4o-mini\": {input: 0.15, output: 0.60}\n  \"text-embedding-3-small\": {input: 0.02}\n"
	addr := policyServer(t, h, pol, nil)
	for _, c := range []struct {
		path, body string
		want       float64
	}{
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":"hello"}`, 1000 * 0.02 / 1e6},
		{"/v1/chat/completions", `{"model":"gpt-4o-mini","n":3,"messages":[{"role":"user","content":"hi"}]}`, (50*0.15 + 600*0.60) / 1e6},
	} {
		resp, _ := postAs(t, addr, "sk-k", c.path, c.body)
		got, err := strconv.ParseFloat(resp.Header.Get("X-Sluice-Cost-Usd"), 64)
		if resp.StatusCode != 200 || err != nil || math.Abs(got-c.want) > 1e-15 {
			t.Errorf("%s: %d, X-Sluice-Cost-Usd %q, want %g", c.path, resp.StatusCode, resp.Header.Get("X-Sluice-Cost-Usd"), c.want)
		}
	}
}
