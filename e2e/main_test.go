// Package e2e runs the real sluice binary as a subprocess between the
// official OpenAI Go SDK and an in-process fake upstream (package fakeai),
// and checks what a client and the provider actually see.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
	"sluice/internal/testkit"
)

// Keys used by the suite. The fake upstream accepts only upstreamKey, so a
// client key that leaked upstream would be rejected there.
const (
	upstreamKey = "sk-upstream-e2e-5f0c1d2e3a4b5c6d7e8f"
	demoKey     = "sk-sluice-demo-e2e-0a1b2c3d4e5f6a7b8c9d"
	appKey      = "sk-sluice-app-e2e-9f8e7d6c5b4a3f2e1d0c"
)

// readyTimeout bounds the wait for a started sluice to answer /readyz.
const readyTimeout = 10 * time.Second

var (
	// moduleRoot is the directory of sluice's go.mod.
	moduleRoot string
	// sluiceBin is the binary TestMain built.
	sluiceBin string
)

// TestMain builds the sluice binary once for the whole suite.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := findModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sluiceBin = filepath.Join(dir, "sluice")
	if bin := os.Getenv("SLUICE_TEST_BIN"); bin != "" {
		// Another build under the same tests: a before/after comparison.
		sluiceBin = bin
		return m.Run()
	}
	build := exec.Command("go", "build", "-o", sluiceBin, "./cmd/sluice")
	build.Dir = moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/sluice: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// findModuleRoot walks up from the working directory to sluice's go.mod.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module sluice\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the go.mod of module sluice above the test directory")
		}
		dir = parent
	}
}

// ---------------------------------------------------------------------------
// The fake upstream

// fakeUpstream is a fakeai.Server on a loopback port that also records the
// status, headers and (bounded) body of its last answer, so tests can
// compare what Sluice relayed with what the provider really sent.
type fakeUpstream struct {
	*fakeai.Server
	// URL is the base URL an SDK takes ("http://127.0.0.1:PORT/v1").
	URL string

	mu         sync.Mutex
	lastStatus int
	lastHeader http.Header
	lastBody   []byte
}

// maxRecordedBody bounds the answer body a fakeUpstream keeps.
const maxRecordedBody = 64 << 10

// startFake serves a new fake upstream that accepts only upstreamKey (unless
// cfg names another key) until the test ends.
func startFake(t *testing.T, cfg fakeai.Config) *fakeUpstream {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = upstreamKey
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fake upstream: listen: %v", err)
	}
	f := &fakeUpstream{Server: fakeai.New(cfg), URL: "http://" + ln.Addr().String() + "/v1"}
	hs := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rw := &recordingWriter{ResponseWriter: w, f: f}
			defer rw.commit()
			f.Server.ServeHTTP(rw, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-served
	})
	return f
}

// LastResponse returns the status, headers and body (at most
// maxRecordedBody bytes) of the fake's last complete answer.
func (f *fakeUpstream) LastResponse() (int, http.Header, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastStatus, f.lastHeader.Clone(), bytes.Clone(f.lastBody)
}

// recordingWriter passes an answer through and keeps a copy for fakeUpstream.
type recordingWriter struct {
	http.ResponseWriter
	f      *fakeUpstream
	status int
	header http.Header
	body   []byte
}

// WriteHeader records the status and headers, then sends them.
func (w *recordingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.header = w.ResponseWriter.Header().Clone()
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records the first maxRecordedBody bytes, then sends p.
func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if room := maxRecordedBody - len(w.body); room > 0 {
		w.body = append(w.body, p[:min(room, len(p))]...)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the real writer (Flush).
func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recordingWriter) commit() {
	if w.status == 0 {
		return
	}
	w.f.mu.Lock()
	w.f.lastStatus, w.f.lastHeader, w.f.lastBody = w.status, w.header, w.body
	w.f.mu.Unlock()
}

// ---------------------------------------------------------------------------
// The sluice process

// sluiceOptions say how to start sluice. Empty Config or Policies use the
// example files in configs/, unchanged.
type sluiceOptions struct {
	// Config is the text of a sluice.yaml to use instead of the example.
	Config string
	// Policies is the text of a policies.yaml to use instead of the example.
	Policies string
	// BaseURL is OPENAI_BASE_URL; required.
	BaseURL string
	// Env adds or overrides environment variables.
	Env map[string]string
}

// sluiceProc is one running sluice process.
type sluiceProc struct {
	// URL is the API listener ("http://127.0.0.1:PORT").
	URL string
	// AdminURL is the admin listener.
	AdminURL string
	cmd      *exec.Cmd
	stderr   *syncBuffer
	exited   chan struct{}
	exitErr  error
}

// startSluice runs `sluice serve` configured by env only, waits until its
// /readyz answers, and kills it (by PID) when the test ends.
func startSluice(t *testing.T, o sluiceOptions) *sluiceProc {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(moduleRoot, "configs", "sluice.yaml")
	if o.Config != "" {
		cfgPath = filepath.Join(dir, "sluice.yaml")
		writeFile(t, cfgPath, o.Config)
	}
	polPath := filepath.Join(moduleRoot, "configs", "policies.yaml")
	if o.Policies != "" {
		polPath = filepath.Join(dir, "policies.yaml")
		writeFile(t, polPath, o.Policies)
	}
	// A free port can be taken by someone else between our probe and
	// sluice's listen; try again then.
	var lastErr string
	for attempt := 0; attempt < 3; attempt++ {
		s, err := launch(t, cfgPath, polPath, o)
		if err == nil {
			return s
		}
		lastErr = err.Error()
		if !strings.Contains(lastErr, "address already in use") {
			break
		}
	}
	t.Fatalf("sluice did not start: %s", lastErr)
	return nil
}

func launch(t *testing.T, cfgPath, polPath string, o sluiceOptions) (*sluiceProc, error) {
	addr, admin := freeAddr(t), freeAddr(t)
	env := map[string]string{
		"OPENAI_BASE_URL":   o.BaseURL,
		"OPENAI_API_KEY":    upstreamKey,
		"SLUICE_ADDR":       addr,
		"SLUICE_ADMIN_ADDR": admin,
		"SLUICE_DEMO_KEY":   demoKey,
		// Transcripts go to this test's own directory, never the source tree.
		"SLUICE_TRANSCRIPTS_DIR": t.TempDir(),
		"SLUICE_SPOOL_DIR":       t.TempDir(),
		// The suite reads slog's text lines (msg=…); JSON is the default.
		"SLUICE_LOG_FORMAT": "text",
	}
	for k, v := range o.Env {
		env[k] = v
	}
	s := &sluiceProc{URL: "http://" + addr, AdminURL: "http://" + admin, stderr: &syncBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(sluiceBin, "serve", "-config", cfgPath, "-policies", polPath)
	// Relative paths in a config (the transcripts' default directories)
	// resolve in a directory of the test's own, never the source tree.
	s.cmd.Dir = t.TempDir()
	s.cmd.Env = childEnv(env)
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %v", sluiceBin, err)
	}
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("sluice output (%s):\n%s", s.URL, s.stderr.String())
		}
	})
	if err := s.waitReady(); err != nil {
		s.kill()
		return nil, fmt.Errorf("%v\nsluice output:\n%s", err, s.stderr.String())
	}
	return s, nil
}

// childEnv is the test's environment without any OPENAI_* or SLUICE_*
// variable, plus env.
func childEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OPENAI_") || strings.HasPrefix(kv, "SLUICE_") {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func (s *sluiceProc) waitReady() error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(readyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("sluice exited before it was ready: %v", s.exitErr)
		default:
		}
		resp, err := client.Get(s.AdminURL + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("sluice not ready after %v", readyTimeout)
}

// kill ends the process we started, by its PID, and waits for it.
func (s *sluiceProc) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// signal sends sig to the sluice process.
func (s *sluiceProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to sluice (pid %d): %v", sig, s.cmd.Process.Pid, err)
	}
}

// waitExit waits up to d for the process to exit and returns its error
// (nil for exit status 0).
func (s *sluiceProc) waitExit(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-s.exited:
		return s.exitErr
	case <-time.After(d):
		t.Fatalf("sluice (pid %d) still running %v after it was told to stop", s.cmd.Process.Pid, d)
		return nil
	}
}

// Output returns what the process wrote so far (stdout and stderr).
func (s *sluiceProc) Output() string { return s.stderr.String() }

// client returns an SDK client for sluice with the given key, no retries.
func (s *sluiceProc) client(key string, opts ...option.RequestOption) *openai.Client {
	base := []option.RequestOption{
		option.WithBaseURL(s.URL + "/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	}
	c := openai.NewClient(append(base, opts...)...)
	return &c
}

// directClient returns an SDK client that talks to the fake itself.
func (f *fakeUpstream) directClient() *openai.Client {
	c := openai.NewClient(option.WithBaseURL(f.URL+"/"), option.WithAPIKey(upstreamKey), option.WithMaxRetries(0))
	return &c
}

// metric returns the value of the first sample of name whose labels include
// every one of labels (`route="chat_completions"`), and whether there is one.
func (s *sluiceProc) metric(t *testing.T, name string, labels ...string) (float64, bool) {
	t.Helper()
	m, err := testkit.Scrape(s.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m.Value(name, labels...)
}

// waitLogLine waits up to d for an output line containing every one of
// parts and returns it ("" when none came).
func (s *sluiceProc) waitLogLine(d time.Duration, parts ...string) string {
	deadline := time.Now().Add(d)
	for {
		for _, line := range strings.Split(s.Output(), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(line, p) {
					ok = false
					break
				}
			}
			if ok {
				return line
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logField returns the value of key in a slog text line ("" if absent).
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	rest := line[i+len(key)+2:]
	if strings.HasPrefix(rest, `"`) {
		if q, err := strconv.QuotedPrefix(rest); err == nil {
			v, _ := strconv.Unquote(q)
			return v
		}
	}
	if j := strings.IndexByte(rest, ' '); j >= 0 {
		return rest[:j]
	}
	return rest
}

// ---------------------------------------------------------------------------
// One fake plus one sluice

// env is a fake upstream and a sluice in front of it; the fault suites'
// depEnv and faultEnv build on it.
type env struct {
	fake *fakeUpstream
	s    *sluiceProc
}

// envOptions configure newEnv.
type envOptions struct {
	fake     fakeai.Config
	config   string // sluice.yaml text; "" = the example file
	policies string // policies.yaml text; "" = the example file
}

// newEnv starts a fake upstream and a sluice that forwards to it.
func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	f := startFake(t, o.fake)
	s := startSluice(t, sluiceOptions{Config: o.config, Policies: o.policies, BaseURL: f.URL})
	return &env{fake: f, s: s}
}

// configOptions fill the template of a temporary sluice.yaml.
type configOptions struct {
	maxBodyBytes int
	accessLog    bool
	firstByte    string
	idle         string
	routes       []string // model patterns, all to the one upstream
	aliases      map[string]string
}

// makeConfig writes a sluice.yaml that, like the example, takes its
// addresses and upstream from the environment.
func makeConfig(o configOptions) string {
	if o.maxBodyBytes == 0 {
		o.maxBodyBytes = 32 << 20
	}
	if o.firstByte == "" {
		o.firstByte = "120s"
	}
	if o.idle == "" {
		o.idle = "60s"
	}
	if len(o.routes) == 0 {
		o.routes = []string{"*"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  max_body_bytes: %d
  access_log: %t
  shutdown_timeout: 10s
upstreams:
  - name: openai
    type: openai
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
    timeouts:
      connect: 2s
      first_byte: %s
      idle: %s
      total: 5m
routes:
`, o.maxBodyBytes, o.accessLog, o.firstByte, o.idle)
	for _, r := range o.routes {
		fmt.Fprintf(&b, "  - model: %q\n    upstream: openai\n", r)
	}
	if len(o.aliases) == 0 {
		b.WriteString("aliases: {}\n")
	} else {
		b.WriteString("aliases:\n")
		for k, v := range o.aliases {
			fmt.Fprintf(&b, "  %q: %q\n", k, v)
		}
	}
	return b.String()
}

// trustedPolicies is a policies.yaml with the demo key (from
// SLUICE_DEMO_KEY, user "demo") and a trusted app key "app" (by sha256, no
// user of its own) that may name its end users.
func trustedPolicies() string {
	return `tiers:
  default:
    description: e2e
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    team: demo
    tier: default
  - id: app
    sha256: ` + sha256Hex(appKey) + `
    trusted: true
    team: apps
    tier: default
`
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// ---------------------------------------------------------------------------
// Small helpers

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("probe a free port: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// testContext is the test's context with a deadline, so a hung call fails
// the test instead of the whole run.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// asAPIError returns err as an *openai.Error or fails the test.
func asAPIError(t *testing.T, err error) *openai.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want an *openai.Error")
	}
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got error %T %v, want an *openai.Error", err, err)
	}
	return apiErr
}

// errorBody reads the body of an API error's response (the SDK keeps it).
func errorBody(t *testing.T, e *openai.Error) []byte {
	t.Helper()
	if e.Response == nil || e.Response.Body == nil {
		t.Fatalf("API error has no response body")
	}
	b, err := io.ReadAll(e.Response.Body)
	if err != nil {
		t.Fatalf("read error body: %v", err)
	}
	e.Response.Body = io.NopCloser(bytes.NewReader(b))
	return b
}

// waitFor polls cond for up to d and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool { return testkit.Poll(d, cond) }

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
