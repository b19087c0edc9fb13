package e2e

// Issue 10, item 2: clients that misbehave. Each test starts its own
// Sluice, drives it with a raw connection where the SDK cannot misbehave
// (slowloris, framing, HTTP/1.0, pipelining, idle connections) and with
// openai-go elsewhere, asserts what Sluice answered and the metric that
// counted it, and ends with checkSettled: no goroutine, descriptor or
// panic left behind.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// faultConfig is the sluice.yaml of the client fault tests: small limits
// and a short read timeout so that every refusal comes within seconds, and
// JSONL transcripts in dir flushed every 50 ms.
func faultConfig(dir, budget string) string {
	return `server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  max_body_bytes: 8192
  max_header_bytes: 4096
  read_timeout: 1s
  idle_timeout: 3s
  shutdown_timeout: 5s
upstreams:
  - name: openai
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
    timeouts:
      connect: 2s
      first_byte: 3s
      idle: 10s
` + budget + `transcripts:
  mode: jsonl
  flush_interval: 50ms
  jsonl:
    dir: ` + dir + `
    no_fsync: true
`
}

// faultEnv is an env whose Sluice runs faultConfig.
type faultEnv struct {
	env
	// dir holds the JSONL transcripts.
	dir string
	// host is the API listener's host:port.
	host string
}

func newFaultEnv(t *testing.T) *faultEnv { return newFaultEnvWith(t, "", trustedPolicies()) }

// newFaultEnvWith starts a fault environment whose upstream has budget (a
// YAML line under the upstream, "" for none) and the given policies.
func newFaultEnvWith(t *testing.T, budget, policies string) *faultEnv {
	t.Helper()
	dir := t.TempDir()
	f := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Config: faultConfig(dir, budget), Policies: policies, BaseURL: f.URL})
	return &faultEnv{env: env{fake: f, s: s}, dir: dir, host: strings.TrimPrefix(s.URL, "http://")}
}

// dial opens a raw connection to the API listener.
func (e *faultEnv) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// chatRequest is a raw HTTP/1.1 chat request with the demo key and body.
func (e *faultEnv) chatRequest(body string, extra ...string) string {
	h := "POST /v1/chat/completions HTTP/1.1\r\nHost: " + e.host + "\r\nAuthorization: Bearer " + demoKey +
		"\r\nContent-Type: application/json\r\n"
	for _, x := range extra {
		h += x + "\r\n"
	}
	return h + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
}

// chatBody is a small valid chat request whose answer is "echo: prompt".
func chatBody(prompt string, stream bool) string {
	return fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}],"stream":%t}`, prompt, stream)
}

// readResponse reads one answer from br within d, body included.
func readResponse(t *testing.T, c net.Conn, br *bufio.Reader, d time.Duration) (*http.Response, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("answer body: %v", err)
	}
	_ = resp.Body.Close()
	return resp, body
}

// openAIError is the shape of every error Sluice answers itself.
type openAIError struct {
	Error *struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// checkErrorAnswer fails unless resp is status with an OpenAI-shaped body
// (message, type, param and code all present) of type invalid_request_error,
// the given code (or null) and param (or null), and an x-request-id.
func checkErrorAnswer(t *testing.T, resp *http.Response, body []byte, status int, code, param string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q, want application/json", ct)
	}
	if !strings.HasPrefix(resp.Header.Get("X-Request-Id"), "req_") {
		t.Fatalf("x-request-id %q", resp.Header.Get("X-Request-Id"))
	}
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("body %s is not JSON: %v", body, err)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := raw["error"][k]; !ok {
			t.Fatalf("body %s has no error.%s", body, k)
		}
	}
	var e openAIError
	_ = json.Unmarshal(body, &e)
	if e.Error.Message == nil || *e.Error.Message == "" || e.Error.Type == nil || *e.Error.Type != "invalid_request_error" {
		t.Fatalf("body %s: want a message and type invalid_request_error", body)
	}
	if (code == "") != (e.Error.Code == nil) || (code != "" && *e.Error.Code != code) {
		t.Fatalf("body %s: want code %q", body, code)
	}
	if (param == "") != (e.Error.Param == nil) || (param != "" && *e.Error.Param != param) {
		t.Fatalf("body %s: want param %q", body, param)
	}
}

// checkClosed fails unless the server closes c within d without sending
// anything more.
func checkClosed(t *testing.T, c net.Conn, br *bufio.Reader, d time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := br.ReadByte()
	if err == nil {
		rest, _ := br.Peek(br.Buffered())
		t.Fatalf("the connection stayed open and sent %q", append([]byte{b}, rest...))
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the connection was still open %v later", d)
	}
}

// counter reads a counter (0 when the series is absent).
func (e *faultEnv) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, _ := e.s.metric(t, name, labels...)
	return v
}

// checkDelta fails unless the counter moved by exactly want from before,
// waiting up to 2 s for it (at least 300 ms when want is 0).
func (e *faultEnv) checkDelta(t *testing.T, before, want float64, name string, labels ...string) {
	t.Helper()
	if want == 0 {
		time.Sleep(300 * time.Millisecond) // a count that should not come
	}
	var now float64
	if waitFor(2*time.Second, func() bool { now = e.counter(t, name, labels...); return now-before >= want }) && now-before == want {
		return
	}
	t.Fatalf("%s%v moved by %v, want %v", name, labels, now-before, want)
}

// TestFaultClientSlowloris: a client that sends its headers or its body a
// byte at a time never holds a connection past server.read_timeout (1 s
// here; the deadline covers the whole request, trickling does not extend
// it). Sluice answers 408 with an OpenAI-shaped error, closes the
// connection and counts sluice_protocol_errors_total{reason="timeout"}. A
// connection that sends nothing is closed without an answer after the read
// timeout; a keep-alive connection idle after a complete request is closed
// silently after server.idle_timeout. Nothing reaches the upstream.
func TestFaultClientSlowloris(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	req := e.chatRequest(chatBody("slow", false))
	split := strings.Index(req, "\r\n\r\n") + 4

	trickle := func(t *testing.T, prefix, slow string) {
		t.Helper()
		before := e.counter(t, "sluice_protocol_errors_total", `reason="timeout"`)
		c := e.dial(t)
		br := bufio.NewReader(c)
		start := time.Now()
		if _, err := io.WriteString(c, prefix); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(slow); i++ {
			if _, err := c.Write([]byte{slow[i]}); err != nil {
				break // the server gave up on us: expected
			}
			time.Sleep(100 * time.Millisecond)
			if time.Since(start) > 5*time.Second {
				break
			}
		}
		resp, body := readResponse(t, c, br, 5*time.Second)
		took := time.Since(start)
		checkErrorAnswer(t, resp, body, http.StatusRequestTimeout, "", "")
		if !resp.Close {
			t.Fatalf("408 without Connection: close")
		}
		if took < 900*time.Millisecond || took > 3*time.Second {
			t.Fatalf("answered after %v; want about the 1 s read timeout", took)
		}
		checkClosed(t, c, br, 2*time.Second)
		e.checkDelta(t, before, 1, "sluice_protocol_errors_total", `reason="timeout"`)
	}
	t.Run("slow_headers", func(t *testing.T) { trickle(t, req[:20], req[20:split]) })
	t.Run("slow_body", func(t *testing.T) { trickle(t, req[:split], req[split:]) })
	// A connection that never sends a byte holds no buffer while it waits
	// (the server reduces memory per connection) and is closed without an
	// answer after the read timeout, like a TCP health check: nothing to
	// count.
	t.Run("silent_new_connection", func(t *testing.T) {
		before := e.counter(t, "sluice_protocol_errors_total", `reason="timeout"`)
		c := e.dial(t)
		start := time.Now()
		checkClosed(t, c, bufio.NewReader(c), 5*time.Second)
		if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second {
			t.Fatalf("closed after %v; want about the 1 s read timeout", took)
		}
		e.checkDelta(t, before, 0, "sluice_protocol_errors_total", `reason="timeout"`)
	})
	t.Run("idle_keepalive", func(t *testing.T) {
		before := e.counter(t, "sluice_protocol_errors_total", `reason="timeout"`)
		c := e.dial(t)
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, body := readResponse(t, c, br, 5*time.Second)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "echo: slow") {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		start := time.Now()
		checkClosed(t, c, br, 6*time.Second)
		if took := time.Since(start); took < 2500*time.Millisecond || took > 5*time.Second {
			t.Fatalf("idle keep-alive connection closed after %v; want about the 3 s idle timeout", took)
		}
		e.checkDelta(t, before, 0, "sluice_protocol_errors_total", `reason="timeout"`)
	})
	if n := e.fake.Stats().Requests; n != 1 {
		t.Fatalf("the upstream saw %d requests, want 1 (the keep-alive one)", n)
	}
	e.s.checkSettled(t, base)
}

// TestFaultClientHugeHeaders: a header block over server.max_header_bytes
// (4096 here), in one header or in many, is answered 431
// headers_too_large and the connection closed; counted as
// sluice_protocol_errors_total{reason="headers_too_large"}.
func TestFaultClientHugeHeaders(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	f := func(extra ...string) {
		t.Helper()
		before := e.counter(t, "sluice_protocol_errors_total", `reason="headers_too_large"`)
		c := e.dial(t)
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, e.chatRequest(chatBody("big", false), extra...)); err != nil {
			t.Fatal(err)
		}
		resp, body := readResponse(t, c, br, 5*time.Second)
		checkErrorAnswer(t, resp, body, http.StatusRequestHeaderFieldsTooLarge, "headers_too_large", "")
		checkClosed(t, c, br, 2*time.Second)
		e.checkDelta(t, before, 1, "sluice_protocol_errors_total", `reason="headers_too_large"`)
	}
	f("X-Big: " + strings.Repeat("a", 8000))
	var many []string
	for i := range 300 {
		many = append(many, fmt.Sprintf("X-H%d: %s", i, strings.Repeat("b", 20)))
	}
	f(many...)
	// 1 MiB: refused without reading it all. Sluice answers and closes
	// while the client is still writing, so the client's kernel may get a
	// reset before the test reads the 431: either is a refusal; the metric
	// must count it either way.
	before := e.counter(t, "sluice_protocol_errors_total", `reason="headers_too_large"`)
	c := e.dial(t)
	go func() {
		_, _ = io.WriteString(c, e.chatRequest(chatBody("big", false), "X-Huge: "+strings.Repeat("c", 1<<20)))
	}()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err == nil {
		body, _ := io.ReadAll(resp.Body)
		checkErrorAnswer(t, resp, body, http.StatusRequestHeaderFieldsTooLarge, "headers_too_large", "")
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("1 MiB header: neither a 431 nor a reset: %v", err)
	}
	e.checkDelta(t, before, 1, "sluice_protocol_errors_total", `reason="headers_too_large"`)
	if n := e.fake.Stats().Requests; n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	e.s.checkSettled(t, base)
}

// TestFaultClientBodyOverLimit: a body over server.max_body_bytes (8192
// here), announced by Content-Length or sent chunked, is answered 413
// request_too_large before it is read whole, the connection closed; counted
// as sluice_protocol_errors_total{reason="body_too_large"}. The SDK sees
// the same 413 (TestClientErrors); nothing reaches the upstream.
func TestFaultClientBodyOverLimit(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	big := chatBody(strings.Repeat("x", 9000), false)
	f := func(raw string) {
		t.Helper()
		before := e.counter(t, "sluice_protocol_errors_total", `reason="body_too_large"`)
		c := e.dial(t)
		br := bufio.NewReader(c)
		_, _ = io.WriteString(c, raw) // the server may close before it is all sent
		resp, body := readResponse(t, c, br, 5*time.Second)
		checkErrorAnswer(t, resp, body, http.StatusRequestEntityTooLarge, "request_too_large", "")
		checkClosed(t, c, br, 2*time.Second)
		e.checkDelta(t, before, 1, "sluice_protocol_errors_total", `reason="body_too_large"`)
	}
	t.Run("content_length", func(t *testing.T) { f(e.chatRequest(big)) })
	t.Run("content_length_only", func(t *testing.T) {
		// Announced, never sent: refused on the header alone.
		req := e.chatRequest(big)
		f(req[:strings.Index(req, "\r\n\r\n")+4])
	})
	t.Run("chunked", func(t *testing.T) {
		h := "POST /v1/chat/completions HTTP/1.1\r\nHost: " + e.host + "\r\nAuthorization: Bearer " + demoKey +
			"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
		for i := 0; i < len(big); i += 1000 {
			part := big[i:min(i+1000, len(big))]
			h += fmt.Sprintf("%x\r\n%s\r\n", len(part), part)
		}
		f(h + "0\r\n\r\n")
	})
	if n := e.fake.Stats().Requests; n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	e.s.checkSettled(t, base)
}

// TestFaultClientBadJSON: bodies the scanner refuses (malformed JSON,
// invalid UTF-8, nesting over 128, wrong types, no model) are answered 400
// invalid_request_error naming the field in param, counted in
// sluice_requests_total{route="chat_completions",status_class="4xx"}, and
// never reach the upstream; the connection stays usable (keep-alive).
func TestFaultClientBadJSON(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	c := e.dial(t)
	br := bufio.NewReader(c)
	send := func(body string) (*http.Response, []byte) {
		t.Helper()
		if _, err := io.WriteString(c, e.chatRequest(body)); err != nil {
			t.Fatal(err)
		}
		return readResponse(t, c, br, 5*time.Second)
	}
	nested := func(depth int) string {
		return `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"deep"}],"x_deep":` +
			strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`
	}
	cases := []struct{ name, body, param string }{
		{"malformed", `{"model":"gpt-4o-mini",`, ""},
		{"truncated_after_key", `{"model":`, ""},
		{"not_an_object", `["gpt-4o-mini"]`, ""},
		{"empty", ``, ""},
		{"trailing_garbage", chatBody("hi", false) + `}`, ""},
		{"invalid_utf8", "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", ""},
		{"invalid_utf8_in_model", "{\"model\":\"gpt-\xc3\x28\",\"messages\":[]}", ""},
		{"nested_129", nested(129), ""},
		{"nested_3000", nested(3000), ""},
		{"model_number", `{"model":4,"messages":[{"role":"user","content":"hi"}]}`, "model"},
		{"stream_string", `{"model":"gpt-4o-mini","messages":[],"stream":"yes"}`, "stream"},
		{"max_tokens_string", `{"model":"gpt-4o-mini","messages":[],"max_tokens":"5"}`, "max_tokens"},
		{"n_object", `{"model":"gpt-4o-mini","messages":[],"n":{}}`, "n"},
		{"user_number", `{"model":"gpt-4o-mini","messages":[],"user":7}`, "user"},
		{"missing_model", `{"messages":[{"role":"user","content":"hi"}]}`, "model"},
	}
	before := e.counter(t, "sluice_requests_total", `route="chat_completions"`, `status_class="4xx"`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := send(tc.body)
			checkErrorAnswer(t, resp, body, http.StatusBadRequest, "", tc.param)
			if resp.Close {
				t.Fatalf("a bad body closed the connection")
			}
		})
	}
	e.checkDelta(t, before, float64(len(cases)), "sluice_requests_total", `route="chat_completions"`, `status_class="4xx"`)
	if n := e.fake.Stats().Requests; n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	// At the limit: 128 levels pass to the upstream, on the same connection.
	resp, body := send(nested(128))
	if resp.StatusCode != 200 || !strings.Contains(string(body), "echo: deep") {
		t.Fatalf("128 levels: %d %s", resp.StatusCode, body)
	}
	_ = c.Close()
	e.s.checkSettled(t, base)
}

// rawChunked frames s as one chunk and the last chunk.
func rawChunked(s string) string { return fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(s), s) }

// TestFaultClientFraming: requests whose framing is ambiguous or broken.
// Both Content-Length and Transfer-Encoding: the body is read as chunked
// (RFC 9112 §6.3: Transfer-Encoding wins), answered, and the connection
// closed, so bytes after the chunked body (a smuggled request) are never
// read as a request; the upstream gets the decoded body with Sluice's own
// framing. Everything else (two Content-Lengths, a negative one, an
// unknown or unsupported coding, a bad chunk size, a space before the
// colon, a bare CR, a bad request line, HTTP/2's preface) is a 400 "not
// valid HTTP" with a closed connection, counted as
// sluice_protocol_errors_total{reason="malformed"}.
func TestFaultClientFraming(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	body := chatBody("frame", false)
	hdr := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\nContent-Type: application/json\r\n"
	smuggled := "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\n\r\n"

	for _, tc := range []struct{ name, raw string }{
		{"cl_then_te", hdr + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + rawChunked(body) + smuggled},
		{"te_then_cl", hdr + "Transfer-Encoding: chunked\r\nContent-Length: 500\r\n\r\n" + rawChunked(body) + smuggled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.fake.Stats()
			c := e.dial(t)
			br := bufio.NewReader(c)
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			resp, got := readResponse(t, c, br, 5*time.Second)
			if resp.StatusCode != 200 || !strings.Contains(string(got), "echo: frame") {
				t.Fatalf("%d %s", resp.StatusCode, got)
			}
			if !resp.Close {
				t.Fatal("the connection was kept open after a request with both Content-Length and Transfer-Encoding")
			}
			checkClosed(t, c, br, 2*time.Second) // the smuggled GET got no answer
			after := e.fake.Stats()
			if after.ByPath["/v1/chat/completions"]-before.ByPath["/v1/chat/completions"] != 1 ||
				after.ByPath["/v1/models"] != before.ByPath["/v1/models"] {
				t.Fatalf("upstream calls by path: before %v, after %v; want one chat and no models", before.ByPath, after.ByPath)
			}
			last := e.fake.LastRequest()
			if string(last.Body) != body || len(last.TransferEncoding) != 0 || last.Header.Get("Content-Length") != fmt.Sprint(len(body)) {
				t.Fatalf("upstream got body %q, transfer-encoding %v, content-length %q", last.Body, last.TransferEncoding, last.Header.Get("Content-Length"))
			}
		})
	}

	bad := []struct{ name, raw string }{
		{"two_content_lengths", hdr + "Content-Length: 3\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body},
		{"negative_content_length", hdr + "Content-Length: -1\r\n\r\n" + body},
		{"content_length_not_a_number", hdr + "Content-Length: 1e3\r\n\r\n" + body},
		{"te_gzip_chunked", hdr + "Transfer-Encoding: gzip, chunked\r\n\r\n" + rawChunked(body)},
		{"bad_chunk_size", hdr + "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"},
		{"space_before_colon", hdr + "Content-Length : " + fmt.Sprint(len(body)) + "\r\n\r\n" + body},
		{"bare_cr_in_header", hdr + "X-A: a\rb\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body},
		{"garbage_request_line", "GARBAGE\r\n\r\n"},
		{"no_version", "GET /v1/models\r\n\r\n"},
		{"http2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	}
	before := e.counter(t, "sluice_protocol_errors_total", `reason="malformed"`)
	calls := e.fake.Stats().Requests
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t)
			br := bufio.NewReader(c)
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			resp, got := readResponse(t, c, br, 5*time.Second)
			checkErrorAnswer(t, resp, got, http.StatusBadRequest, "", "")
			checkClosed(t, c, br, 2*time.Second)
		})
	}
	e.checkDelta(t, before, float64(len(bad)), "sluice_protocol_errors_total", `reason="malformed"`)
	if n := e.fake.Stats().Requests - calls; n != 0 {
		t.Fatalf("malformed requests made %d upstream calls", n)
	}
	e.s.checkSettled(t, base)
}

// TestFaultClientHTTP10: an HTTP/1.0 request (no Host header) is served;
// the connection closes after the answer unless the client asked for
// keep-alive. A stream to an HTTP/1.0 client arrives whole and the
// connection closes after [DONE] (framed chunked by fasthttp: see the
// docs/testing.md#the-fault-suite).
func TestFaultClientHTTP10(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	t.Run("close", func(t *testing.T) {
		c := e.dial(t)
		br := bufio.NewReader(c)
		body := chatBody("old client", false)
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"+
			"Content-Length: %d\r\n\r\n%s", demoKey, len(body), body)
		resp, got := readResponse(t, c, br, 5*time.Second)
		if resp.StatusCode != 200 || !strings.Contains(string(got), "echo: old client") || !resp.Close {
			t.Fatalf("%d close=%t %s", resp.StatusCode, resp.Close, got)
		}
		checkClosed(t, c, br, 2*time.Second)
	})
	t.Run("keep_alive", func(t *testing.T) {
		c := e.dial(t)
		br := bufio.NewReader(c)
		for i := range 2 {
			fmt.Fprintf(c, "GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\nAuthorization: Bearer %s\r\n\r\n", demoKey)
			resp, got := readResponse(t, c, br, 5*time.Second)
			if resp.StatusCode != 200 || resp.Close || !strings.Contains(string(got), "gpt-4o-mini") {
				t.Fatalf("request %d: %d close=%t %s", i, resp.StatusCode, resp.Close, got)
			}
		}
	})
	t.Run("stream", func(t *testing.T) {
		c := e.dial(t)
		br := bufio.NewReader(c)
		body := chatBody("old stream", true)
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"+
			"Content-Length: %d\r\n\r\n%s", demoKey, len(body), body)
		resp, got := readResponse(t, c, br, 5*time.Second)
		if resp.StatusCode != 200 || !resp.Close || !strings.Contains(string(got), "data: [DONE]") {
			t.Fatalf("%d close=%t %s", resp.StatusCode, resp.Close, got)
		}
		checkClosed(t, c, br, 2*time.Second)
	})
	e.s.checkSettled(t, base)
}

// TestFaultClientPipelining: requests written back to back on one
// connection before any answer (a buffered one, a stream, a bad body, a
// models list) are answered in order, each complete and each the answer to
// its own request; a bad one in the middle does not break the others.
func TestFaultClientPipelining(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	c := e.dial(t)
	br := bufio.NewReader(c)
	reqs := e.chatRequest(chatBody("first", false)) +
		e.chatRequest(chatBody("second", true)) +
		e.chatRequest(`{bad`) +
		"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\n\r\n" +
		e.chatRequest(chatBody("fifth", false))
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status int
		has    string
	}{{200, "echo: first"}, {200, "data: [DONE]"}, {400, "invalid JSON"}, {200, `"object":"list"`}, {200, "echo: fifth"}}
	for i, w := range want {
		resp, got := readResponse(t, c, br, 5*time.Second)
		if resp.StatusCode != w.status || !strings.Contains(string(got), w.has) || resp.Close {
			t.Fatalf("answer %d: %d close=%t %.300s; want %d with %q", i, resp.StatusCode, resp.Close, got, w.status, w.has)
		}
		if i == 1 && streamText(got) != "echo: second" {
			t.Fatalf("the stream is not the second request's: %s", got)
		}
	}
	if n := e.fake.Stats().Requests; n != 4 {
		t.Fatalf("the upstream saw %d requests, want 4", n)
	}
	_ = c.Close()
	e.s.checkSettled(t, base)
}

// streamText joins the content deltas of a raw chat stream.
func streamText(raw []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var ev struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(data), &ev) == nil && len(ev.Choices) > 0 {
			b.WriteString(ev.Choices[0].Delta.Content)
		}
	}
	return b.String()
}

// records waits until user has n JSONL transcript records and returns
// them in the order written.
func (e *faultEnv) records(t *testing.T, user string, n int) []map[string]any {
	t.Helper()
	var found []map[string]any
	waitFor(5*time.Second, func() bool {
		found = found[:0]
		for _, r := range jsonlRecords(t, e.dir) {
			if r["user"] == user {
				found = append(found, r)
			}
		}
		return len(found) >= n
	})
	if len(found) != n {
		t.Fatalf("%d transcript records for user %q, want %d", len(found), user, n)
	}
	return found
}

// checkRecord fails unless rec has the status and client_gone given.
func checkRecord(t *testing.T, rec map[string]any, status int, gone bool) {
	t.Helper()
	if rec["status"] != float64(status) || rec["client_gone"] != gone {
		raw, _ := json.Marshal(rec)
		t.Fatalf("transcript record %s; want status %d, client_gone %t", raw, status, gone)
	}
}

// appRequest is a raw chat request with the trusted app key on behalf of
// user.
func (e *faultEnv) appRequest(user, body string, extra ...string) string {
	req := e.chatRequest(body, append([]string{"X-Sluice-User: " + user}, extra...)...)
	return strings.Replace(req, "Bearer "+demoKey, "Bearer "+appKey, 1)
}

// TestFaultClientDisconnectQueued: a client that hangs up while its request
// waits, for its user's budget (tier rpm 6, burst 1) or for the provider's
// (budget rpm 20, burst 1), is dropped within ~100 ms: the wait ends as
// sluice_queue_outcomes_total{outcome="abandoned"} of its stage, it counts
// in sluice_client_disconnects_total, the upstream is never called for it,
// its transcript says 499 and client_gone, and the queue is empty after.
func TestFaultClientDisconnectQueued(t *testing.T) {
	policies := `tiers:
  slow:
    rpm: {limit: 6, burst: 1}
    max_wait: 30s
keys:
  - id: app
    sha256: ` + sha256Hex(appKey) + `
    trusted: true
    tier: slow
`
	e := newFaultEnvWith(t, "    budget: {rpm: 20, rpm_burst: 1}\n", policies)
	base := e.s.resources(t)
	// served sends one request for user on a connection of its own and
	// waits for its 200.
	served := func(t *testing.T, user string) {
		t.Helper()
		c := e.dial(t)
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, e.appRequest(user, chatBody("served", false))); err != nil {
			t.Fatal(err)
		}
		if resp, body := readResponse(t, c, br, 10*time.Second); resp.StatusCode != 200 {
			t.Fatalf("request for %s: %d %s", user, resp.StatusCode, body)
		}
		_ = c.Close()
	}
	hangUp := func(t *testing.T, stage, user string, nrec int) {
		t.Helper()
		calls := e.fake.Stats().Requests
		abandoned := e.counter(t, "sluice_queue_outcomes_total", `stage="`+stage+`"`, `outcome="abandoned"`)
		gone := e.counter(t, "sluice_client_disconnects_total", `route="chat_completions"`)
		c := e.dial(t)
		if _, err := io.WriteString(c, e.appRequest(user, chatBody("waiting", false))); err != nil {
			t.Fatal(err)
		}
		if !waitFor(2*time.Second, func() bool {
			v, _ := e.s.metric(t, "sluice_queue_depth", `stage="`+stage+`"`)
			return v == 1
		}) {
			t.Fatalf("the request did not queue at stage %s", stage)
		}
		// A waiting request is in flight but not active: the autoscaling
		// signal does not count it.
		inFlight, _ := e.s.metric(t, "sluice_requests_in_flight")
		active, _ := e.s.metric(t, "sluice_requests_active")
		if inFlight < 1 || active != inFlight-1 {
			t.Fatalf("waiting at stage %s: in flight %v, active %v; want active = in flight - 1", stage, inFlight, active)
		}
		_ = c.Close()
		closed := time.Now()
		e.checkDelta(t, abandoned, 1, "sluice_queue_outcomes_total", `stage="`+stage+`"`, `outcome="abandoned"`)
		if d := time.Since(closed); d > time.Second {
			t.Fatalf("the hang-up was noticed after %v", d)
		}
		e.checkDelta(t, gone, 1, "sluice_client_disconnects_total", `route="chat_completions"`)
		if v, _ := e.s.metric(t, "sluice_queue_depth", `stage="`+stage+`"`); v != 0 {
			t.Fatalf("queue depth %v after the hang-up", v)
		}
		recs := e.records(t, user, nrec)
		checkRecord(t, recs[nrec-1], 499, true)
		if n := e.fake.Stats().Requests - calls; n != 0 {
			t.Fatalf("the upstream was called %d times for a request whose client left", n)
		}
	}
	t.Run("user_stage", func(t *testing.T) {
		// The user's one-request burst is spent; the next slot is 10 s away.
		user := "queued-user-" + nonce()
		served(t, user)
		hangUp(t, "user", user, 2)
	})
	t.Run("provider_stage", func(t *testing.T) {
		// A first user spends the provider's burst; a second user, within
		// budget, waits up to 3 s for the provider's next slot.
		served(t, "spender-"+nonce())
		hangUp(t, "provider", "queued-provider-"+nonce(), 1)
	})
	e.s.checkSettled(t, base)
}

// TestFaultClientDisconnectUpstream: a client (the SDK, its context
// cancelled) that leaves while the upstream works. Sluice watches the
// client's socket during the upstream call too: before the upstream's first
// byte (a buffered answer the model takes 60 s to write, or a stream whose
// upstream hangs) Sluice closes the call's connection, so the upstream
// stops within a watch interval (100 ms) and bills nothing more; once a
// stream's headers are in, the relay cancels it likewise. Every case counts
// one sluice_client_disconnects_total, ends with nothing in flight, and
// leaves a transcript record marked client_gone with the status Sluice had
// for it (499 when the answer had not begun).
func TestFaultClientDisconnectUpstream(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	client := e.s.client(appKey)
	params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages("leave early")}

	f := func(t *testing.T, stream bool, cancelAfter time.Duration, status int, upstreamCancelled bool, noticedWithin time.Duration, opts ...option.RequestOption) {
		t.Helper()
		user := "leaver-" + nonce()
		opts = append(opts, option.WithHeader("X-Sluice-User", user))
		gone := e.counter(t, "sluice_client_disconnects_total", `route="chat_completions"`)
		aborted := e.fake.Stats().Aborted
		ctx, cancel := context.WithCancel(testContext(t, 20*time.Second))
		defer cancel()
		time.AfterFunc(cancelAfter, cancel)
		if stream {
			st := client.Chat.Completions.NewStreaming(ctx, params, opts...)
			for st.Next() {
			}
			_ = st.Close()
		} else if _, err := client.Chat.Completions.New(ctx, params, opts...); err == nil {
			t.Fatal("the call succeeded although its context was cancelled")
		}
		<-ctx.Done()
		left := time.Now()
		if !waitFor(noticedWithin, func() bool {
			return e.counter(t, "sluice_client_disconnects_total", `route="chat_completions"`)-gone >= 1
		}) {
			t.Fatalf("the disconnect was not counted within %v", noticedWithin)
		}
		t.Logf("disconnect counted %v after the client left", time.Since(left).Round(10*time.Millisecond))
		e.checkDelta(t, gone, 1, "sluice_client_disconnects_total", `route="chat_completions"`)
		if !waitFor(2*time.Second, func() bool { v, _ := e.s.metric(t, "sluice_requests_in_flight"); return v == 0 }) {
			t.Fatal("requests still in flight after the client left")
		}
		if upstreamCancelled {
			if !waitFor(noticedWithin, func() bool { return e.fake.Stats().Aborted == aborted+1 }) {
				t.Fatalf("the upstream call was not cancelled (aborted %d → %d)", aborted, e.fake.Stats().Aborted)
			}
			t.Logf("the upstream saw the cancel within %v of the client leaving", time.Since(left).Round(10*time.Millisecond))
		} else if n := e.fake.Stats().Aborted - aborted; n != 0 {
			t.Fatalf("the upstream saw %d aborted calls; this stage runs the call to its end", n)
		}
		checkRecord(t, e.records(t, user, 1)[0], status, true)
	}
	t.Run("buffered_waiting_first_byte", func(t *testing.T) {
		// A 60 s completion whose client leaves after 1 s.
		timeouts := e.counter(t, "sluice_upstream_errors_total", `reason="timeout"`)
		f(t, false, time.Second, 499, true, time.Second, option.WithHeader("X-Fake-Latency", "60s"))
		e.checkDelta(t, timeouts, 0, "sluice_upstream_errors_total", `reason="timeout"`)
	})
	t.Run("stream_upstream_hangs_before_headers", func(t *testing.T) {
		timeouts := e.counter(t, "sluice_upstream_errors_total", `reason="timeout"`)
		f(t, true, 300*time.Millisecond, 499, true, time.Second, option.WithHeader("X-Fake-Hang", "1"))
		e.checkDelta(t, timeouts, 0, "sluice_upstream_errors_total", `reason="timeout"`)
	})
	t.Run("stream_silent_after_headers", func(t *testing.T) {
		f(t, true, 300*time.Millisecond, 200, true, 1200*time.Millisecond, option.WithHeader("X-Fake-Latency", "3s"))
	})
	t.Run("mid_stream", func(t *testing.T) {
		f(t, true, 500*time.Millisecond, 200, true, 1200*time.Millisecond,
			option.WithHeader("X-Fake-Chunks", "50"), option.WithHeader("X-Fake-Chunk-Interval", "100ms"))
	})
	e.s.checkSettled(t, base)
}

// TestFaultClientIdleConnections10k: 10,000 idle connections, half of
// them keep-alive connections after one complete request (a 404 answered by
// Sluice itself), half connected without sending a byte. With them open
// Sluice still answers an SDK request promptly; the test reports the
// process's RSS and goroutines, then closes them all and checks the process
// settles back. The read and idle timeouts are 60 s here so that none is
// closed by the server during the test.
func TestFaultClientIdleConnections10k(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections; skipped with -short")
	}
	const n = 10000
	dir := t.TempDir()
	cfg := strings.Replace(strings.Replace(faultConfig(dir, ""), "read_timeout: 1s", "read_timeout: 60s", 1),
		"idle_timeout: 3s", "idle_timeout: 60s", 1)
	fake := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Config: cfg, Policies: trustedPolicies(), BaseURL: fake.URL})
	e := &faultEnv{env: env{fake: fake, s: s}, dir: dir, host: strings.TrimPrefix(s.URL, "http://")}
	client := s.client(demoKey)
	ask := func() time.Duration {
		t.Helper()
		start := time.Now()
		c, err := client.Chat.Completions.New(testContext(t, 10*time.Second), openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("still there?")})
		if err != nil || c.Choices[0].Message.Content != "echo: still there?" {
			t.Fatalf("request: %v", err)
		}
		return time.Since(start)
	}
	ask() // warm: the SDK's connection and the upstream's are open in the baseline
	base := s.resources(t)
	rss0, _ := s.metric(t, "process_resident_memory_bytes")

	conns := make([]net.Conn, n)
	errs := make(chan error, 16)
	start := time.Now()
	for w := range 16 {
		go func() {
			for i := w; i < n; i += 16 {
				c, err := net.Dial("tcp", e.host)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				conns[i] = c
				if i%2 == 1 {
					continue // connected, silent
				}
				br := bufio.NewReader(c)
				if _, err := io.WriteString(c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					errs <- err
					return
				}
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 404 || resp.Close {
					errs <- fmt.Errorf("connection %d: %d, close %t", i, resp.StatusCode, resp.Close)
					return
				}
			}
			errs <- nil
		}()
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	opened := time.Since(start)
	var open resources
	if !waitFor(10*time.Second, func() bool { open = s.resources(t); return open.fds >= base.fds+n }) {
		t.Fatalf("sluice holds %v descriptors, want at least %v with %d connections open", open.fds, base.fds+n, n)
	}
	rss, _ := s.metric(t, "process_resident_memory_bytes")
	var worst time.Duration
	for range 5 {
		worst = max(worst, ask())
	}
	t.Logf("%d idle connections opened in %v: RSS %.0f MiB (%.0f MiB before, %.1f KiB per connection), goroutines %v (%v before), fds %v; slowest of 5 requests %v",
		n, opened.Round(time.Millisecond), rss/(1<<20), rss0/(1<<20), (rss-rss0)/n/1024, open.goroutines, base.goroutines, open.fds, worst.Round(time.Millisecond))
	if worst > time.Second {
		t.Fatalf("a request took %v with %d idle connections open", worst, n)
	}
	// Bounds well above what was measured (14.5 KiB and one goroutine per
	// connection), so that a second goroutine or a buffer grown per idle
	// connection fails here.
	if per := (rss - rss0) / n; per > 48<<10 {
		t.Fatalf("%.1f KiB of RSS per idle connection, want at most 48", per/1024)
	}
	if g := open.goroutines - base.goroutines; g > 1.2*n {
		t.Fatalf("%v goroutines for %d idle connections, want at most one each", g, n)
	}
	for i, c := range conns {
		_ = c.Close()
		conns[i] = nil
	}
	if v, _ := s.metric(t, "sluice_protocol_errors_total", `reason="timeout"`); v != 0 {
		t.Fatalf("%v connections timed out; the test's timeouts are 60 s", v)
	}
	s.checkSettled(t, base)
}

// TestFaultClientDisconnectSending: a client that closes its connection
// while still sending its request (halfway through the headers or the body)
// is counted as sluice_protocol_errors_total{reason="incomplete"}, never
// reaches the upstream, and leaves nothing behind; a connection closed
// before its first byte (a TCP health check) is counted nowhere.
func TestFaultClientDisconnectSending(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	req := e.chatRequest(chatBody("cut off", false))
	split := strings.Index(req, "\r\n\r\n") + 4
	for _, tc := range []struct {
		name string
		cut  int
		want float64
	}{{"before_first_byte", 0, 0}, {"in_request_line", 10, 1}, {"in_headers", split - 10, 1}, {"in_body", split + 10, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			incomplete := e.counter(t, "sluice_protocol_errors_total", `reason="incomplete"`)
			malformed := e.counter(t, "sluice_protocol_errors_total", `reason="malformed"`)
			c := e.dial(t)
			if _, err := io.WriteString(c, req[:tc.cut]); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
			_ = c.Close()
			e.checkDelta(t, incomplete, tc.want, "sluice_protocol_errors_total", `reason="incomplete"`)
			e.checkDelta(t, malformed, 0, "sluice_protocol_errors_total", `reason="malformed"`)
		})
	}
	if n := e.fake.Stats().Requests; n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	e.s.checkSettled(t, base)
}

// TestFaultClientBadHeaderValues: an end-user name (X-Sluice-User, from a
// trusted key) that is not valid UTF-8 or is over 256 bytes is a 400 naming
// the header in param, the connection kept; a control byte (NUL, SOH) in a
// header value is not valid HTTP: 400, closed, reason="malformed". None of
// them reaches the upstream.
func TestFaultClientBadHeaderValues(t *testing.T) {
	e := newFaultEnv(t)
	base := e.s.resources(t)
	for _, tc := range []struct{ name, user string }{
		{"invalid_utf8", "\xff\xfe"},
		{"too_long", strings.Repeat("u", 257)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t)
			br := bufio.NewReader(c)
			if _, err := io.WriteString(c, e.appRequest(tc.user, chatBody("hdr", false))); err != nil {
				t.Fatal(err)
			}
			resp, body := readResponse(t, c, br, 5*time.Second)
			checkErrorAnswer(t, resp, body, http.StatusBadRequest, "", "X-Sluice-User")
			if resp.Close {
				t.Fatal("a bad end-user name closed the connection")
			}
		})
	}
	for _, tc := range []struct{ name, user string }{{"soh", "a\x01b"}, {"nul", "a\x00b"}} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.counter(t, "sluice_protocol_errors_total", `reason="malformed"`)
			c := e.dial(t)
			br := bufio.NewReader(c)
			if _, err := io.WriteString(c, e.appRequest(tc.user, chatBody("hdr", false))); err != nil {
				t.Fatal(err)
			}
			resp, body := readResponse(t, c, br, 5*time.Second)
			checkErrorAnswer(t, resp, body, http.StatusBadRequest, "", "")
			checkClosed(t, c, br, 2*time.Second)
			e.checkDelta(t, before, 1, "sluice_protocol_errors_total", `reason="malformed"`)
		})
	}
	if n := e.fake.Stats().Requests; n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	e.s.checkSettled(t, base)
}
