package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/openai/openai-go/v3/option"
)

// Upstreams on other stacks, for the conformance suite
// (conformance_test.go): Node's http server and uvicorn, both closing idle
// keep-alive connections after 5 s. Their programs are in
// testdata/upstreams; both answer the same contract (see the comment at the
// top of node_upstream.js).

// envRequireUvicorn, set to 1 by scripts/test.sh after it installed Debian's
// python3-uvicorn, turns a missing uvicorn (or node) into a failure instead
// of a skip.
const envRequireUvicorn = "SLUICE_TEST_UVICORN"

// systemPython is Debian's python3, where python3-uvicorn installs (not a
// pyenv python3 that may come first on PATH).
const systemPython = "/usr/bin/python3"

// upstreamServer is one running Node or uvicorn upstream.
type upstreamServer struct {
	// name is "node" or "uvicorn".
	name string
	// URL is the server's root ("http://127.0.0.1:PORT"); the API is
	// under /v1.
	URL    string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// missingUpstream skips the test, or fails it when scripts/test.sh said the
// upstream must be there.
func missingUpstream(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(envRequireUvicorn) == "1" {
		t.Fatalf("%s (%s=1: scripts/test.sh installs it)", msg, envRequireUvicorn)
	}
	t.Skipf("%s; scripts/test.sh installs it (or: apt-get install python3-uvicorn)", msg)
}

// startNodeUpstream runs testdata/upstreams/node_upstream.js with Node.
func startNodeUpstream(t *testing.T) *upstreamServer {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/node"); serr != nil {
			missingUpstream(t, "node is not installed")
		}
		node = "/usr/bin/node"
	}
	script := filepath.Join(moduleRoot, "e2e", "testdata", "upstreams", "node_upstream.js")
	return startUpstreamProc(t, "node", node, script)
}

// startUvicornUpstream serves testdata/upstreams/uvicorn_app.py with Debian's
// uvicorn and its default keep-alive of 5 s (written out, as vLLM does).
func startUvicornUpstream(t *testing.T) *upstreamServer {
	t.Helper()
	if out, err := exec.Command(systemPython, "-c", "import uvicorn").CombinedOutput(); err != nil {
		missingUpstream(t, "%s cannot import uvicorn: %v %s", systemPython, err, bytes.TrimSpace(out))
	}
	return startUpstreamProc(t, "uvicorn", systemPython, "-m", "uvicorn",
		"--app-dir", filepath.Join(moduleRoot, "e2e", "testdata", "upstreams"), "uvicorn_app:app",
		"--fd", "3", "--timeout-keep-alive", "5", "--no-access-log", "--log-level", "warning")
}

// startUpstreamProc listens on a free loopback port, hands the socket to
// the program as fd 3 (so there is no race for the port), waits until it
// answers, and kills it by its PID when the test ends.
func startUpstreamProc(t *testing.T, name, prog string, args ...string) *upstreamServer {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs a %s upstream: skipped under -short", name)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("%s upstream: listen: %v", name, err)
	}
	f, err := ln.(*net.TCPListener).File()
	_ = ln.Close() // f holds its own copy of the socket
	if err != nil {
		t.Fatalf("%s upstream: socket file: %v", name, err)
	}
	u := &upstreamServer{name: name, URL: "http://" + ln.Addr().String(), out: &syncBuffer{}, exited: make(chan struct{})}
	u.cmd = exec.Command(prog, args...)
	u.cmd.Dir = t.TempDir()
	u.cmd.ExtraFiles = []*os.File{f}
	u.cmd.Stdout, u.cmd.Stderr = u.out, u.out
	u.cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if err := u.cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("%s upstream: start %s: %v", name, prog, err)
	}
	_ = f.Close()
	go func() {
		_ = u.cmd.Wait()
		close(u.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-u.exited:
		default:
			_ = u.cmd.Process.Kill() // the PID we started, nothing else
			<-u.exited
		}
		if t.Failed() {
			t.Logf("%s upstream output:\n%s", name, u.out.String())
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-u.exited:
			t.Fatalf("%s upstream exited before it answered:\n%s", name, u.out.String())
		default:
		}
		resp, err := client.Get(u.URL + "/_sent?id=ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			client.CloseIdleConnections()
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s upstream did not answer within 20s: %v\n%s", name, err, u.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sentRecord is what an upstream says it answered to one request.
type sentRecord struct {
	Server         string            `json:"server"`
	Path           string            `json:"path"`
	RequestHeaders map[string]string `json:"request_headers"`
	RequestBody    []byte            `json:"request_body"`
	Status         int               `json:"status"`
	// Body is the answer before any compression.
	Body []byte `json:"body"`
}

// sent asks the upstream what it answered to the request with
// X-Conformance-Id id; ok is false when no such request reached it.
func (u *upstreamServer) sent(t *testing.T, id string) (sentRecord, bool) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u.URL + "/_sent?id=" + id)
	if err != nil {
		t.Fatalf("%s upstream: GET /_sent: %v", u.name, err)
	}
	defer resp.Body.Close()
	var rec sentRecord
	if resp.StatusCode == http.StatusNotFound {
		return rec, false
	}
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil {
		t.Fatalf("%s upstream: /_sent: %v", u.name, err)
	}
	return rec, true
}

// ---------------------------------------------------------------------------
// What the client received

// wireCapture keeps the status, headers and body bytes of the answer an SDK
// call received, as the SDK read them (after the transport's own gzip
// decoding, if any), and drains the body to its end when the SDK closes it.
type wireCapture struct {
	mu     sync.Mutex
	status int
	header http.Header
	// uncompressed reports that Go's transport decoded a gzip answer.
	uncompressed bool
	body         bytes.Buffer
}

// middleware returns the SDK option that records into c.
func (c *wireCapture) middleware() option.RequestOption {
	return option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		resp, err := next(req)
		if err != nil || resp == nil {
			return resp, err
		}
		c.mu.Lock()
		c.status, c.header, c.uncompressed = resp.StatusCode, resp.Header.Clone(), resp.Uncompressed
		c.mu.Unlock()
		resp.Body = &teeBody{r: resp.Body, c: c}
		return resp, nil
	})
}

// Body returns the bytes received, decoded from any Content-Encoding the
// transport left in place (br, or gzip the client did not ask for).
func (c *wireCapture) Body() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.body.Bytes()
	switch enc := c.header.Get("Content-Encoding"); {
	case enc == "" || c.uncompressed:
		return bytes.Clone(b), nil
	case enc == "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return io.ReadAll(zr)
	case enc == "br":
		return io.ReadAll(brotli.NewReader(bytes.NewReader(b)))
	default:
		return nil, fmt.Errorf("unexpected Content-Encoding %q", enc)
	}
}

type teeBody struct {
	r io.ReadCloser
	c *wireCapture
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.c.mu.Lock()
		t.c.body.Write(p[:n])
		t.c.mu.Unlock()
	}
	return n, err
}

// Close reads what the SDK left unread (an SDK stops at [DONE]), so the
// comparison sees the whole answer.
func (t *teeBody) Close() error {
	var buf [4096]byte
	for {
		if _, err := t.Read(buf[:]); err != nil {
			break
		}
	}
	return t.r.Close()
}

// ---------------------------------------------------------------------------
// SSE and JSON helpers

// sseEvents splits an SSE body into events, each with its framing (lines
// and the blank line that ends it), so that joining them gives the body.
func sseEvents(b []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		line := b[i : i+j+1]
		i += j + 1
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			out = append(out, b[start:i])
			start = i
		}
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// eventData returns the data of an SSE event ("" for a comment-only event).
func eventData(ev []byte) string {
	var data []string
	for _, line := range strings.Split(strings.ReplaceAll(string(ev), "\r\n", "\n"), "\n") {
		if v, ok := strings.CutPrefix(line, "data:"); ok {
			data = append(data, strings.TrimPrefix(v, " "))
		}
	}
	return strings.Join(data, "\n")
}

// usageOnly reports the chunk an upstream adds for
// stream_options.include_usage: no choices, a usage object.
func usageOnly(ev []byte) bool {
	var c struct {
		Choices *[]json.RawMessage `json:"choices"`
		Usage   json.RawMessage    `json:"usage"`
	}
	if json.Unmarshal([]byte(eventData(ev)), &c) != nil {
		return false
	}
	return c.Choices != nil && len(*c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}

// tokenUsage is a usage object's counts.
type tokenUsage struct {
	Prompt     int64 `json:"prompt_tokens"`
	Completion int64 `json:"completion_tokens"`
	Total      int64 `json:"total_tokens"`
}

// answerUsage returns the usage of a JSON answer, or of the last stream
// event that has one.
func answerUsage(body []byte, stream bool) (tokenUsage, bool) {
	var docs []string
	if stream {
		for _, ev := range sseEvents(body) {
			docs = append(docs, eventData(ev))
		}
	} else {
		docs = []string{string(body)}
	}
	var u tokenUsage
	found := false
	for _, d := range docs {
		var x struct {
			Usage *tokenUsage `json:"usage"`
		}
		if json.Unmarshal([]byte(d), &x) == nil && x.Usage != nil {
			u, found = *x.Usage, true
		}
	}
	return u, found
}

// answerText returns the assistant's text of a chat answer or stream.
func answerText(body []byte, stream bool) string {
	if !stream {
		var x struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if json.Unmarshal(body, &x) != nil || len(x.Choices) == 0 {
			return ""
		}
		return x.Choices[0].Message.Content
	}
	var b strings.Builder
	for _, ev := range sseEvents(body) {
		var x struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(eventData(ev)), &x) == nil {
			for _, c := range x.Choices {
				b.WriteString(c.Delta.Content)
			}
		}
	}
	return b.String()
}

// transcriptFor waits up to d for the JSONL transcript of the request whose
// answer carried X-Request-Id id.
func transcriptFor(t *testing.T, dir, id string, d time.Duration) (map[string]any, error) {
	t.Helper()
	var found map[string]any
	ok := waitFor(d, func() bool {
		for _, r := range jsonlRecords(t, dir) {
			if r["request_id"] == id || r["upstream_request_id"] == id {
				found = r
				return true
			}
		}
		return false
	})
	if !ok {
		return nil, errors.New("no transcript record with request id " + id)
	}
	return found, nil
}

// num reads a JSON number field of a transcript record.
func num(r map[string]any, k string) int64 {
	v, _ := r[k].(float64)
	return int64(v)
}

// ctxFor is a per-call context bounded by d.
func ctxFor(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, d)
}
