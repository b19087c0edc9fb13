package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"sluice/internal/testkit"
)

// TestProtocolErrors sends requests fasthttp refuses before the handler
// runs and checks each gets an OpenAI-shaped error, a closed connection and
// one count in sluice_protocol_errors_total under its reason.
func TestProtocolErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newTestServer(t, `server:
  max_body_bytes: 64
  max_header_bytes: 1024
  read_timeout: 300ms
upstreams:
  - name: mem
    base_url: http://upstream/v1
`, Options{Registry: reg})
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	defer ln.Close()

	f := func(reason string, status int, code, raw string) {
		t.Helper()
		before := testutil.ToFloat64(s.m.protocol[reasonIndex(t, reason)])
		c, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(raw)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(c)); err != nil {
			t.Fatalf("%s: no answer: %v", reason, err)
		}
		if resp.StatusCode() != status || !resp.ConnectionClose() {
			t.Fatalf("%s: status %d, connection close %t; want %d and close", reason, resp.StatusCode(), resp.ConnectionClose(), status)
		}
		var body struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(resp.Body(), &body); err != nil || body.Error.Message == "" || body.Error.Type != "invalid_request_error" {
			t.Fatalf("%s: body %s is not an OpenAI error (%v)", reason, resp.Body(), err)
		}
		if (code == "") != (body.Error.Code == nil) || (code != "" && *body.Error.Code != code) {
			t.Fatalf("%s: code %v, want %q", reason, body.Error.Code, code)
		}
		if got := testutil.ToFloat64(s.m.protocol[reasonIndex(t, reason)]); got != before+1 {
			t.Fatalf("%s: counted %v, want %v", reason, got, before+1)
		}
	}
	f("body_too_large", 413, "request_too_large",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n"+strings.Repeat("a", 65))
	f("headers_too_large", 431, "headers_too_large",
		"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2048)+"\r\n\r\n")
	f("timeout", 408, "", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
	f("malformed", 400, "", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")

	// A client that closes halfway through its headers or its body: no
	// answer can reach it, the request counts as incomplete.
	for _, raw := range []string{"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\""} {
		before := testutil.ToFloat64(s.m.protocol[protoIncomplete])
		c, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(raw))
		_ = c.Close()
		testkit.Poll(2*time.Second, func() bool { return testutil.ToFloat64(s.m.protocol[protoIncomplete]) != before })
		if got := testutil.ToFloat64(s.m.protocol[protoIncomplete]); got != before+1 {
			t.Fatalf("%q then close: incomplete counted %v, want %v", raw, got, before+1)
		}
	}
}

// TestUnauthenticatedBodyCut: without a valid key, a body over 64 KiB is
// not read: the 401 comes once the headers are in, while the client still
// has 30 MiB to send. With the key, the same request's body is read.
func TestUnauthenticatedBodyCut(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newTestServer(t, "upstreams:\n  - name: mem\n    base_url: http://upstream/v1\n", Options{Registry: reg})
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	defer ln.Close()
	send := func(key string) (int, error) {
		c, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		head := "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 31457280\r\n"
		if key != "" {
			head += "Authorization: Bearer " + key + "\r\n"
		}
		if _, err := c.Write([]byte(head + "\r\n" + strings.Repeat("a", 1024))); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(c)); err != nil {
			return 0, err
		}
		return resp.StatusCode(), nil
	}
	for _, key := range []string{"", "sk-wrong"} {
		st, err := send(key)
		if err != nil || st != fasthttp.StatusUnauthorized {
			t.Fatalf("key %q: status %d, %v; want a 401 before the body is sent", key, st, err)
		}
	}
	if got := testutil.ToFloat64(s.m.protocol[protoUnauthenticatedBody]); got != 2 {
		t.Fatalf("unauthenticated_body counted %v, want 2", got)
	}
	// A valid key: Sluice waits for the body (no answer within the second).
	if st, err := send("sk-client"); err == nil {
		t.Fatalf("a valid key's request was answered %d before its body came", st)
	}
}

func reasonIndex(t *testing.T, reason string) protocolReason {
	t.Helper()
	for i, l := range protocolLabels {
		if l == reason {
			return protocolReason(i)
		}
	}
	t.Fatalf("no reason %q", reason)
	return 0
}

// TestBufferedAnswerClientGone: a client that hangs up while the upstream
// prepares a buffered (non-stream) answer is counted in
// sluice_client_disconnects_total once the answer arrives; a client that
// waits is not.
func TestBufferedAnswerClientGone(t *testing.T) {
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		time.Sleep(400 * time.Millisecond)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"id":"x","object":"chat.completion","choices":[]}`)
	}}
	go up.Serve(upLn) //nolint:errcheck // ends when the listener closes
	defer upLn.Close()
	s := newTestServer(t, "upstreams:\n  - name: up\n    base_url: http://"+upLn.Addr().String()+"/v1\n", Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	defer ln.Close()
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	send := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-client\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return c
	}
	gone := func() float64 { return testutil.ToFloat64(s.m.disconnects[epChat]) }
	inFlight := func() float64 { return testutil.ToFloat64(s.m.inFlight) }

	c := send()
	var resp fasthttp.Response
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := resp.Read(bufio.NewReader(c)); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("waiting client: %v %d", err, resp.StatusCode())
	}
	_ = c.Close()
	if gone() != 0 {
		t.Fatalf("a client that got its answer was counted as gone")
	}
	c = send()
	testkit.Eventually(t, 3*time.Second, "the request in flight", func() bool { return inFlight() == 1 })
	_ = c.Close()
	testkit.Poll(3*time.Second, func() bool { return gone() == 1 && inFlight() == 0 })
	if gone() != 1 || inFlight() != 0 {
		t.Fatalf("disconnects %v, in flight %v; want 1 and 0", gone(), inFlight())
	}
}
