package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sluice/fakeai"
)

// chromiumFlags keep headless Chromium to the page asked for: no GPU, no
// sandbox (containers), no first-run or background network traffic (the
// test sends traffic to loopback only).
var chromiumFlags = []string{"--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
	"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
	"--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars"}

// envRequireChromium, when set (scripts/services.sh's ensure_chromium
// sets it), makes a missing chromium a failure instead of a skip.
const envRequireChromium = "SLUICE_TEST_CHROMIUM"

// browser runs headless Chromium with a profile of its own.
type browser struct {
	bin, profile string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv(envRequireChromium) != "" {
			t.Fatalf("%s is set but chromium is not installed: %v", envRequireChromium, err)
		}
		t.Skip("chromium is not installed (scripts/services.sh: ensure_chromium)")
	}
	return &browser{bin: bin, profile: t.TempDir()}
}

func (b *browser) run(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.bin, append(append(chromiumFlags, "--user-data-dir="+b.profile), args...)...)
	cmd.Env = append(os.Environ(), "HOME="+b.profile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// dom loads url and returns the DOM after the page loaded.
func (b *browser) dom(t *testing.T, url string) string {
	t.Helper()
	return string(b.run(t, "--dump-dom", url))
}

// screenshot saves a PNG of url to file, in a window of size ("1280,900"
// a laptop, "390,844" a phone).
func (b *browser) screenshot(t *testing.T, url, file, size string) {
	t.Helper()
	b.run(t, "--screenshot="+file, "--window-size="+size, url)
	if st, err := os.Stat(file); err != nil || st.Size() < 1000 {
		t.Errorf("screenshot %s: %v", file, err)
	}
}

// artifactDir is where a test's files to keep go: $SLUICE_TEST_ARTIFACTS
// (kept after the run) or the test's temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("SLUICE_TEST_ARTIFACTS"); d != "" {
		dir := filepath.Join(d, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// authProxy is a loopback reverse proxy to the admin listener that adds
// the admin token as a Bearer header: Chromium cannot send a header by
// flag, and the token must never be in a URL. It notes the paths asked.
type authProxy struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

func newAuthProxy(t *testing.T, adminURL, token string) *authProxy {
	t.Helper()
	target, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &authProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.paths = append(p.paths, r.URL.Path)
		p.mu.Unlock()
		r.Header.Set("Authorization", "Bearer "+token)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *authProxy) asked(path string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, q := range p.paths {
		if q == path {
			return true
		}
	}
	return false
}

// consolePolicies has the demo user in tier "probe" (burst 10, one request
// a minute: its bucket barely refills during the test) and the app key's
// end users in tier "load".
func consolePolicies() string {
	return reloadPolicies(600000, 10, `  gold-standard:
    rpm: 100
    shadow: {rpm: 50}`)
}

// TestConsoleInBrowser loads each console page in headless Chromium against
// a sluice under load: the policy page shows the tier names, the demo
// user's page the requests left after N requests; without the token the
// browser gets the login form and no data. Screenshots of each page are
// kept as artifacts.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Chromium; skipped with -short")
	}
	br := newBrowser(t)
	f := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Policies: consolePolicies(), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}})

	// Load in the background (trusted app key, 50 requests a second, four
	// clients) for as long as the browser loads pages.
	ctx, stop := context.WithCancel(context.Background())
	loaded := make(chan *loadResult, 1)
	go func() {
		loaded <- runLoad(ctx, loadOptions{url: s.URL, n: 3000, conc: 4, rate: 50, tag: "console " + nonce()})
	}()
	defer func() {
		stop()
		res := <-loaded
		// The requests in flight when the load stops are cut: at most one
		// per client.
		if res.failed.Load() > 4 {
			t.Errorf("load: %d requests failed", res.failed.Load())
		}
		t.Logf("load during the browser's visits: %d answered 200", res.statusCount(200))
	}()

	const n = 4
	if ok, lim := probe(t, s, n); ok != n || lim != 0 {
		t.Fatalf("probe: %d ok, %d limited; want %d ok", ok, lim, n)
	}

	dir := artifactDir(t)
	// Without the token: the login form, no data.
	dom := br.dom(t, s.AdminURL+"/console/policy")
	if !strings.Contains(dom, `name="token"`) || strings.Contains(dom, "gold-standard") || strings.Contains(dom, `id="keys"`) {
		t.Errorf("without the token the browser got more than the login form:\n%s", dom)
	}
	br.screenshot(t, s.AdminURL+"/console/login", filepath.Join(dir, "login.png"), "1280,900")

	p := newAuthProxy(t, s.AdminURL, adminToken)
	dom = br.dom(t, p.URL+"/console/policy")
	for _, tier := range []string{"load", "probe", "gold-standard"} {
		if !strings.Contains(dom, `<td class="tier">`+tier+`</td>`) {
			t.Errorf("policy page: no tier %q in the DOM", tier)
		}
	}
	for _, w := range []string{">demo</a>", ">app</a>", "2 of 2 keys", "rpm 50"} {
		if !strings.Contains(dom, w) {
			t.Errorf("policy page lacks %q", w)
		}
	}
	if strings.Contains(dom, sha256Hex(appKey)) || strings.Contains(dom, demoKey) {
		t.Error("policy page shows a key's secret or hash")
	}

	dom = br.dom(t, p.URL+"/console/users/demo")
	m := regexp.MustCompile(`id="remaining-user-rpm">(\d+)<`).FindStringSubmatch(dom)
	// One request a minute refills: at most one came back during the test.
	if m == nil || (m[1] != "6" && m[1] != "7") {
		t.Errorf("user page: remaining rpm %v, want 6 (10 - %d)\n%s", m, n, dom)
	}

	// The demo user's recent requests, from the JSONL transcripts (written
	// in batches: wait for them).
	recent := regexp.MustCompile(`<td><code>[^<]+</code></td></tr>`)
	if !waitFor(10*time.Second, func() bool {
		_, b := s.admin(t, "GET", "/console/requests?user=demo", adminToken, "")
		return len(recent.FindAllString(string(b), -1)) >= n
	}) {
		t.Errorf("the recent requests page never listed the demo user's %d requests", n)
	}
	dom = br.dom(t, p.URL+"/console/requests?user=demo")
	if got := len(recent.FindAllString(dom, -1)); got != n || !strings.Contains(dom, "gpt-4o-mini") {
		t.Errorf("recent requests in the browser: %d rows, want %d\n%s", got, n, dom)
	}

	// An end user the app key names under load, reached through the key.
	dom = br.dom(t, p.URL+"/console/users/load-3?key=app")
	if !strings.Contains(dom, `<dd id="tier">load</dd>`) || !strings.Contains(dom, "end user of app key app") {
		t.Errorf("end user page: not the app key's end user in tier load\n%s", dom)
	}

	dom = br.dom(t, p.URL+"/console/")
	if !regexp.MustCompile(`id="requests">[1-9]\d*<`).MatchString(dom) || !strings.Contains(dom, "openai") {
		t.Errorf("overview: no request count or upstream\n%s", dom)
	}
	dom = br.dom(t, p.URL+"/console/providers")
	if !strings.Contains(dom, `<td class="breaker-closed">closed</td>`) {
		t.Errorf("providers page: the breaker is not shown closed\n%s", dom)
	}

	// The demo user's team, reached from the user's page.
	if !strings.Contains(br.dom(t, p.URL+"/console/users/demo"), `href="/console/teams/demo"`) {
		t.Error("user page: no link to the team")
	}
	dom = br.dom(t, p.URL+"/console/teams/demo")
	if !strings.Contains(dom, `<dd id="team">demo</dd>`) || !strings.Contains(dom, `>demo</a></td><td><a href="/console/users/demo">demo</a></td><td>probe</td>`) {
		t.Errorf("team page: the demo team with its one key\n%s", dom)
	}

	// A reload through the admin API shows in the policy page's history,
	// with its change, above the load at start.
	writeFile(t, s.policiesPath(t), strings.Replace(consolePolicies(), "rpm: 100", "rpm: 90", 1))
	if code, b := s.admin(t, "POST", "/admin/reload", adminToken, ""); code != 200 {
		t.Fatalf("reload: %d %s", code, b)
	}
	dom = br.dom(t, p.URL+"/console/policy")
	if !regexp.MustCompile(`(?s)<td>admin</td><td>success</td>.*~ tier gold-standard rpm: 100 -&gt; 90.*<td>start</td><td>loaded</td>`).MatchString(dom) {
		t.Errorf("policy page: the reload history lacks the admin reload and its change above the start\n%s", dom)
	}

	for name, path := range map[string]string{"overview": "/console/", "policy": "/console/policy",
		"user": "/console/users/demo", "team": "/console/teams/demo", "providers": "/console/providers", "requests": "/console/requests?user=demo"} {
		br.screenshot(t, p.URL+path, filepath.Join(dir, name+".png"), "1280,900")
	}
	br.screenshot(t, p.URL+"/console/users/demo", filepath.Join(dir, "user-phone.png"), "390,844")
	if !p.asked("/console/style.css") {
		t.Error("the browser never loaded the stylesheet")
	}
	t.Logf("screenshots in %s", dir)

	// The login form against the binary: a wrong token is 401 and counted
	// on /metrics; the right one opens the pages with the cookie alone.
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := c.PostForm(s.AdminURL+"/console/login", url.Values{"token": {"not-the-token"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", resp.StatusCode)
	}
	// A script's wrong Bearer token: 401, counted too.
	if code, _ := s.admin(t, "GET", "/console/policy", "not-the-token", ""); code != http.StatusUnauthorized {
		t.Errorf("wrong Bearer token: %d, want 401", code)
	}
	if v, _ := s.metric(t, "sluice_console_login_failures_total"); v != 2 {
		t.Errorf("sluice_console_login_failures_total = %v, want 2", v)
	}
	resp, err = c.PostForm(s.AdminURL+"/console/login", url.Values{"token": {adminToken}, "next": {"/console/users/demo"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Path != "/console/users/demo" || !strings.Contains(string(b), `id="tier">probe<`) {
		t.Errorf("after signing in: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	// The token reached no log line.
	if strings.Contains(s.Output(), adminToken) {
		t.Error("the admin token is in sluice's output")
	}
}

// TestConsoleShowsBreakerOpen: after an upstream keeps failing, the
// providers page in the browser shows its breaker open and the overview
// the 5xx answers.
func TestConsoleShowsBreakerOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Chromium; skipped with -short")
	}
	br := newBrowser(t)
	f := startFake(t, fakeai.Config{})
	cfg := makeConfig(configOptions{})
	cfg = strings.Replace(cfg, "  admin_listen: ${SLUICE_ADMIN_ADDR}\n",
		"  admin_listen: ${SLUICE_ADMIN_ADDR}\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1)
	cfg = strings.Replace(cfg, "    timeouts:\n",
		"    breaker: {min_calls: 4, failure_ratio: 0.5, window: 60s, cooldown: 120s}\n    timeouts:\n", 1)
	s := startSluice(t, sluiceOptions{Config: cfg, Policies: consolePolicies(), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}})
	p := newAuthProxy(t, s.AdminURL, adminToken)
	if dom := br.dom(t, p.URL+"/console/providers"); !strings.Contains(dom, `<td class="breaker-closed">closed</td>`) {
		t.Fatalf("before the failures the breaker is not closed:\n%s", dom)
	}
	for i := 0; i < 8; i++ {
		req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"fail `+nonce()+`"}]}`))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(fakeai.HeaderStatus, "500")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	dom := br.dom(t, p.URL+"/console/providers")
	if !strings.Contains(dom, `<td class="breaker-open">open</td>`) {
		t.Errorf("after 8 failures the providers page does not show the breaker open:\n%s", dom)
	}
	if dom = br.dom(t, p.URL+"/console/"); !strings.Contains(dom, "<td>500</td>") && !strings.Contains(dom, "<td>503</td>") {
		t.Errorf("the overview does not show the failed answers:\n%s", dom)
	}
	dir := artifactDir(t)
	br.screenshot(t, p.URL+"/console/providers", filepath.Join(dir, "providers-breaker-open.png"), "1280,900")
}
