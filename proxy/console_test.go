package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/policy"
	"sluice/policy/limit"
	"sluice/sink"
)

const consoleToken = "console-admin-token"

const consolePolicy = `tiers:
  gold:
    rpm: 600
    shadow: {rpm: 300}
  probe:
    rpm: {limit: 1, burst: 10}
prices:
  "*": {input: 1, output: 2}
teams:
  red: {rpm: 100, budget: {daily_usd: 20}}
users:
  bob: {tier: probe, tpm: 5000}
keys:
  - id: k-alice
    sha256: %s
    user: alice
    team: red
    tier: probe
    limits: {budget: {daily_usd: 5}}
  - id: k-bob
    sha256: %s
    user: bob
    tier: gold
`

// consoleServer runs a Server with limits on loopback in front of a fake
// upstream and returns it with its admin handler and registry.
func consoleServer(t *testing.T, polYAML string) (*Server, http.Handler, *prometheus.Registry, string) {
	t.Helper()
	const chat = `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, chat)
	}))
	t.Cleanup(up.Close)
	pol, err := policy.Parse("p.yaml", []byte(polYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	lim := policy.NewLimiter(policy.LimiterOptions{Store: limit.NewMemory(limit.MemoryOptions{}), Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	s := newTestServer(t, "upstreams:\n  - name: up\n    base_url: "+up.URL+"/v1\n    api_key: sk-upstream-0123456789abcdef\n    budget: {rpm: 6000, concurrent: 20}\n",
		Options{Policy: pol, Registry: reg, Limiter: lim})
	s.SetAdmin(AdminOptions{Token: consoleToken, Status: func() policy.Status {
		return policy.Status{SHA256: "0123456789abcdef0123", LastSuccess: time.Now(), History: []policy.ReloadEvent{
			{At: time.Now(), Trigger: "sighup", Result: policy.ReloadSuccess, SHA256: "0123456789abcdef0123", Changes: []string{"~ tier gold rpm: 600 -> 700"}},
			{At: time.Now().Add(-time.Hour), Trigger: "start", Result: "loaded", SHA256: "fedcba9876543210"}}}
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends with the listener
	t.Cleanup(func() { _ = ln.Close() })
	return s, AdminHandler(reg, s), reg, ln.Addr().String()
}

func consoleGet(t testing.TB, h http.Handler, path string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Authorization", "Bearer "+consoleToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestConsoleThroughAdminMux: the console on the real admin mux shows the
// running policy, a user's bucket after N requests, the last policy change
// and the providers; a wrong login token is 401 and counted.
func TestConsoleThroughAdminMux(t *testing.T) {
	pol := fmt.Sprintf(consolePolicy, policy.HashKey("sk-alice-secret"), policy.HashKey("sk-bob-secret"))
	s, h, reg, addr := consoleServer(t, pol)
	const n = 3
	for i := 0; i < n; i++ {
		code := consoleChat(t, addr, "sk-alice-secret", "hi "+fmt.Sprint(i))
		if code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}

	code, body := consoleGet(t, h, "/console/users/alice")
	if code != 200 {
		t.Fatalf("user page: %d\n%s", code, body)
	}
	if want := fmt.Sprintf(`id="remaining-user-rpm">%d<`, 10-n); !strings.Contains(body, want) {
		t.Errorf("user page: want %s in\n%s", want, body)
	}
	for _, w := range []string{"probe", "red", "today", "$5.0000", "k-alice"} {
		if !strings.Contains(body, w) {
			t.Errorf("user page lacks %q", w)
		}
	}
	if strings.Contains(body, "sk-alice-secret") || strings.Contains(body, policy.HashKey("sk-alice-secret")) {
		t.Error("the user page shows the key's secret or hash")
	}

	code, body = consoleGet(t, h, "/console/policy")
	if code != 200 {
		t.Fatalf("policy page: %d", code)
	}
	for _, w := range []string{">gold<", ">probe<", "k-alice", "k-bob", "rpm 300", "2 of 2 keys", "0123456789ab",
		"<td>sighup</td>", "~ tier gold rpm: 600 -&gt; 700", "<code>fedcba987654</code>",
		`<td><a href="/console/users/bob">bob</a></td><td>probe</td><td>tpm 5000</td>`} {
		if !strings.Contains(body, w) {
			t.Errorf("policy page lacks %q", w)
		}
	}
	if strings.Contains(body, policy.HashKey("sk-bob-secret")) {
		t.Error("the policy page shows a key's hash")
	}

	code, body = consoleGet(t, h, "/console/providers")
	if code != 200 || !strings.Contains(body, ">up<") || !strings.Contains(body, "closed") || !strings.Contains(body, "rpm 6000, concurrent 20") {
		t.Errorf("providers page: %d\n%s", code, body)
	}
	code, body = consoleGet(t, h, "/console/")
	if code != 200 || !strings.Contains(body, `id="requests">3<`) {
		t.Errorf("overview: %d, want 3 requests\n%s", code, body)
	}

	// Spend today: three answers of 10 prompt and 5 completion tokens at
	// $1 and $2 per 1M tokens.
	_, body = consoleGet(t, h, "/console/users/alice")
	if !strings.Contains(body, "$0.000060") {
		t.Errorf("user page: want $0.000060 spent today\n%s", body)
	}
	// The team's page: its keys, its shared rpm bucket after three
	// requests and the same spend, against the team's budget.
	code, body = consoleGet(t, h, "/console/teams/red")
	if code != 200 {
		t.Fatalf("team page: %d\n%s", code, body)
	}
	m := regexp.MustCompile(`id="remaining-team-rpm">(\d+)<`).FindStringSubmatch(body)
	if m == nil || !strings.Contains(body, "k-alice") || strings.Contains(body, "k-bob") ||
		!strings.Contains(body, "$0.000060") || !strings.Contains(body, "$20.0000") || !strings.Contains(body, "rpm 100") {
		t.Errorf("team page: want k-alice alone, a team rpm bucket, $0.000060 of $20\n%s", body)
	} else if burst := regexp.MustCompile(`<td>rpm</td><td>team</td><td class="n">100</td><td class="n">(\d+)<`).FindStringSubmatch(body); burst == nil || fmt.Sprint(mustAtoi(t, burst[1])-n) != m[1] {
		t.Errorf("team rpm: %s remaining of burst %v after %d requests", m[1], burst, n)
	}
	if _, pbody := consoleGet(t, h, "/console/policy"); !strings.Contains(pbody, `<a href="/console/teams/red">red</a></td><td>rpm 100, budget daily $20`) {
		t.Errorf("policy page: the teams section lacks red\n%s", pbody)
	}
	if code, _ := consoleGet(t, h, "/console/teams/blue"); code != http.StatusNotFound {
		t.Errorf("a team without keys: %d, want 404", code)
	}
	// Past the burst: 429s, shown by cause on the overview.
	limited := 0
	for i := 0; i < 10; i++ {
		code := consoleChat(t, addr, "sk-alice-secret", "more "+fmt.Sprint(i))
		if code == 429 {
			limited++
		}
	}
	_, body = consoleGet(t, h, "/console/")
	if limited == 0 || !strings.Contains(body, "<td>429</td>") || !strings.Contains(body, fmt.Sprintf("<td>rpm (user)</td><td class=\"n\">%d</td>", limited)) {
		t.Errorf("overview after %d refusals: want the 429s and rpm (user) %d\n%s", limited, limited, body)
	}

	// A wrong token typed into the form: 401, counted.
	req := httptest.NewRequest("POST", "/console/login", strings.NewReader(url.Values{"token": {"nope"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("wrong login: %d, want 401", rec.Code)
	}
	if got := testutil.ToFloat64(s.console.failures); got != 1 {
		t.Errorf("sluice_console_login_failures_total = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "sluice_console_login_failures_total"); err != nil || n != 1 {
		t.Errorf("the counter is not on the registry: %d %v", n, err)
	}
	// No session: the login page, never data.
	req = httptest.NewRequest("GET", "/console/users/alice", nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusSeeOther || strings.Contains(rec.Body.String(), "probe") {
		t.Errorf("without a token: %d, want 303 to the login form", rec.Code)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestConsoleNotThereWithoutToken: with no admin token configured the
// console is 404, like /admin/.
func TestConsoleNotThereWithoutToken(t *testing.T) {
	for _, s := range []*Server{{}, newTestServer(t, "upstreams:\n  - name: up\n    base_url: http://127.0.0.1:1/v1\n", Options{})} {
		if s.admin == nil && s.cfg != nil {
			s.SetAdmin(AdminOptions{})
		}
		h := AdminHandler(prometheus.NewRegistry(), s)
		for _, p := range []string{"/console/", "/console/login", "/console/policy", "/console/style.css"} {
			req := httptest.NewRequest("GET", p, nil)
			req.Header.Set("Authorization", "Bearer ")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound {
				t.Errorf("%s without an admin token: %d, want 404", p, rec.Code)
			}
		}
	}
}

// bigPolicy is a policy of n users, each with a key of its own, over four
// tiers.
func bigPolicy(tb testing.TB, n int) *policy.Policy {
	tb.Helper()
	var b strings.Builder
	b.WriteString("tiers:\n  free: {rpm: 10}\n  pro: {rpm: 100, shadow: {rpm: 50}}\n  team: {rpm: 300}\n  vip: {rpm: 1000}\nkeys:\n")
	tiers := []string{"free", "pro", "team", "vip"}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - id: key-%05d\n    sha256: %s\n    user: user-%05d\n    team: team-%d\n    tier: %s\n",
			i, policy.HashKey(fmt.Sprintf("sk-%d", i)), i, i%50, tiers[i%len(tiers)])
	}
	pol, err := policy.Parse("big.yaml", []byte(b.String()), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return pol
}

// TestConsole10kUsers: with 10,000 users in the policy the policy page and
// a user page render within 200 ms each, the first view (which lists the
// keys) included; the policy page lists a bounded part of the keys.
func TestConsole10kUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a policy of 10,000 keys")
	}
	s, h := bigConsole(t)
	_ = s
	for _, p := range []string{"/console/policy", "/console/policy", "/console/policy?q=user-0999", "/console/users/user-05000", "/console/"} {
		start := time.Now()
		code, body := consoleGet(t, h, p)
		d := time.Since(start)
		t.Logf("%s: %d bytes in %v", p, len(body), d)
		if code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
		if d > 200*time.Millisecond && !raceEnabled {
			t.Errorf("%s took %v, want < 200 ms", p, d)
		}
		switch p {
		case "/console/policy":
			if !strings.Contains(body, "10000 of 10000 keys, the first 200 shown") || !strings.Contains(body, "key-00199") ||
				strings.Contains(body, "key-00200") {
				t.Errorf("policy page: the key list is not the first 200 of 10000")
			}
		case "/console/policy?q=user-0999":
			if !strings.Contains(body, "10 of 10000 keys") || !strings.Contains(body, "key-09995") || !strings.Contains(body, "team-45") {
				t.Errorf("filtered policy page: want the 10 keys of users user-0999x with their teams")
			}
		case "/console/users/user-05000":
			if !strings.Contains(body, `id="remaining-user-rpm">10<`) {
				t.Errorf("user page: want 10 remaining")
			}
		}
	}
}

func bigConsole(tb testing.TB) (*Server, http.Handler) {
	reg := prometheus.NewRegistry()
	lim := policy.NewLimiter(policy.LimiterOptions{Store: limit.NewMemory(limit.MemoryOptions{}), Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	s := newTestServer(tb, "upstreams:\n  - name: up\n    base_url: http://127.0.0.1:1/v1\n", Options{Policy: bigPolicy(tb, 10000), Registry: reg, Limiter: lim})
	s.SetAdmin(AdminOptions{Token: consoleToken})
	return s, AdminHandler(reg, s)
}

// BenchmarkConsole10kUsers renders pages with 10,000 users in the policy.
func BenchmarkConsole10kUsers(b *testing.B) {
	_, h := bigConsole(b)
	for _, p := range []string{"/console/policy", "/console/users/user-05000", "/console/"} {
		b.Run(strings.Trim(strings.ReplaceAll(p, "/", "_"), "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if code, _ := consoleGet(b, h, p); code != 200 {
					b.Fatal(code)
				}
			}
		})
	}
}

// fakeReader is a transcript store of fixed records.
type fakeReader struct{ recs []*sink.Record }

func (f *fakeReader) Recent(_ context.Context, user string, since time.Time, limit int) ([]*sink.Record, error) {
	var out []*sink.Record
	for _, r := range f.recs {
		if r.User == user && !r.Start.Before(since) && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

// TestConsoleRecentRequests: a user's recent requests are those of the
// user's own keys (not an app key's end user of the same name), or of the
// key asked for; without transcripts the page says so.
func TestConsoleRecentRequests(t *testing.T) {
	pol, err := policy.Parse("p.yaml", []byte(fmt.Sprintf(consolePolicy, policy.HashKey("a"), policy.HashKey("b"))+
		"  - id: app\n    sha256: "+policy.HashKey("c")+"\n    trusted: true\n    tier: gold\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, "upstreams:\n  - name: up\n    base_url: http://127.0.0.1:1/v1\n", Options{Policy: pol})
	s.SetAdmin(AdminOptions{Token: consoleToken})
	h := AdminHandler(prometheus.NewRegistry(), s)
	if code, _ := consoleGet(t, h, "/console/requests?user=alice"); code != http.StatusServiceUnavailable {
		t.Errorf("without transcripts: %d, want 503", code)
	}
	now := time.Now()
	s.SetTranscripts(TranscriptOptions{Reader: &fakeReader{recs: []*sink.Record{
		{RequestID: "req-own", User: "alice", KeyID: "k-alice", Start: now.Add(-time.Minute), Model: "gpt-4o-mini", Status: 200, PromptTokens: 11},
		{RequestID: "req-app", User: "alice", KeyID: "app", Start: now.Add(-2 * time.Minute), Status: 429, ErrorType: "rate_limit_exceeded"},
		{RequestID: "req-old", User: "alice", KeyID: "k-alice", Start: now.Add(-48 * time.Hour), Status: 200},
	}}})
	code, body := consoleGet(t, h, "/console/requests?user=alice")
	if code != 200 || !strings.Contains(body, "req-own") || strings.Contains(body, "req-app") || strings.Contains(body, "req-old") {
		t.Errorf("alice's own requests: %d, want req-own only\n%s", code, body)
	}
	code, body = consoleGet(t, h, "/console/requests?user=alice&key=app")
	if code != 200 || !strings.Contains(body, "req-app") || strings.Contains(body, "req-own") || !strings.Contains(body, "End user of app key app") {
		t.Errorf("the app key's end user alice: %d, want req-app only\n%s", code, body)
	}
	if code, _ := consoleGet(t, h, "/console/requests?user=nobody"); code != http.StatusNotFound {
		t.Errorf("unknown user: %d, want 404", code)
	}
}

// TestConsoleKeyPool: a 429 from one key of a pool is retried at once with
// another, and the providers page lists the pool's keys by id: the key
// the provider answered 429 rests (for the answer's retry-after) with its
// 429 counted, the other takes the calls.
func TestConsoleKeyPool(t *testing.T) {
	const chat = `{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer sk-pool-hot-0123456789" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, chat)
	}))
	t.Cleanup(up.Close)
	reg := prometheus.NewRegistry()
	s := newTestServer(t, "upstreams:\n  - name: pooled\n    base_url: "+up.URL+"/v1\n    max_attempts: 3\n    keys:\n"+
		"      - {id: hot, api_key: sk-pool-hot-0123456789}\n      - {id: cool, api_key: sk-pool-cool-0123456789, budget: {rpm: 600}}\n",
		Options{Registry: reg})
	s.SetAdmin(AdminOptions{Token: consoleToken})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends with the listener
	t.Cleanup(func() { _ = ln.Close() })
	h := AdminHandler(reg, s)
	statuses := map[int]int{}
	for i := 0; i < 6; i++ {
		code := consoleChat(t, ln.Addr().String(), "sk-client", "pool "+fmt.Sprint(i))
		statuses[code]++
	}
	// The hot key's one 429 is retried at once with the cool key (no max
	// wait needed); then the hot key rests and the cool one takes every
	// call.
	if statuses[200] != 6 {
		t.Fatalf("statuses %v, want six 200", statuses)
	}
	code, body := consoleGet(t, h, "/console/providers")
	if code != 200 {
		t.Fatalf("providers page: %d", code)
	}
	row := func(id string) string {
		m := regexp.MustCompile(`<tr><td>` + id + `</td>.*?</tr>`).FindString(strings.ReplaceAll(body, "\n", " "))
		return m
	}
	hot, cool := row("hot"), row("cool")
	if !strings.Contains(hot, "key-resting") || !strings.Contains(hot, `<td class="n">1</td><td class="n">1</td><td class="n">100.0%</td>`) {
		t.Errorf("the hot key is not shown resting with its one 429: %s", hot)
	}
	if !strings.Contains(cool, "key-ready") || !strings.Contains(cool, "rpm 600") || !strings.Contains(cool, `<td class="n">6</td><td class="n">0</td>`) {
		t.Errorf("the cool key is not shown taking the six calls: %s", cool)
	}
	if strings.Contains(body, "sk-pool-") {
		t.Error("the providers page shows a key's secret")
	}
}

// TestConsoleSessionSharedByReplicas: a session made on one replica opens
// the console of another with the same admin token (behind a load
// balancer without stickiness) and not of one with another token.
func TestConsoleSessionSharedByReplicas(t *testing.T) {
	replica := func(token string) http.Handler {
		s := newTestServer(t, "upstreams:\n  - name: up\n    base_url: http://127.0.0.1:1/v1\n", Options{})
		s.SetAdmin(AdminOptions{Token: token})
		return AdminHandler(prometheus.NewRegistry(), s)
	}
	a, b, other := replica(consoleToken), replica(consoleToken), replica("another-admin-token")
	req := httptest.NewRequest("POST", "/console/login", strings.NewReader(url.Values{"token": {consoleToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	cookies := rec.Result().Cookies()
	if rec.Code != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("login: %d with %d cookies", rec.Code, len(cookies))
	}
	for name, c := range map[string]struct {
		h    http.Handler
		want int
	}{"same token": {b, http.StatusOK}, "another token": {other, http.StatusSeeOther}} {
		req := httptest.NewRequest("GET", "/console/", nil)
		req.AddCookie(cookies[0])
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, req)
		if rec.Code != c.want {
			t.Errorf("%s: %d, want %d", name, rec.Code, c.want)
		}
	}
}

// consoleChat sends one chat request with the client key to the Server
// at addr and returns the answer's status.
func consoleChat(t *testing.T, addr, key, content string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`+content+`"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}
