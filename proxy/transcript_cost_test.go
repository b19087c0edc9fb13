package proxy

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"sluice/cache"
	"sluice/policy"
)

// TestTranscriptCarriesCost: the record of a priced chat carries its cost
// at the policy's prices (buffered, from the answer's usage; streamed, from
// the usage chunk); a cache hit of the same request, an upstream error and
// an unpriced model record 0.
func TestTranscriptCarriesCost(t *testing.T) {
	const (
		answer = `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":1024}}}`
		stream = `data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}` + "\n\n" +
			`data: {"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150}}` + "\n\n" + "data: [DONE]\n\n"
	)
	up := func(ctx *fasthttp.RequestCtx) {
		body := string(ctx.PostBody())
		switch {
		case strings.Contains(body, `"content":"fail"`):
			ctx.SetStatusCode(500)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`)
		case strings.Contains(body, `"stream":true`):
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyString(stream)
		default:
			ctx.SetContentType("application/json")
			ctx.SetBodyString(answer)
		}
	}
	pol, err := policy.Parse("p.yaml", []byte("tiers: {t: {}}\nkeys:\n  - {id: k, user: u, tier: t, sha256: "+policy.HashKey("sk-client")+"}\n"+
		"prices:\n  \"gpt-4o-mini\": {input: 0.15, output: 0.60, cached_input: 0.075}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	mem := cache.NewMemory(cache.MemoryOptions{})
	c, err := cache.New(cache.Options{Store: mem, Memory: mem, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	w, client := transcriptServer(t, up, Options{Policy: pol, Registry: reg, Cache: c})

	// content names each request, cache is its cache status ("": not
	// checked).
	requests := []struct {
		content, body, cache string
		status               int
		cost                 float64
	}{
		// 176 uncached × $0.15 + 1,024 cached × $0.075 + 300 × $0.60 per 1M.
		{"priced", `{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"priced"}]}`, "miss", 200, (176*0.15 + 1024*0.075 + 300*0.60) / 1e6},
		{"priced", `{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"priced"}]}`, "hit", 200, 0},
		// 100 × $0.15 + 50 × $0.60 per 1M.
		{"streamed", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"streamed"}]}`, "", 200, (100*0.15 + 50*0.60) / 1e6},
		{"fail", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"fail"}]}`, "", 500, 0},
		{"unpriced", `{"model":"llama-3","messages":[{"role":"user","content":"unpriced"}]}`, "", 200, 0},
	}
	for _, r := range requests {
		req := chatRequest([]byte(r.body))
		resp := fasthttp.AcquireResponse()
		if err := client.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatalf("%s: %v", r.content, err)
		}
		if resp.StatusCode() != r.status {
			t.Fatalf("%s: status %d, want %d: %s", r.content, resp.StatusCode(), r.status, resp.Body())
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	recs := w.wait(len(requests))
	if len(recs) != len(requests) {
		t.Fatalf("%d records, want %d", len(recs), len(requests))
	}
	for i, want := range requests { // one request at a time: records in order
		got := recs[i]
		if got.Request != `[{"role":"user","content":"`+want.content+`"}]` || got.Status != want.status || (want.cache != "" && got.CacheStatus != want.cache) {
			t.Fatalf("record %d: request %s status %d cache %q; want %s, %d, %q", i, got.Request, got.Status, got.CacheStatus, want.content, want.status, want.cache)
		}
		if math.Abs(got.CostUSD-want.cost) > 1e-15 {
			t.Errorf("%s (cache %q): cost_usd %g, want %g", want.content, want.cache, got.CostUSD, want.cost)
		}
	}
	if recs[0].CostUSD == 0 || recs[2].CostUSD == 0 {
		t.Fatalf("priced answers recorded no cost: %g, %g", recs[0].CostUSD, recs[2].CostUSD)
	}
}
