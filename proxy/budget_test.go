package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"sluice/policy"
)

// TestBudgetAnswers: under a daily budget, a show_cost key sees what is
// left of it after each reservation; a request whose worst case cannot fit
// what is left gets OpenAI's 429 insufficient_quota naming the budget,
// with x-should-retry: false (the window ends hours away), and one that
// could cost more than the whole budget is told to ask for less.
func TestBudgetAnswers(t *testing.T) {
	// usage: 1000 prompt tokens ($1/M) and 500 completion ($2/M): $0.002
	const chat = `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}`
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, chat)
	})
	pol := "tiers: {t: {budget: {daily_usd: 0.005}}}\nkeys:\n" +
		"  - {id: k, user: u, tier: t, show_cost: true, sha256: " + policy.HashKey("sk-k") + "}\n" +
		"prices:\n  \"gpt-4o-mini\": {input: 1, output: 2}\n"
	addr := policyServer(t, h, pol, nil)
	do := func(maxTokens int) (*http.Response, string) {
		return postAs(t, addr, "sk-k", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","max_tokens":`+strconv.Itoa(maxTokens)+`,"messages":[{"role":"user","content":"hi"}]}`)
	}
	// worst case: a few prompt tokens at $1/M plus 1000 completion at $2/M
	// ≈ $0.002; the answer costs $0.002 too. Two fit $0.005, a third's
	// reservation does not ($0.004 spent, ~$0.002 more).
	for i := range 2 {
		resp, body := do(1000)
		left, err := strconv.ParseFloat(resp.Header.Get("X-Sluice-Budget-Remaining-Usd"), 64)
		if resp.StatusCode != 200 || err != nil || left > 0.005-0.002*float64(i+1) || left < 0.005-0.0021*float64(i+1)-0.0001 {
			t.Fatalf("request %d: %d, budget left %q: %s", i, resp.StatusCode, resp.Header.Get("X-Sluice-Budget-Remaining-Usd"), body)
		}
	}
	resp, body := do(1000)
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != 429 || e.Error.Type != "insufficient_quota" ||
		e.Error.Code != "insufficient_quota" || resp.Header.Get("X-Should-Retry") != "false" || resp.Header.Get("Retry-After") != "" ||
		!strings.Contains(e.Error.Message, "daily budget of $0.005 for user u is spent ($0.004 used") ||
		!strings.Contains(e.Error.Message, "It starts over tomorrow, at ") {
		t.Fatalf("a spent budget: %d x-should-retry %q retry-after %q: %s", resp.StatusCode,
			resp.Header.Get("X-Should-Retry"), resp.Header.Get("Retry-After"), body)
	}
	resp, body = do(100000) // $0.2 worst case: never fits $0.005
	if resp.StatusCode != 429 || !strings.Contains(body, "could cost up to $0.20, more than the daily budget") {
		t.Fatalf("a request larger than the budget: %d %s", resp.StatusCode, body)
	}
}
