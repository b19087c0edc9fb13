package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/fakeai"
)

// Secrets of the secrets-and-tenants suite, besides upstreamKey, demoKey and
// appKey. Each is long and distinct, so a stray prefix cannot match by
// chance.
const (
	tightKey      = "sk-sluice-tight-e2e-4c3b2a1f0e9d8c7b6a5f"
	wrongKey      = "sk-sluice-wrong-e2e-7e6d5c4b3a2f1e0d9c8b"
	secretsToken  = "adm-secrets-e2e-1f2e3d4c5b6a79880a9b"
	acmeAppKey    = "sk-sluice-acme-e2e-2b3c4d5e6f7a8b9c0d1e"
	globexAppKey  = "sk-sluice-globex-e2e-9a8b7c6d5e4f3a2b1c0d"
	echoKeyHeader = "X-Test-Echo-Key"
)

// ---------------------------------------------------------------------------
// A fake upstream that shows what reached it and can echo its key

// secretsFake is a fake upstream that records every request it receives
// (method, path, headers, body) and, for a request carrying
// X-Test-Echo-Key, answers 401 quoting the bearer key it got in full, in
// its body and in a header, as a careless provider or proxy would ("gzip": gzip-compressed when the
// request accepts it).
type secretsFake struct {
	*fakeai.Server
	// URL is the base URL ("http://127.0.0.1:PORT/v1").
	URL string

	mu    sync.Mutex
	seen  bytes.Buffer
	auths []string
}

func startSecretsFake(t *testing.T) *secretsFake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &secretsFake{Server: fakeai.New(fakeai.Config{APIKey: upstreamKey}), URL: "http://" + ln.Addr().String() + "/v1"}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		fmt.Fprintf(&f.seen, "%s %s?%s\n", r.Method, r.URL.Path, r.URL.RawQuery)
		_ = r.Header.Write(&f.seen)
		f.seen.Write(body)
		f.seen.WriteString("\n\n")
		f.auths = append(f.auths, r.Header.Get("Authorization"))
		f.mu.Unlock()
		if mode := r.Header.Get(echoKeyHeader); mode != "" {
			key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			msg, _ := json.Marshal(map[string]any{"error": map[string]any{
				"message": "Incorrect API key provided: " + key + ". You can find your API key at https://platform.openai.com/account/api-keys.",
				"type":    "invalid_request_error", "param": nil, "code": "invalid_api_key"}})
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Echo-Authorization", r.Header.Get("Authorization"))
			if mode == "gzip" && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				var b bytes.Buffer
				zw := gzip.NewWriter(&b)
				_, _ = zw.Write(msg)
				_ = zw.Close()
				msg = b.Bytes()
				w.Header().Set("Content-Encoding", "gzip")
			}
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(msg)
			return
		}
		f.Server.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return f
}

// view returns everything the fake received and the Authorization header of
// each request.
func (f *secretsFake) view() (string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen.String(), slices.Clone(f.auths)
}

// ---------------------------------------------------------------------------
// A client that keeps every answer

// recorder sends requests and keeps every answer's status line, headers and
// (decoded) body, the whole client-facing surface of a scenario.
type recorder struct {
	t      *testing.T
	client *http.Client
	mu     sync.Mutex
	all    bytes.Buffer
}

func newRecorder(t *testing.T) *recorder {
	// DisableCompression: no Accept-Encoding unless a request sets one, and
	// bodies exactly as sent.
	return &recorder{t: t, client: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{DisableCompression: true}}}
}

// do sends one request and returns its status, headers and body (gunzipped
// when it came compressed); everything is kept for the final scan.
func (r *recorder) do(method, url string, hdr map[string]string, body string) (int, http.Header, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body) // a cut stream ends in an error: keep what came
	b := raw
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			r.t.Fatalf("%s %s: gzip: %v", method, url, err)
		}
		b, _ = io.ReadAll(zr)
	}
	r.mu.Lock()
	fmt.Fprintf(&r.all, "%s %s -> %s\n", method, url, resp.Status)
	_ = resp.Header.Write(&r.all)
	r.all.Write(raw)
	r.all.WriteString("\n")
	r.all.Write(b)
	r.all.WriteString("\n\n")
	r.mu.Unlock()
	return resp.StatusCode, resp.Header, string(b)
}

// raw writes bytes to the server at addr ("127.0.0.1:PORT") on a new
// connection and keeps what comes back (until the server closes or 2 s
// pass): for requests an HTTP client refuses to send.
func (r *recorder) raw(addr, req string) string {
	r.t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		r.t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.WriteString(c, req)
	out, _ := io.ReadAll(c)
	r.mu.Lock()
	fmt.Fprintf(&r.all, "raw %s\n%s\n\n", addr, out)
	r.mu.Unlock()
	return string(out)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.all.String()
}

// ---------------------------------------------------------------------------
// Scanning for secrets

// secretForms returns the forms of a secret to look for in an output: the
// secret itself, its first and last 12 bytes, and the base64 (standard and
// URL alphabets) of it and of "Bearer " + it.
func secretForms(secret string) []string {
	forms := []string{secret, secret[:12], secret[len(secret)-12:]}
	for _, s := range []string{secret, "Bearer " + secret} {
		forms = append(forms, base64.StdEncoding.EncodeToString([]byte(s)), base64.RawURLEncoding.EncodeToString([]byte(s)))
	}
	return forms
}

// noSecret fails the test for every form of every secret found in text.
func noSecret(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, form := range secretForms(s) {
			if i := strings.Index(text, form); i >= 0 {
				t.Errorf("%s holds %q (a form of a secret): …%s…", where, form, text[max(0, i-200):min(len(text), i+len(form)+100)])
			}
		}
	}
}

// treeText returns the contents of every file under dir, and how many
// files there were.
func treeText(t *testing.T, dir string) (string, int) {
	t.Helper()
	var b strings.Builder
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		b.WriteString(path + "\n")
		b.Write(data)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return b.String(), n
}

// ---------------------------------------------------------------------------
// Configuration

// secretsConfig is a sluice.yaml with the access log, the admin token, the
// memory cache, and full-content JSONL transcripts (and the spool) in dirs.
func secretsConfig(firstByte, transcripts, spool string) string {
	return strings.Replace(makeConfig(configOptions{accessLog: true, firstByte: firstByte}), "  shutdown_timeout: 10s\n",
		"  shutdown_timeout: 10s\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1) +
		"cache:\n  store: memory\n" +
		"transcripts:\n  mode: jsonl\n  content: full\n  flush_interval: 50ms\n  jsonl:\n    dir: " + transcripts +
		"\n  spool:\n    dir: " + spool + "\n"
}

// secretsPolicies has the demo key (key_env), the trusted app key, and a
// "tight" key of one request per minute. desc varies the bytes for reloads.
func secretsPolicies(desc string) string {
	return `tiers:
  default:
    description: ` + desc + `
  tight:
    rpm: {limit: 1, burst: 1}
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    team: red
    tier: default
    stored_objects: true   # the scenario echoes the key on GET /v1/files
  - id: app
    sha256: ` + sha256Hex(appKey) + `
    trusted: true
    team: apps
    tier: default
  - id: tight
    sha256: ` + sha256Hex(tightKey) + `
    user: tight
    team: red
    tier: tight
`
}

// ---------------------------------------------------------------------------
// The tests

// TestFaultSecretsNoLeak runs a mixed scenario with every output on — access
// log, debug level, full-content transcripts, the cache, the admin API — and
// then greps everything it produced for every secret (client keys, a wrong
// key, the admin token, the upstream key) in raw form, as 12-byte prefix
// and suffix, and base64: Sluice's output, the transcript and spool files,
// /metrics, every answer's headers and body. The fake upstream may see the
// upstream key only. The upstream echoes its key in full in some error
// answers; the client must get it scrubbed. It runs with both log formats.
func TestFaultSecretsNoLeak(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) { testNoLeak(t, format) })
	}
}

func testNoLeak(t *testing.T, format string) {
	// field is how a log line of the format shows key=value.
	field := func(k, v string) string {
		if format == "json" {
			return `"` + k + `":"` + v + `"`
		}
		return k + "=" + v
	}
	fake := startSecretsFake(t)
	trDir, spoolDir := t.TempDir(), t.TempDir()
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: secretsConfig("1s", trDir, spoolDir),
		Policies: secretsPolicies("e2e"),
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": secretsToken, "SLUICE_LOG_LEVEL": "debug", "SLUICE_LOG_FORMAT": format,
			"SLUICE_TRANSCRIPTS_DIR": trDir, "SLUICE_SPOOL_DIR": spoolDir}})
	base := s.resources(t)
	rec := newRecorder(t)
	api := s.URL + "/v1"
	bearer := func(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }
	with := func(h map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	expect := func(what string, got, want int, body string) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: status %d, want %d: %s", what, got, want, body)
		}
	}
	demo := bearer(demoKey)
	n := nonce()
	chat := `{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hello ` + n + `"}]}`
	chatStream := `{"model":"gpt-4o-mini","temperature":0,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream ` + n + `"}]}`
	// Not deterministic, so never a cache hit: these reach the upstream.
	plain := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"plain ` + n + `"}]}`
	plainStream := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"plain ` + n + `"}]}`

	// Successes, cache misses and hits, streams, every JSON endpoint.
	for i, want := range []string{"miss", "hit"} {
		st, h, b := rec.do("POST", api+"/chat/completions", demo, chat)
		expect("chat", st, 200, b)
		if h.Get("X-Sluice-Cache") != want {
			t.Fatalf("chat %d: x-sluice-cache %q, want %q", i, h.Get("X-Sluice-Cache"), want)
		}
		st, h, b = rec.do("POST", api+"/chat/completions", demo, chatStream)
		expect("chat stream", st, 200, b)
		if h.Get("X-Sluice-Cache") != want || !strings.Contains(b, "data: [DONE]") {
			t.Fatalf("stream %d: x-sluice-cache %q: %s", i, h.Get("X-Sluice-Cache"), b)
		}
	}
	for _, c := range []struct{ path, body string }{
		{"/embeddings", `{"model":"text-embedding-3-small","input":"embed ` + n + `"}`},
		{"/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"complete ` + n + `","max_tokens":4}`},
		{"/responses", `{"model":"gpt-4o-mini","input":"respond ` + n + `","stream":true}`},
	} {
		st, _, b := rec.do("POST", api+c.path, demo, c.body)
		expect(c.path, st, 200, b)
	}
	st, _, b := rec.do("GET", api+"/models", demo, "")
	expect("models", st, 200, b)
	st, _, b = rec.do("GET", api+"/models/gpt-4o-mini", demo, "")
	expect("model", st, 200, b)
	st, _, b = rec.do("POST", api+"/chat/completions", with(bearer(appKey), "X-Sluice-User", "eve"), chat)
	expect("trusted app key", st, 200, b)
	// A stream the upstream cuts after two events.
	rec.do("POST", api+"/chat/completions", with(demo, "X-Fake-Cut-After", "2"),
		`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"cut `+n+`"}]}`)

	// Keys Sluice refuses.
	for _, h := range []map[string]string{
		bearer(wrongKey), {}, {"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+wrongKey))},
		{"Api-Key": wrongKey}, bearer(demoKey + "x"), bearer(demoKey[:len(demoKey)-1]),
	} {
		st, _, b = rec.do("POST", api+"/chat/completions", h, chat)
		expect("a wrong key", st, 401, b)
	}
	// Requests fasthttp itself refuses, each carrying a key: headers over
	// the limit, a malformed header line, a bad Content-Length, a bad
	// request line. Their parse errors must not quote the key anywhere.
	host := strings.TrimPrefix(s.URL, "http://")
	for _, req := range []string{
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\nnot a header line\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\nContent-Length: -5\r\n\r\n",
		"POST /v1/chat/completions?k=" + demoKey + " HTTP/9\r\nHost: x\r\nAuthorization: Bearer " + demoKey + "\r\n\r\n",
		"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + wrongKey + "\r\nContent-Length: 10\r\n\r\n{\"model\":",
	} {
		if out := rec.raw(host, req); !strings.HasPrefix(out, "HTTP/1.1 4") && out != "" {
			t.Fatalf("a malformed request was answered %q", out[:min(len(out), 40)])
		}
	}
	// Sluice's own errors.
	st, _, b = rec.do("POST", api+"/chat/completions", demo, `{"model":`)
	expect("malformed JSON", st, 400, b)
	st, _, b = rec.do("GET", s.URL+"/nope", demo, "")
	expect("path outside /v1", st, 404, b)
	st, _, b = rec.do("GET", api+"/chat/completions", demo, "")
	expect("wrong method", st, 405, b)
	st, _, b = rec.do("POST", api+"/chat/completions", bearer(tightKey), plain)
	expect("tight, first", st, 200, b)
	st, _, b = rec.do("POST", api+"/chat/completions", bearer(tightKey), plain)
	expect("tight, over its rpm", st, 429, b)
	st, _, b = rec.do("POST", api+"/chat/completions", with(demo, "X-Fake-Latency", "1500ms"), plain)
	expect("upstream timeout", st, 504, b)

	// Upstream errors, passed through.
	for _, code := range []int{400, 429, 500, 503} {
		st, _, b = rec.do("POST", api+"/chat/completions", with(demo, "X-Fake-Status", fmt.Sprint(code), "X-Fake-Retry-After-Ms", "10"), plain)
		expect("upstream error", st, code, b)
	}
	// The upstream echoes the key it got, in full: the client gets it
	// scrubbed, on a buffered answer, a stream request and a passthrough
	// path with a gzip-compressed error.
	for _, c := range []struct{ method, path, body, mode string }{
		{"POST", "/chat/completions", plain, "1"},
		{"POST", "/chat/completions", plainStream, "1"},
		{"POST", "/embeddings", `{"model":"text-embedding-3-small","input":"x"}`, "1"},
		{"GET", "/files", "", "gzip"},
		{"POST", "/moderations", `{"input":"x"}`, "gzip"},
	} {
		h := with(demo, echoKeyHeader, c.mode)
		if c.mode == "gzip" {
			h["Accept-Encoding"] = "gzip"
		}
		st, hdr, b := rec.do(c.method, api+c.path, h, c.body)
		expect("echoed key "+c.path, st, 401, b)
		if !strings.Contains(b, "Incorrect API key provided: [REDACTED:upstream_key].") ||
			hdr.Get("X-Echo-Authorization") != "Bearer [REDACTED:upstream_key]" {
			t.Fatalf("%s %s: the echo was not scrubbed as expected (%v): %s", c.method, c.path, hdr, b)
		}
	}

	// The admin API: refused without the token, or with a wrong or partial
	// one; answered with it.
	adminCalls := []struct{ method, path, body string }{
		{"GET", "/admin/policy?user=demo", ""},
		{"GET", "/admin/policy?key=app&user=eve", ""},
		{"GET", "/admin/usage?user=demo", ""},
		{"GET", "/admin/queues", ""},
		{"GET", "/admin/reload", ""},
		{"GET", "/admin/transcripts?user=demo", ""},
		{"POST", "/admin/cache/purge", `{"namespace":"team:apps"}`},
	}
	for _, c := range adminCalls {
		for _, h := range []map[string]string{{}, bearer("wrong-" + secretsToken), bearer(secretsToken[:12]),
			bearer(secretsToken[1:]), {"Authorization": secretsToken}, bearer(demoKey)} {
			st, _, b := rec.do(c.method, s.AdminURL+c.path, h, c.body)
			expect("admin without the token "+c.path, st, 401, b)
		}
		st, _, b := rec.do(c.method, s.AdminURL+c.path, bearer(secretsToken), c.body)
		expect("admin "+c.path, st, 200, b)
	}

	// Reloads: a good one, one with keys pasted into the wrong places
	// (refused; the error must not quote them), the good file back, and an
	// unchanged one by SIGHUP (logged at debug).
	polPath := s.policiesPath(t)
	replaceFile(t, polPath, secretsPolicies("e2e reloaded"))
	st, _, b = rec.do("POST", s.AdminURL+"/admin/reload", bearer(secretsToken), "")
	expect("reload", st, 200, b)
	broken := strings.Replace(secretsPolicies("broken"), "rpm: {limit: 1, burst: 1}", "rpm: "+demoKey, 1)
	broken = strings.Replace(broken, "    tier: tight\n", "    tier: "+upstreamKey+"\n", 1)
	broken = strings.Replace(broken, "    key_env: SLUICE_DEMO_KEY\n", "    key_env: SLUICE_DEMO_KEY\n    key: "+wrongKey+"\n", 1)
	replaceFile(t, polPath, broken)
	st, _, b = rec.do("POST", s.AdminURL+"/admin/reload", bearer(secretsToken), "")
	expect("broken reload", st, 422, b)
	if !strings.Contains(b, "policies.yaml:") {
		t.Fatalf("the reload error names no file and line: %s", b)
	}
	st, _, b = rec.do("GET", s.AdminURL+"/admin/reload", bearer(secretsToken), "")
	expect("reload status", st, 200, b)
	replaceFile(t, polPath, secretsPolicies("e2e reloaded"))
	st, _, b = rec.do("POST", s.AdminURL+"/admin/reload", bearer(secretsToken), "")
	expect("reload back", st, 200, b)
	s.signal(t, syscall.SIGHUP)
	if s.waitLogLine(5*time.Second, "policy unchanged", field("level", "DEBUG")) == "" {
		t.Fatalf("no debug line for the unchanged reload: is the level debug?\n%s", s.Output())
	}
	st, _, b = rec.do("POST", api+"/chat/completions", demo, chat)
	expect("chat after the reloads", st, 200, b)

	// Every request is recorded; wait until the transcripts stop growing.
	var trText string
	var last, stable int
	if !waitFor(10*time.Second, func() bool {
		cur := len(jsonlRecords(t, trDir))
		if cur == last && cur > 0 {
			stable++
		} else {
			stable = 0
		}
		last = cur
		time.Sleep(100 * time.Millisecond)
		return stable >= 3
	}) {
		t.Fatalf("transcripts kept growing: %d", last)
	}
	if last < 24 {
		t.Fatalf("%d transcripts, want one per API request past the key check (24 or more)", last)
	}
	trText, files := treeText(t, trDir)
	if files == 0 || !strings.Contains(trText, "hello "+n) || !strings.Contains(trText, `"status":401`) {
		t.Fatalf("the transcripts lack the scenario's content (%d files)", files)
	}
	spoolText, _ := treeText(t, spoolDir)
	_, _, metrics := rec.do("GET", s.AdminURL+"/metrics", nil, "")
	for _, p := range []string{"/healthz", "/readyz"} {
		rec.do("GET", s.AdminURL+p, nil, "")
	}
	if !strings.Contains(metrics, "sluice_requests_total") {
		t.Fatal("/metrics without sluice_requests_total")
	}
	out := s.Output()
	if s.waitLogLine(0, field("msg", "request"), field("key_id", "tight")) == "" {
		t.Fatalf("no access log lines in the output:\n%s", out)
	}

	if !strings.Contains(out, "not logged: may hold credentials") {
		t.Fatalf("no fasthttp debug line about the malformed requests: was their path exercised?\n%s", out)
	}
	all := []string{demoKey, appKey, tightKey, wrongKey, secretsToken, upstreamKey}
	noSecret(t, "sluice's output", out, all...)
	noSecret(t, "the transcript files", trText, all...)
	noSecret(t, "the spool", spoolText, all...)
	noSecret(t, "/metrics", metrics, all...)
	noSecret(t, "an answer (API or admin)", rec.String(), all...)

	// The provider saw the upstream key on every call, and no other secret.
	view, auths := fake.view()
	if len(auths) < 15 {
		t.Fatalf("the fake saw %d requests, want the scenario's (15 or more)", len(auths))
	}
	for i, a := range auths {
		if a != "Bearer "+upstreamKey {
			t.Fatalf("upstream request %d carried Authorization %q", i, a)
		}
	}
	noSecret(t, "what reached the upstream", view, demoKey, appKey, tightKey, wrongKey, secretsToken)

	s.checkSettled(t, base)
	// And what shutting down writes.
	s.signal(t, syscall.SIGTERM)
	if err := s.waitExit(t, 20*time.Second); err != nil {
		t.Fatalf("sluice exited with %v", err)
	}
	noSecret(t, "sluice's output at shutdown", s.Output(), all...)
	trText, _ = treeText(t, trDir)
	noSecret(t, "the transcript files after shutdown", trText, all...)
}

// TestFaultSecretsPolicyWarnings: a world-writable policies.yaml and a
// key_env that holds a key rather than a variable name give WARN lines that
// name the file and the key id (never the key) and set
// sluice_policy_insecure, at start and at each reload; fixing the file
// clears the gauge. The pasted key authenticates nothing.
func TestFaultSecretsPolicyWarnings(t *testing.T) {
	fake := startFake(t, fakeai.Config{})
	dir := t.TempDir()
	cfgPath, polPath := filepath.Join(dir, "sluice.yaml"), filepath.Join(dir, "policies.yaml")
	writeFile(t, cfgPath, strings.Replace(makeConfig(configOptions{}), "  shutdown_timeout: 10s\n",
		"  shutdown_timeout: 10s\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1))
	pasted := strings.Replace(trustedPolicies(), "    key_env: SLUICE_DEMO_KEY\n", "    key_env: "+demoKey+"\n", 1)
	writeFile(t, polPath, pasted)
	if err := os.Chmod(polPath, 0o666); err != nil {
		t.Fatal(err)
	}
	s, err := launchWith(t, cfgPath, polPath, sluiceOptions{BaseURL: fake.URL, Env: map[string]string{"SLUICE_ADMIN_TOKEN": secretsToken}})
	if err != nil {
		t.Fatal(err)
	}
	base := s.resources(t)
	gauge := func(reason string) float64 {
		v, ok := s.metric(t, "sluice_policy_insecure", `reason="`+reason+`"`)
		if !ok {
			t.Fatalf("no sluice_policy_insecure{reason=%q}", reason)
		}
		return v
	}
	if l := s.waitLogLine(5*time.Second, "level=WARN", "policy file is writable by every user", "file="+polPath, "mode=-rw-rw-rw-"); l == "" {
		t.Fatalf("no world-writable warning:\n%s", s.Output())
	}
	if l := s.waitLogLine(5*time.Second, "level=WARN", "plaintext key", "file="+polPath, "keys=demo"); l == "" {
		t.Fatalf("no plaintext-key warning naming key demo:\n%s", s.Output())
	}
	if gauge("world_writable") != 1 || gauge("plaintext_key") != 1 {
		t.Fatalf("sluice_policy_insecure: %v %v, want 1 1", gauge("world_writable"), gauge("plaintext_key"))
	}
	c := newRecorder(t)
	if st, _, b := c.do("POST", s.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + demoKey},
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`); st != 401 {
		t.Fatalf("the pasted key authenticated: %d %s", st, b)
	}

	// Fixed: chmod and the key back in the environment. A reload clears it.
	if err := os.Chmod(polPath, 0o600); err != nil {
		t.Fatal(err)
	}
	replaceFile(t, polPath, trustedPolicies())
	if st, b := s.admin(t, "POST", "/admin/reload", secretsToken, ""); st != 200 {
		t.Fatalf("reload: %d %s", st, b)
	}
	if gauge("world_writable") != 0 || gauge("plaintext_key") != 0 {
		t.Fatalf("after the fix sluice_policy_insecure: %v %v, want 0 0", gauge("world_writable"), gauge("plaintext_key"))
	}
	if st, _, b := c.do("POST", s.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + demoKey},
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`); st != 200 {
		t.Fatalf("the demo key from the environment: %d %s", st, b)
	}
	// Pasted again, by a reload: warned again.
	before := strings.Count(s.Output(), "plaintext key")
	replaceFile(t, polPath, pasted)
	if st, b := s.admin(t, "POST", "/admin/reload", secretsToken, ""); st != 200 {
		t.Fatalf("reload: %d %s", st, b)
	}
	// The log line comes through a pipe: wait for it.
	waitFor(5*time.Second, func() bool { return strings.Count(s.Output(), "plaintext key") >= before+1 })
	if strings.Count(s.Output(), "plaintext key") != before+1 || gauge("plaintext_key") != 1 {
		t.Fatalf("the reload did not warn again (gauge %v):\n%s", gauge("plaintext_key"), s.Output())
	}
	noSecret(t, "sluice's output", s.Output(), demoKey, secretsToken)

	// sluice validate says the same.
	if err := os.Chmod(polPath, 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sluiceBin, "validate", "-config", cfgPath, "-policies", polPath)
	cmd.Env = childEnv(map[string]string{"OPENAI_BASE_URL": fake.URL, "SLUICE_ADMIN_TOKEN": secretsToken,
		"SLUICE_ADDR": "127.0.0.1:1", "SLUICE_ADMIN_ADDR": "127.0.0.1:2"})
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warning: "+polPath+": the file is writable by every user") ||
		!strings.Contains(string(out), "key_env of key(s) demo holds what looks like a key") {
		t.Fatalf("sluice validate: %v\n%s", err, out)
	}
	noSecret(t, "sluice validate", string(out), demoKey)
	s.checkSettled(t, base)
}

// TestFaultTenantsIsolation: two teams' trusted app keys both name an end
// user "alice". Their cached answers, usage, rate-limit headers and
// transcripts stay apart: a team's identical request is a cache miss for
// the other, each alice has her own buckets (admin usage and the
// x-ratelimit headers), and /admin/transcripts with team= or key= returns
// only that tenant's records. Admin calls need the token.
func TestFaultTenantsIsolation(t *testing.T) {
	fake := startFake(t, fakeai.Config{})
	trDir := t.TempDir()
	pol := `tiers:
  apps:
    rpm: {limit: 2, burst: 10}
keys:
  - id: acme-app
    sha256: ` + sha256Hex(acmeAppKey) + `
    trusted: true
    team: acme
    tier: apps
  - id: globex-app
    sha256: ` + sha256Hex(globexAppKey) + `
    trusted: true
    team: globex
    tier: apps
`
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: secretsConfig("30s", trDir, t.TempDir()), Policies: pol,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": secretsToken}})
	base := s.resources(t)
	rec := newRecorder(t)
	n := nonce()
	ask := func(key, prompt string) (http.Header, string) {
		t.Helper()
		st, h, b := rec.do("POST", s.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key, "X-Sluice-User": "alice"},
			`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"`+prompt+`"}]}`)
		if st != 200 {
			t.Fatalf("chat: %d %s", st, b)
		}
		return h, b
	}
	// acme's alice asks three times (miss, hit, hit), globex's alice the same
	// question once: a miss, answered by the provider.
	secret := "acme plan " + n
	for i, want := range []string{"miss", "hit", "hit"} {
		if h, _ := ask(acmeAppKey, secret); h.Get("X-Sluice-Cache") != want {
			t.Fatalf("acme request %d: x-sluice-cache %q, want %q", i, h.Get("X-Sluice-Cache"), want)
		}
	}
	calls := fake.Stats().ByPath["/v1/chat/completions"]
	h, _ := ask(globexAppKey, secret)
	if h.Get("X-Sluice-Cache") != "miss" || fake.Stats().ByPath["/v1/chat/completions"] != calls+1 {
		t.Fatalf("globex got acme's answer: x-sluice-cache %q", h.Get("X-Sluice-Cache"))
	}
	// A key cannot name the other team's namespace.
	for _, ns := range []string{"globex", "team:globex", "shared:globex"} {
		st, _, b := rec.do("POST", s.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + acmeAppKey,
			"X-Sluice-User": "carol", "X-Sluice-Cache-Namespace": ns},
			`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"`+secret+`"}]}`)
		if st != 403 || !strings.Contains(b, "cache_namespace_forbidden") {
			t.Fatalf("acme naming namespace %q: %d %s", ns, st, b)
		}
	}
	// Identical requests in flight at once from the two teams are not
	// coalesced: each team's is answered by the provider.
	calls = fake.Stats().ByPath["/v1/chat/completions"]
	var wg sync.WaitGroup
	heads := make([]string, 2)
	for i, key := range []string{acmeAppKey, globexAppKey} {
		wg.Go(func() {
			_, h, _ := rec.do("POST", s.URL+"/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key,
				"X-Sluice-User": "bob", "X-Fake-Latency": "300ms"},
				`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"together `+n+`"}]}`)
			heads[i] = h.Get("X-Sluice-Cache")
		})
	}
	wg.Wait()
	if heads[0] != "miss" || heads[1] != "miss" || fake.Stats().ByPath["/v1/chat/completions"] != calls+2 {
		t.Fatalf("concurrent identical requests of two teams: x-sluice-cache %q, upstream calls %d; want two misses, two calls",
			heads, fake.Stats().ByPath["/v1/chat/completions"]-calls)
	}
	// Each alice has her own budget (10, refilled by one every 30 s):
	// globex's first request leaves 9.
	if got := h.Get("X-Ratelimit-Remaining-Requests"); got != "9" {
		t.Fatalf("globex alice: x-ratelimit-remaining-requests %q, want 9 (acme's requests counted?)", got)
	}
	usage := func(key string) float64 {
		t.Helper()
		st, b := s.admin(t, "GET", "/admin/usage?key="+key+"&user=alice", secretsToken, "")
		if st != 200 {
			t.Fatalf("usage of %s/alice: %d %s", key, st, b)
		}
		var u struct {
			Buckets []struct {
				Limit string  `json:"limit"`
				Used  float64 `json:"used"`
			} `json:"buckets"`
		}
		if err := json.Unmarshal(b, &u); err != nil {
			t.Fatalf("usage: %v: %s", err, b)
		}
		for _, bk := range u.Buckets {
			if bk.Limit == "rpm" {
				return bk.Used
			}
		}
		t.Fatalf("usage of %s/alice has no rpm bucket: %s", key, b)
		return 0
	}
	if a, g := usage("acme-app"), usage("globex-app"); a != 3 || g != 1 {
		t.Fatalf("rpm used: acme alice %v, globex alice %v; want 3 and 1", a, g)
	}
	if st, _ := s.admin(t, "GET", "/admin/usage?key=acme-app&user=alice", "", ""); st != 401 {
		t.Fatalf("usage without the token: %d", st)
	}

	// Transcripts: 4 records of "alice"; team= and key= split them.
	if !waitFor(10*time.Second, func() bool { return len(jsonlRecords(t, trDir)) >= 4 }) {
		t.Fatalf("%d transcripts, want 4", len(jsonlRecords(t, trDir)))
	}
	type tr struct {
		Transcripts []struct {
			KeyID    string `json:"key_id"`
			Team     string `json:"team"`
			User     string `json:"user"`
			Request  string `json:"request"`
			Response string `json:"response"`
		} `json:"transcripts"`
	}
	read := func(query string) tr {
		t.Helper()
		st, b := s.admin(t, "GET", "/admin/transcripts?"+query, secretsToken, "")
		if st != 200 {
			t.Fatalf("/admin/transcripts?%s: %d %s", query, st, b)
		}
		var out tr
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("transcripts: %v: %s", err, b)
		}
		return out
	}
	if all := read("user=alice"); len(all.Transcripts) != 4 {
		t.Fatalf("user=alice: %d records, want 4 (both teams)", len(all.Transcripts))
	}
	for _, c := range []struct {
		query, team string
		want        int
	}{
		{"user=alice&team=acme", "acme", 3},
		{"user=alice&key=acme-app", "acme", 3},
		{"user=alice&team=globex", "globex", 1},
		{"user=alice&key=globex-app&team=globex", "globex", 1},
		{"user=alice&team=globex&key=acme-app", "", 0},
		{"user=alice&team=acme&limit=2", "acme", 2},
	} {
		got := read(c.query)
		if len(got.Transcripts) != c.want {
			t.Fatalf("%s: %d records, want %d", c.query, len(got.Transcripts), c.want)
		}
		for _, r := range got.Transcripts {
			if r.Team != c.team || r.User != "alice" {
				t.Fatalf("%s: a record of team %q user %q", c.query, r.Team, r.User)
			}
		}
	}
	if st, _ := s.admin(t, "GET", "/admin/transcripts?user=alice&team=acme", "wrong-"+secretsToken, ""); st != 401 {
		t.Fatalf("transcripts with a wrong token: %d", st)
	}
	noSecret(t, "an answer", rec.String(), acmeAppKey, globexAppKey, secretsToken, upstreamKey)
	s.checkSettled(t, base)
}
