package proxy

import (
	"net"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// chatBody1K is a realistic ~1 KB chat request.
var chatBody1K = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant for a travel booking site. Answer briefly, in the user's language, and never invent prices or availability."},{"role":"user","content":"` +
	strings.Repeat("I want to fly from Lisbon to Tokyo in March with two children. ", 12) +
	`"}],"temperature":0.7,"max_tokens":256,"user":"user-1234","stream":false}`)

func BenchmarkScanRequest(b *testing.B) {
	var f reqFields
	b.ReportAllocs()
	b.SetBytes(int64(len(chatBody1K)))
	for b.Loop() {
		if err := scanRequest(chatBody1K, &f); err != nil {
			b.Fatal(err)
		}
	}
}

const chatAnswer = `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":200,"completion_tokens":3,"total_tokens":203}}`

// benchProxy starts a Server in front of an in-memory upstream and returns a
// client that reaches the Server in memory too.
func benchProxy(tb testing.TB, setup ...func(*Server)) (*fasthttp.Client, func()) {
	upLn := fasthttputil.NewInmemoryListener()
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("X-Request-Id", "req_up")
		ctx.SetBodyString(chatAnswer)
	}}
	go upSrv.Serve(upLn) //nolint:errcheck // ends when the listener closes

	s := newTestServer(tb, "upstreams:\n  - name: mem\n    base_url: http://upstream/v1\n    api_key: sk-up\n", Options{})
	s.upstreams[0].conns.dial = func(string) (net.Conn, error) { return upLn.Dial() }
	for _, f := range setup {
		f(s)
	}
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	return c, func() { _ = ln.Close(); _ = upLn.Close() }
}

// BenchmarkProxyChat measures one non-stream chat request through the whole
// handler: scan, identify, route, forward, relay. The in-memory client and
// upstream are included in the figures.
func BenchmarkProxyChat(b *testing.B) {
	c, stop := benchProxy(b)
	defer stop()
	runChatBench(b, c)
}

// runChatBench sends the 1 KB chat request through c, b.N times, and fails
// on anything but a 200.
func runChatBench(b *testing.B, c *fasthttp.Client) {
	req := chatRequest(chatBody1K)
	resp := fasthttp.AcquireResponse()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 {
			b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
		}
	}
}
