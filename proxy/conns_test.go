package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sluice/internal/testnet"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/internal/testkit"
)

// connTestServer runs a Server on a loopback TCP listener in front of the
// upstream at upURL; extra is appended to the upstream's YAML entry. It
// returns the Server's address and its registry.
func connTestServer(t *testing.T, upURL, extra string) (string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := newTestServer(t, "upstreams:\n  - name: up\n    base_url: "+upURL+"/v1\n    api_key: sk-upstream-0123456789abcdef\n"+extra, Options{Registry: reg})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends with the listener
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), reg
}

// post sends a chat request through addr with a new connection each time
// and returns the status and body.
func post(t *testing.T, addr string, stream bool) (int, string) {
	body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-client")
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("request: %v", err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const connTestAnswer = `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`

// TestStaleConnsNeverFail: an upstream that closes idle keep-alive
// connections after 200 ms (as Node and uvicorn do after 5 s), and Sluice
// told to keep them 10 s: bursts separated by pauses longer than the
// upstream's keep-alive all succeed, and the closed connections are counted.
func TestStaleConnsNeverFail(t *testing.T) {
	var calls atomic.Int64
	up := &http.Server{
		IdleTimeout: 200 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, connTestAnswer)
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go up.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = up.Close() })
	addr, reg := connTestServer(t, "http://"+ln.Addr().String(), "    idle_conn_timeout: 10s\n")

	const bursts, n = 3, 16
	failed := atomic.Int64{}
	for b := range bursts {
		if b > 0 {
			time.Sleep(400 * time.Millisecond) // longer than the upstream keeps an idle connection
		}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				st, body := post(t, addr, i%2 == 0)
				if st != 200 || !strings.Contains(body, "hello") {
					failed.Add(1)
					t.Errorf("burst %d request %d: %d %s", b, i, st, body)
				}
			})
		}
		wg.Wait()
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), bursts*n)
	}
	if got := calls.Load(); got != bursts*n {
		t.Errorf("upstream saw %d calls; want %d (none repeated)", got, bursts*n)
	}
	stale := staleConns(t, reg, "before_send")
	if stale == 0 {
		t.Errorf("no stale connection counted; the upstream closed them all between bursts")
	}
}

// staleConns is sluice_upstream_stale_conns_total{stage} in reg.
func staleConns(t *testing.T, reg *prometheus.Registry, stage string) float64 {
	t.Helper()
	m, err := testkit.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := m.Value("sluice_upstream_stale_conns_total", `stage="`+stage+`"`)
	if !ok {
		t.Fatalf("sluice_upstream_stale_conns_total{stage=%q} not found", stage)
	}
	return v
}

// rawUpstream is an HTTP/1.1 upstream written by hand, so a test decides
// exactly what each request on each connection gets: answer(conn, n) is
// called for the n-th request (from 1) on a connection and returns false
// to close the connection without answering.
type rawUpstream struct {
	ln       net.Listener
	requests atomic.Int64
	conns    atomic.Int64
	answer   func(conn, n int64) bool
	// closed receives the time a connection was closed by Sluice while the
	// upstream still had a request to answer.
	closed chan time.Time
}

func startRawUpstream(t *testing.T, answer func(conn, n int64) bool) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, answer: answer, closed: make(chan time.Time, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c, u.conns.Add(1))
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return u
}

func (u *rawUpstream) url() string { return "http://" + u.ln.Addr().String() }

func (u *rawUpstream) serve(c net.Conn, conn int64) {
	defer c.Close()
	br := bufio.NewReader(c)
	for n := int64(1); ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		u.requests.Add(1)
		if !u.answer(conn, n) {
			return
		}
		if req.Header.Get("X-Test-Hold") != "" {
			// Hold the answer; report when Sluice closes the connection.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				u.closed <- time.Now()
			}
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(connTestAnswer), connTestAnswer)
	}
}

// TestClosedAtSendIsResent: the upstream closes a reused connection on
// reading its request, before any byte of the answer (a close racing the
// request). The request goes out again on a new connection and succeeds.
func TestClosedAtSendIsResent(t *testing.T) {
	u := startRawUpstream(t, func(conn, n int64) bool { return n == 1 }) // one answer a connection
	addr, reg := connTestServer(t, u.url(), "")
	for i := range 3 {
		if st, body := post(t, addr, false); st != 200 {
			t.Fatalf("request %d: %d %s", i, st, body)
		}
	}
	if got := staleConns(t, reg, "after_send"); got < 1 {
		t.Errorf("after_send stale count %v; want at least 1", got)
	}
	if c := u.conns.Load(); c < 3 {
		t.Errorf("upstream saw %d connections; want a new one for each resent request", c)
	}
}

// TestClosedOnNewConnNotResent: a request whose new connection closes
// before an answer may have reached the upstream; it is not sent again.
func TestClosedOnNewConnNotResent(t *testing.T) {
	u := startRawUpstream(t, func(conn, n int64) bool { return false }) // never answers
	addr, _ := connTestServer(t, u.url(), "")
	st, body := post(t, addr, false)
	if st != 502 {
		t.Fatalf("status %d %s; want 502", st, body)
	}
	if got := u.requests.Load(); got != 1 {
		t.Fatalf("upstream got the request %d times; want once", got)
	}
}

// TestClientGoneCancelsCall: a client that hangs up while the upstream
// thinks (no byte of the answer yet, non-stream) closes the upstream call
// within a watch interval or two.
func TestClientGoneCancelsCall(t *testing.T) {
	u := startRawUpstream(t, func(conn, n int64) bool { return true })
	addr, reg := connTestServer(t, u.url(), "")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-client\r\nX-Test-Hold: 1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	testkit.Eventually(t, 5*time.Second, "the upstream call", func() bool { return u.requests.Load() > 0 })
	time.Sleep(300 * time.Millisecond) // the upstream thinks
	left := time.Now()
	_ = c.Close()
	select {
	case at := <-u.closed:
		d := at.Sub(left)
		t.Logf("the upstream saw the cancel %v after the client left", d.Round(time.Millisecond))
		if d > 3*watchInterval {
			t.Errorf("the upstream saw the cancel after %v; want within %v", d, 3*watchInterval)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream call still runs 5 s after its client left")
	}
	// The aborted call is not an upstream failure.
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "sluice_upstream_errors_total" {
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() != 0 {
					t.Errorf("an aborted call counted as an upstream error: %v", m)
				}
			}
		}
	}
}

// TestIdleConnsClosed: connections idle for idle_conn_timeout are closed
// in the background, and the gauge says so.
func TestIdleConnsClosed(t *testing.T) {
	u := startRawUpstream(t, func(conn, n int64) bool { return true })
	addr, reg := connTestServer(t, u.url(), "    idle_conn_timeout: 100ms\n")
	if st, _ := post(t, addr, false); st != 200 {
		t.Fatalf("status %d", st)
	}
	gauge := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "sluice_upstream_connections" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if g := gauge(); g != 1 {
		t.Fatalf("connections after one call: %v; want 1", g)
	}
	testkit.Eventually(t, 2*time.Second, "the idle connection to close (idle_conn_timeout 100ms)", func() bool { return gauge() == 0 })
}

// TestStreamBodyReleasesLine: streamed answers give their line back, so
// more sequential streams than max_conns all complete on reused
// connections.
func TestStreamBodyReleasesLine(t *testing.T) {
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\ndata: [DONE]\n\n")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	up.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	go up.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = up.Close() })
	addr, _ := connTestServer(t, "http://"+ln.Addr().String(), "    max_conns: 2\n    max_conn_wait: 100ms\n")
	for i := range 6 {
		st, body := post(t, addr, true)
		if st != 200 || !bytes.Contains([]byte(body), []byte("[DONE]")) {
			t.Fatalf("stream %d: %d %s", i, st, body)
		}
	}
	if c := conns.Load(); c != 1 {
		t.Errorf("6 sequential streams used %d upstream connections; want 1, reused", c)
	}
}

// TestErrorAnswersReleaseLines: error answers to streams are read whole
// (to scrub the upstream's key from them); their connection goes back to
// the pool, so with max_conns 1 the next request is not left waiting.
func TestErrorAnswersReleaseLines(t *testing.T) {
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go up.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = up.Close() })
	addr, _ := connTestServer(t, "http://"+ln.Addr().String(), "    max_conns: 1\n    max_conn_wait: 100ms\n")
	for i := range 4 {
		if st, body := post(t, addr, i%2 == 0); st != 400 {
			t.Fatalf("request %d: %d %s; want the upstream's 400", i, st, body)
		}
	}
}

// TestCompressedAnswerDecoded: an upstream that gzips although asked for
// identity; Sluice asks for identity and reads the answer decoded.
func TestCompressedAnswerDecoded(t *testing.T) {
	var asked atomic.Value
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		asked.Store(r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, _ = io.WriteString(zw, connTestAnswer)
		_ = zw.Close()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go up.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { _ = up.Close() })
	addr, _ := connTestServer(t, "http://"+ln.Addr().String(), "")
	// The client asks for no compression: it must get the JSON itself.
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-client")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Encoding") != "" || string(got) != connTestAnswer {
		t.Fatalf("answer %q (Content-Encoding %q); want the upstream's JSON decoded", got, resp.Header.Get("Content-Encoding"))
	}
	if a := asked.Load(); a != "identity" {
		t.Errorf("Sluice asked the upstream with Accept-Encoding %q; want identity", a)
	}
}

// TestLinesPerUser: one user holds at most perFlow lines; its next call
// waits for one of its own, while another user's call takes a free line.
func TestLinesPerUser(t *testing.T) {
	p := &lines{max: 4, perFlow: 2, wait: 300 * time.Millisecond}
	a1, err1 := p.get("a")
	_, err2 := p.get("a")
	if err1 != nil || err2 != nil {
		t.Fatalf("a's two lines: %v, %v", err1, err2)
	}
	start := time.Now()
	if _, err := p.get("b"); err != nil || time.Since(start) > 50*time.Millisecond {
		t.Fatalf("b, with lines free: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	if _, err := p.get("a"); !errors.Is(err, errUserConns) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("a's third line while two are a's and one is free: %v after %v; want a wait, then errUserConns", err, time.Since(start))
	}
	got := make(chan *line)
	go func() {
		l, _ := p.get("a")
		got <- l
	}()
	time.Sleep(50 * time.Millisecond)
	p.put(a1, false)
	select {
	case l := <-got:
		if l != a1 {
			t.Fatal("a's waiting call got another line than the one a gave back")
		}
	case <-time.After(time.Second):
		t.Fatal("a's waiting call did not get the line a gave back")
	}
}

// TestCompressedStreamAnswers: a stream request the upstream answers with a
// gzip-compressed error gets the error decoded (its length is the decoded
// one); a compressed SSE stream whose client leaves after the first event
// ends cleanly (run with -race: the watcher and the reader share the
// decoder's body).
func TestCompressedStreamAnswers(t *testing.T) {
	const errBody = `{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}`
	release := make(chan struct{})
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		if r.Header.Get("X-Test-Error") != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(zw, errBody)
			_ = zw.Close()
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(zw, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
		_ = zw.Flush()
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_ = zw.Close()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go up.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { close(release); _ = up.Close() })
	addr, _ := connTestServer(t, "http://"+ln.Addr().String(), "")

	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer sk-client")
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("X-Test-Error", "1")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("Content-Encoding") != "" || string(got) != errBody {
		t.Fatalf("compressed stream error: %d %q (Content-Encoding %q); want 400 and the decoded error", resp.StatusCode, got, resp.Header.Get("Content-Encoding"))
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-client\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf [4096]byte
	var seen []byte
	for !bytes.Contains(seen, []byte(`"content":"hi"`)) {
		n, err := c.Read(buf[:])
		if err != nil {
			t.Fatalf("first event of the compressed stream: %v (%q)", err, seen)
		}
		seen = append(seen, buf[:n]...)
	}
	_ = c.Close()
	time.Sleep(3 * watchInterval) // the watcher ends the stream; -race checks the decoder
}

// TestPerIPListener: server.max_conns_per_ip closes a connection over the
// cap, gives the place back when one closes, and keeps the socket visible
// to the client-gone checks (fasthttp's own cap hid it).
func TestPerIPListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newPerIPListener(inner, 1)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := dial()
	defer c1.Close()
	s1 := <-accepted
	if rawConn(s1) == nil {
		t.Fatal("an accepted connection hides its socket from rawConn")
	}
	c2 := dial()
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatal("a second connection from one address was kept; the cap is 1")
	}
	_ = s1.Close()
	c3 := dial()
	defer c3.Close()
	select {
	case s3 := <-accepted:
		_ = s3.Close()
	case <-time.After(time.Second):
		t.Fatal("no connection accepted after the first one closed")
	}
}

// TestCloseNotifyBeforeFINNotReused: a TLS upstream that ends each
// keep-alive connection 100 ms after its answer with a close_notify alert
// but leaves the TCP connection open for seconds (the alert and the FIN
// race in the field; here the FIN never comes in time). The next call does
// not reuse the connection (its unread alert makes it stale before the
// request is sent) and succeeds on a new one: no 502, no resend.
func TestCloseNotifyBeforeFINNotReused(t *testing.T) {
	pki := testnet.NewPKI(t, "private")
	srvCert, _, _ := pki.Issue(t, "server", false, nil, net.ParseIP("127.0.0.1"))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var requests, conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func(c *tls.Conn) {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				requests.Add(1)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(connTestAnswer), connTestAnswer)
				time.Sleep(100 * time.Millisecond)
				_ = c.CloseWrite() // close_notify only; the socket stays open
				time.Sleep(3 * time.Second)
			}(c.(*tls.Conn))
		}
	}()
	addr, reg := connTestServer(t, "https://"+ln.Addr().String(), "    idle_conn_timeout: 10s\n    tls:\n      ca_file: "+pki.CAFile+"\n")
	for i := range 3 {
		if i > 0 {
			time.Sleep(300 * time.Millisecond) // the alert has arrived; the FIN has not
		}
		if st, body := post(t, addr, false); st != 200 || !strings.Contains(body, "hello") {
			t.Fatalf("request %d: %d %s", i, st, body)
		}
	}
	if r, c := requests.Load(), conns.Load(); r != 3 || c != 3 {
		t.Errorf("upstream saw %d requests on %d connections; want 3 on 3 (none resent)", r, c)
	}
	if n := staleConns(t, reg, "before_send"); n != 2 {
		t.Errorf("stale before send: %v; want 2", n)
	}
}
