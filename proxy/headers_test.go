package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

func TestCopyRequestHeaders(t *testing.T) {
	var src fasthttp.RequestHeader
	src.SetMethod("POST")
	src.SetRequestURI("/v1/chat/completions")
	for _, kv := range [][2]string{
		{"Authorization", "Bearer sk-gateway-key"},
		{"Api-Key", "sk-gateway-key"},
		{"OpenAI-Organization", "org-client"},
		{"OpenAI-Project", "proj-client"},
		{"X-Sluice-User", "alice"},
		{"Connection", "keep-alive, X-Conn-Only"},
		{"X-Conn-Only", "1"},
		{"Keep-Alive", "timeout=5"},
		{"Proxy-Authorization", "Basic abc"},
		{"Te", "trailers"},
		{"Upgrade", "h2c"},
		{"Expect", "100-continue"},
		{"Accept-Encoding", "gzip"},
		{"Content-Type", "application/json"},
		{"User-Agent", "OpenAI/Go 3.98.0"},
		{"X-Stainless-Lang", "go"},
		{"Openai-Beta", "assistants=v2"},
	} {
		src.Set(kv[0], kv[1])
	}
	f := func(dropAE bool, kept, dropped []string) {
		t.Helper()
		var dst fasthttp.RequestHeader
		copyRequestHeaders(&dst, &src, dropAE)
		for _, k := range kept {
			if len(dst.Peek(k)) == 0 {
				t.Errorf("header %s was not forwarded", k)
			}
		}
		for _, k := range dropped {
			if v := dst.Peek(k); len(v) > 0 {
				t.Errorf("header %s was forwarded: %q", k, v)
			}
		}
	}
	always := []string{"Authorization", "Api-Key", "OpenAI-Organization", "OpenAI-Project", "X-Sluice-User",
		"X-Conn-Only", "Keep-Alive", "Proxy-Authorization", "Te", "Upgrade", "Expect"}
	f(true, []string{"Content-Type", "User-Agent", "X-Stainless-Lang", "Openai-Beta"}, append(always, "Accept-Encoding"))
	f(false, []string{"Content-Type", "User-Agent", "Accept-Encoding", "Openai-Beta"}, always)
}

func TestCopyResponseHeaders(t *testing.T) {
	var src fasthttp.ResponseHeader
	src.SetStatusCode(429)
	src.SetContentType("application/json")
	for _, kv := range [][2]string{
		{"Retry-After", "2"},
		{"Retry-After-Ms", "1500"},
		{"X-Ratelimit-Remaining-Requests", "0"},
		{"X-Request-Id", "req_upstream"},
		{"Keep-Alive", "timeout=5"},
		{"Date", "Mon, 01 Jan 2024 00:00:00 GMT"},
		{"Set-Cookie", "a=b"},
	} {
		src.Set(kv[0], kv[1])
	}
	var dst fasthttp.ResponseHeader
	copyResponseHeaders(&dst, &src)
	if dst.StatusCode() != 429 {
		t.Fatalf("status %d; want 429", dst.StatusCode())
	}
	for _, k := range []string{"Retry-After", "Retry-After-Ms", "X-Ratelimit-Remaining-Requests", "X-Request-Id", "Content-Type"} {
		if string(dst.Peek(k)) != string(src.Peek(k)) {
			t.Errorf("header %s = %q; want %q", k, dst.Peek(k), src.Peek(k))
		}
	}
	if len(dst.Peek("Keep-Alive")) > 0 || len(dst.Peek("Date")) > 0 {
		t.Errorf("hop-by-hop or server-owned header relayed: %s", dst.String())
	}
	if len(dst.PeekCookie("a")) == 0 {
		t.Errorf("Set-Cookie not relayed: %s", dst.String())
	}
}
