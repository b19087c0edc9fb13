package fakeai

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestRPM(t *testing.T) {
	s, base := startServer(t, Config{RPM: 3})
	for i := 0; i < 3; i++ {
		resp, body := post(t, base+"/chat/completions", chatBody)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, body)
		}
		h := resp.Header
		if h.Get("X-Ratelimit-Limit-Requests") != "3" || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(2-i) {
			t.Fatalf("request %d headers: %v", i, h)
		}
		if h.Get("X-Ratelimit-Reset-Requests") == "" || h.Get("X-Ratelimit-Limit-Tokens") != "" {
			t.Fatalf("request %d headers: %v", i, h)
		}
	}
	// GET /v1/models does not spend, but reports.
	resp, _ := do(t, http.MethodGet, base+"/models", "")
	if resp.StatusCode != 200 || resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Fatalf("models: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body := post(t, base+"/chat/completions", chatBody)
	wantError(t, resp, body, 429, "requests", "rate_limit_exceeded")
	// One request refills in 60s/3 = 20s (minus the few ms elapsed).
	ms, err := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
	if err != nil || ms < 19000 || ms > 20000 {
		t.Fatalf("retry-after-ms %q", resp.Header.Get("Retry-After-Ms"))
	}
	if resp.Header.Get("Retry-After") != "20" {
		t.Fatalf("retry-after %q", resp.Header.Get("Retry-After"))
	}
	if resp.Header.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Fatalf("remaining %q", resp.Header.Get("X-Ratelimit-Remaining-Requests"))
	}
	if st := s.Stats(); st.RateLimited != 1 || st.Errors != 0 || st.Requests != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTPM(t *testing.T) {
	s, base := startServer(t, Config{TPM: 20})
	// 4 prompt words + 5 answer words = 9 tokens each.
	for i := 0; i < 2; i++ {
		resp, body := post(t, base+"/chat/completions", chatBody)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Ratelimit-Remaining-Tokens"); got != strconv.Itoa(20-9*(i+1)) {
			t.Fatalf("remaining tokens %q", got)
		}
	}
	resp, body := post(t, base+"/chat/completions", chatBody)
	wantError(t, resp, body, 429, "tokens", "rate_limit_exceeded")
	if resp.Header.Get("Retry-After-Ms") == "" || resp.Header.Get("X-Ratelimit-Limit-Tokens") != "20" {
		t.Fatalf("headers %v", resp.Header)
	}
	// Larger than the whole budget.
	resp, body = post(t, base+"/embeddings", `{"model":"m","input":"a b c d e f g h i j k l m n o p q r s t u v"}`)
	e := wantError(t, resp, body, 429, "tokens", "rate_limit_exceeded")
	if msg := e["message"].(string); msg[:17] != "Request too large" {
		t.Fatalf("message %q", msg)
	}
	if st := s.Stats(); st.RateLimited != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLimiterRefill(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newLimiter(3, 0, t0)
	for i := 0; i < 3; i++ {
		if v, _ := l.admit(t0, 0); !v.ok {
			t.Fatalf("request %d refused", i)
		}
	}
	v, st := l.admit(t0, 0)
	if v.ok || v.wait != 20*time.Second || st.reqRemaining != 0 || st.reqReset != time.Minute {
		t.Fatalf("verdict %+v state %+v", v, st)
	}
	if v, _ := l.admit(t0.Add(19*time.Second), 0); v.ok || v.wait != time.Second {
		t.Fatalf("at 19s: %+v", v)
	}
	if v, st := l.admit(t0.Add(20*time.Second), 0); !v.ok || st.reqRemaining != 0 {
		t.Fatalf("at 20s: %+v %+v", v, st)
	}
	if st := l.peek(t0.Add(10 * time.Minute)); st.reqRemaining != 3 || st.reqReset != 0 {
		t.Fatalf("after 10m: %+v", st)
	}
	if got := formatReset(1500 * time.Millisecond); got != "1.5s" {
		t.Fatalf("formatReset = %q", got)
	}
	if got := formatReset(6*time.Minute + 100*time.Microsecond); got != "6m0.001s" {
		t.Fatalf("formatReset = %q", got)
	}
}
