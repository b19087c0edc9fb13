package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testToken = "console-test-token"

// fakeSource is a Source with fixed data.
type fakeSource struct {
	users map[string]UserView
}

func (f *fakeSource) Overview() Overview {
	return Overview{Version: "test", Requests: 1234, Statuses: []Count{{"200", 1200}, {"429", 34}},
		Rejections: []Count{{"rpm (user)", 30}, {"budget_daily (team)", 4}}, CacheHits: 3, CacheMisses: 1,
		Reload:    ReloadView{Known: true, SHA256: "abcdef0123456789", LastSuccess: time.Unix(1e9, 0)},
		Providers: f.Providers()}
}

func (f *fakeSource) User(_ context.Context, key, user string) (UserView, error) {
	switch key {
	case "down":
		return UserView{User: user}, ErrUnavailable
	case "boom":
		return UserView{}, errors.New("the source broke")
	}
	u, ok := f.users[user]
	if !ok {
		return UserView{}, ErrNotFound
	}
	return u, nil
}

func (f *fakeSource) Policy(filter string, max int) PolicyView {
	pv := PolicyView{Reload: ReloadView{Known: true, SHA256: "abcdef0123456789"}, OnStoreError: "local", Zone: "UTC",
		Tiers: []TierView{{Name: "gold-tier", Limits: "rpm 600", Shadow: "rpm 300", ShadowWouldReject: 7, Queue: "max wait 5s"},
			{Name: "free-tier", Limits: "rpm 10"}},
		Keys: []KeyView{{ID: "k-alice", User: "alice", Team: "red", Tier: "gold-tier"},
			{ID: "k-script", User: "<script>alert(1)</script>", Tier: "free-tier"},
			{ID: "app", User: "app", Tier: "free-tier", Trusted: true}},
		History: []ReloadEntry{
			{At: time.Unix(1e9+60, 0), Trigger: "watch", Result: "failure", Error: "policies.yaml:3: tiers.free-tier.rpm: <not a number>"},
			{At: time.Unix(1e9, 0), Trigger: "admin", Result: "success", SHA256: "abcdef0123456789", Changes: []string{"~ tier free-tier rpm: 5 -> 10"}},
			{At: time.Unix(1e9-60, 0), Trigger: "start", Result: "loaded", SHA256: "0123456789abcdef"}}}
	all := pv.Keys
	pv.Keys, pv.KeysTotal = nil, len(all)
	for _, k := range all {
		if filter == "" || strings.Contains(k.ID, filter) || strings.Contains(k.User, filter) || k.Tier == filter {
			pv.KeysMatched++
			if len(pv.Keys) < max {
				pv.Keys = append(pv.Keys, k)
			}
		}
	}
	return pv
}

func (f *fakeSource) Requests(_ context.Context, key, user string, limit int) (RequestsView, error) {
	switch {
	case key == "off":
		return RequestsView{}, ErrNoTranscripts
	case user != "alice":
		return RequestsView{}, ErrNotFound
	}
	rv := RequestsView{User: user, KeyID: key, Since: time.Unix(1e9, 0)}
	for i := 0; i < 60 && len(rv.Requests) < limit; i++ {
		rv.Requests = append(rv.Requests, RequestView{Start: time.Unix(1e9+int64(i), 0), ID: fmt.Sprintf("req-%02d", i), KeyID: "k-alice",
			Endpoint: "chat", Model: "gpt-4o-mini", Status: 200, PromptTokens: 12, CompletionTokens: 34, Latency: 250 * time.Millisecond})
	}
	rv.Requests[1].Status, rv.Requests[1].ErrorType = 429, "rate_limit_exceeded"
	return rv, nil
}

func (f *fakeSource) Team(_ context.Context, name string) (TeamView, error) {
	switch name {
	case "red":
		return TeamView{Name: "red", Limits: "rpm 1000, budget daily $50",
			Members: []KeyView{{ID: "k-alice", User: "alice", Team: "red", Tier: "gold-tier"}, {ID: "app", User: "app", Team: "red", Tier: "free-tier", Trusted: true}},
			Buckets: []Bucket{{Limit: "rpm", Scope: "team", Configured: 1000, Burst: 1000, Remaining: 990, Used: 10}},
			Spend:   []Spend{{Window: "today", Scope: "team", SpentUSD: 12.5, BudgetUSD: 50}}}, nil
	case "down":
		return TeamView{Name: "down"}, ErrUnavailable
	}
	return TeamView{}, ErrNotFound
}

func (f *fakeSource) Providers() []ProviderView {
	return []ProviderView{{Name: "openai", Waiting: 3, Factor: 0.5, Limited: true, Budget: "rpm 500", Keys: 3, Breaker: "open", Throttled: 9,
		Pool: []PoolKey{{ID: "key-a", Weight: 2, Budget: "rpm 300", Answers: 40, Throttled: 10, Resting: 12 * time.Second},
			{ID: "key-b", Weight: 1, Answers: 20}}}}
}

func newTestHandler(t *testing.T) (*Handler, *atomic.Int64) {
	t.Helper()
	var failures atomic.Int64
	src := &fakeSource{users: map[string]UserView{
		"alice": {User: "alice", KeyID: "k-alice", Team: "red", Tier: "gold-tier", Keys: []string{"k-alice"},
			Limits:  []string{"user: rpm 600"},
			Buckets: []Bucket{{Limit: "rpm", Scope: "user", Configured: 600, Burst: 600, Remaining: 587, Used: 13, Reset: 1300 * time.Millisecond}},
			Spend:   []Spend{{Window: "today", Scope: "user", SpentUSD: 1.25, BudgetUSD: 10, Reset: 5 * time.Hour}}},
		"<script>alert(1)</script>": {User: "<script>alert(1)</script>", KeyID: "k-script", Tier: "free-tier"},
	}}
	h, err := New(Options{Source: src,
		BearerOK:    func(hd string) bool { return hd == "Bearer "+testToken },
		TokenOK:     func(tok string) bool { return tok == testToken },
		LoginFailed: func() { failures.Add(1) },
		Logger:      slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return h, &failures
}

// get serves one request with the Bearer token (auth true) or none.
func get(t *testing.T, h http.Handler, path string, auth bool) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	if auth {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPagesRenderData(t *testing.T) {
	h, _ := newTestHandler(t)
	for _, c := range []struct {
		path string
		want []string
	}{
		{"/console/", []string{"1234", "rpm (user)", "budget_daily (team)", "75.0%", "openai", "abcdef012345"}},
		{"/console/policy", []string{"gold-tier", "free-tier", "rpm 300", ">7<", "k-alice", "/console/users/alice?key=k-alice",
			"3 of 3 keys", "~ tier free-tier rpm: 5 -&gt; 10", "trusted", `action="/console/users/"`,
			`<tr class="failure">`, "tiers.free-tier.rpm: &lt;not a number&gt;", "kept the last good", "<code>0123456789ab</code>", ">start<"}},
		{"/console/policy?q=alice", []string{"1 of 3 keys", "k-alice"}},
		{"/console/providers", []string{"openai", "0.50", "breaker-open", "rpm 500", `<td class="n">3</td>`,
			`id="pool-openai"`, "key-a", "resting 12s", "25.0%", "key-b", "taking calls"}},
		{"/console/teams/red", []string{"rpm 1000, budget daily $50", `id="remaining-team-rpm">990<`, "$12.5000", "$50.0000",
			"/console/users/alice?key=k-alice", "app key: its end users share"}},
		{"/console/users/alice", []string{`href="/console/teams/red"`, "gold-tier", "587", "$1.2500", "$10.0000", "today", "1s", "red", `href="/console/requests?user=alice"`}},
		{"/console/requests?user=alice", []string{"req-00", "req-49", "429 rate_limit_exceeded", "gpt-4o-mini", ">34<", "250ms", "50 shown"}},
	} {
		rec := get(t, h, c.path, true)
		if rec.Code != http.StatusOK {
			t.Errorf("%s: %d, want 200", c.path, rec.Code)
			continue
		}
		body := rec.Body.String()
		for _, w := range c.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: the page lacks %q", c.path, w)
			}
		}
		if c.path == "/console/requests?user=alice" && strings.Contains(body, "req-50") {
			t.Errorf("%s: more than %d requests shown", c.path, maxRequestsShown)
		}
		if c.path == "/console/policy?q=alice" && strings.Contains(body, "k-script") {
			t.Errorf("%s: the filter let k-script through", c.path)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", c.path, ct)
		}
	}
}

func TestUserPageErrors(t *testing.T) {
	h, _ := newTestHandler(t)
	for path, want := range map[string]int{
		"/console/users/nobody":        http.StatusNotFound,
		"/console/users/":              http.StatusBadRequest,
		"/console/users/x?key=down":    http.StatusServiceUnavailable,
		"/console/no-such-page":        http.StatusNotFound,
		"/console/users?user=alice":    http.StatusOK,
		"/console/users/?user=nobody":  http.StatusNotFound,
		"/console/users/alice?key=any": http.StatusOK,
		"/console/requests":            http.StatusBadRequest,
		"/console/requests?user=bob":   http.StatusNotFound,
		"/console/requests?key=off":    http.StatusServiceUnavailable,
		"/console/teams/blue":          http.StatusNotFound,
		"/console/users/x?key=boom":    http.StatusInternalServerError,
		"/console/teams/down":          http.StatusServiceUnavailable,
		"/console/teams/":              http.StatusBadRequest,
	} {
		if rec := get(t, h, path, true); rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
}

// TestEscaping: a user name is text, never markup.
func TestEscaping(t *testing.T) {
	h, _ := newTestHandler(t)
	for _, path := range []string{"/console/users/" + url.PathEscape("<script>alert(1)</script>"), "/console/policy"} {
		rec := get(t, h, path, true)
		body := rec.Body.String()
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d", path, rec.Code)
		}
		if strings.Contains(body, "<script>") {
			t.Errorf("%s: the user name reached the page unescaped", path)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s: the escaped user name is missing", path)
		}
	}
}

func TestHeaders(t *testing.T) {
	h, _ := newTestHandler(t)
	for _, c := range []struct {
		path string
		auth bool
	}{{"/console/", true}, {"/console/login", false}, {"/console/style.css", false}, {"/console/", false}} {
		rec := get(t, h, c.path, c.auth)
		if got := rec.Header().Get("Content-Security-Policy"); got != CSP {
			t.Errorf("%s: CSP %q, want %q", c.path, got, CSP)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Cache-Control": "no-store"} {
			if got := rec.Header().Get(k); got != v {
				t.Errorf("%s: %s %q, want %q", c.path, k, got, v)
			}
		}
	}
	rec := get(t, h, "/console/style.css", false)
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/css; charset=utf-8" || !strings.Contains(rec.Body.String(), "body{") {
		t.Errorf("style.css: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	// No inline style or script anywhere: the CSP would block it.
	for _, p := range []string{"/console/", "/console/policy", "/console/providers", "/console/users/alice"} {
		b := get(t, h, p, true).Body.String()
		for _, bad := range []string{"<script", "style=", "<style", "http://", "https://"} {
			if strings.Contains(b, bad) {
				t.Errorf("%s: the page contains %q", p, bad)
			}
		}
	}
}

// TestNoDataWithoutToken: every page redirects to the login form without a
// session (a header of another scheme, such as a reverse proxy's Basic
// auth, is not one) and answers 401 to a wrong Bearer token, counted; no
// data either way.
func TestNoDataWithoutToken(t *testing.T) {
	h, failures := newTestHandler(t)
	for i, p := range []string{"/console/", "/console/policy", "/console/providers", "/console/users/alice"} {
		req := httptest.NewRequest("GET", p, nil)
		req.RemoteAddr = fmt.Sprintf("192.0.2.%d:1234", i) // each its own address: no throttling here
		req.Header.Set("Authorization", "Bearer wrong")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), "gold-tier") || strings.Contains(rec.Body.String(), "587") {
			t.Errorf("%s with a wrong Bearer token: %d, want 401 without data", p, rec.Code)
		}
		if got := failures.Load(); got != int64(i+1) {
			t.Errorf("%s: %d wrong tokens counted, want %d", p, got, i+1)
		}
		for _, hdr := range []string{"", "Basic " + testToken} {
			req := httptest.NewRequest("GET", p, nil)
			if hdr != "" {
				req.Header.Set("Authorization", hdr)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusSeeOther {
				t.Errorf("%s (%q): %d, want 303", p, hdr, rec.Code)
			}
			loc := rec.Header().Get("Location")
			if !strings.HasPrefix(loc, "/console/login?next=") {
				t.Errorf("%s: Location %q", p, loc)
			}
			if b := rec.Body.String(); strings.Contains(b, "587") || strings.Contains(b, "gold-tier") || strings.Contains(b, "1234") {
				t.Errorf("%s: data in the redirect: %s", p, b)
			}
		}
	}
	// A forged or expired cookie is no session either.
	for _, v := range []string{"", "x", "99999999999.00", h.cookieValue(time.Now().Add(-time.Minute))} {
		req := httptest.NewRequest("GET", "/console/", nil)
		req.AddCookie(&http.Cookie{Name: CookieName, Value: v})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusSeeOther {
			t.Errorf("cookie %q: %d, want 303", v, rec.Code)
		}
	}
}

// TestLoginFlow drives the form as a browser does: redirect, a wrong token
// (401, counted, no cookie), the right one (a cookie without the token),
// the page asked for, then sign out.
func TestLoginFlow(t *testing.T) {
	h, failures := newTestHandler(t)
	srv := httptest.NewServer(h)
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 5 * time.Second}

	resp, err := c.Get(srv.URL + "/console/policy")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.Request.URL.Path != "/console/login" || !strings.Contains(body, `name="token"`) {
		t.Fatalf("without a session: ended at %s, want the login form", resp.Request.URL)
	}
	if !strings.Contains(body, `value="/console/policy"`) {
		t.Errorf("the form does not carry the page asked for")
	}

	resp, err = c.PostForm(srv.URL+"/console/login", url.Values{"token": {"wrong"}, "next": {"/console/policy"}})
	if err != nil {
		t.Fatal(err)
	}
	body = readAll(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong token") {
		t.Errorf("wrong token: %d, want 401 with a message", resp.StatusCode)
	}
	if failures.Load() != 1 {
		t.Errorf("login failures counted %d, want 1", failures.Load())
	}
	if len(resp.Cookies()) != 0 {
		t.Errorf("a wrong token set a cookie")
	}
	if strings.Contains(body, "wrong") && strings.Contains(body, `value="wrong"`) {
		t.Errorf("the form echoes the token typed")
	}

	// The right token: the cookie is set and the page asked for comes next.
	noRedirect := &http.Client{Jar: jar, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noRedirect.PostForm(srv.URL+"/console/login", url.Values{"token": {testToken}, "next": {"/console/policy"}})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/policy" {
		t.Fatalf("right token: %d to %q, want 303 to /console/policy", resp.StatusCode, resp.Header.Get("Location"))
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName {
			sc = ck
		}
	}
	switch {
	case sc == nil:
		t.Fatal("no session cookie")
	case !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != Prefix:
		t.Errorf("cookie attributes: HttpOnly %v SameSite %v Path %q", sc.HttpOnly, sc.SameSite, sc.Path)
	case strings.Contains(sc.Value, testToken):
		t.Errorf("the cookie holds the token")
	case sc.Secure:
		t.Errorf("Secure on plain HTTP: the browser would not send it back")
	}
	resp, err = c.Get(srv.URL + "/console/policy")
	if err != nil {
		t.Fatal(err)
	}
	if body = readAll(t, resp); resp.StatusCode != 200 || !strings.Contains(body, "gold-tier") {
		t.Errorf("with the cookie: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if failures.Load() != 1 {
		t.Errorf("login failures %d after a good login, want 1", failures.Load())
	}

	// Sign out: the cookie is gone and the pages redirect again.
	resp, err = c.PostForm(srv.URL+"/console/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	resp, err = c.Get(srv.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if resp.Request.URL.Path != "/console/login" {
		t.Errorf("after sign out: ended at %s, want the login form", resp.Request.URL)
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	h, _ := newTestHandler(t)
	srv := httptest.NewTLSServer(h)
	defer srv.Close()
	c := srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.PostForm(srv.URL+"/console/login", url.Values{"token": {testToken}})
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure {
		t.Errorf("over TLS the session cookie must be Secure: %v", resp.Cookies())
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/policy":         "/console/policy",
		"/console/users/a%2Fb":    "/console/users/a%2Fb",
		"":                        "/console/",
		"https://evil.example/":   "/console/",
		"//evil.example/console/": "/console/",
		"/console/\\evil":         "/console/",
		"/admin/policy":           "/console/",
		"/console/login":          "/console/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMethods(t *testing.T) {
	h, _ := newTestHandler(t)
	for _, c := range []struct{ method, path string }{{"POST", "/console/"}, {"DELETE", "/console/login"}, {"GET", "/console/logout"}} {
		req := httptest.NewRequest(c.method, c.path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", c.method, c.path, rec.Code)
		}
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLoginThrottle: an address may send five wrong tokens, then one per
// 12 s; until then its attempts are answered 429 with a retry-after and
// not checked, the right token included, by form and by Bearer header
// alike. Other addresses are not affected; a right token clears the
// record.
func TestLoginThrottle(t *testing.T) {
	h, failures := newTestHandler(t)
	now := time.Unix(2e9, 0)
	h.o.Now = func() time.Time { return now }
	var throttled int
	h.o.LoginThrottled = func() { throttled++ }
	login := func(addr, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/console/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = addr + ":4000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < loginBurst; i++ {
		if rec := login("198.51.100.7", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d: %d, want 401", i+1, rec.Code)
		}
	}
	rec := login("198.51.100.7", testToken)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "12" || rec.Header().Get("Set-Cookie") != "" {
		t.Fatalf("sixth attempt: %d, retry-after %q, cookie %q; want 429 after 12 s and no session",
			rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("Set-Cookie"))
	}
	req := httptest.NewRequest("GET", "/console/", nil)
	req.RemoteAddr = "198.51.100.7:4001"
	req.Header.Set("Authorization", "Bearer "+testToken)
	brec := httptest.NewRecorder()
	h.ServeHTTP(brec, req)
	if brec.Code != http.StatusTooManyRequests || strings.Contains(brec.Body.String(), "1234") {
		t.Errorf("a Bearer header from the throttled address: %d, want 429 without data", brec.Code)
	}
	if failures.Load() != loginBurst || throttled != 2 {
		t.Errorf("counted %d wrong and %d throttled, want %d and 2", failures.Load(), throttled, loginBurst)
	}
	if rec := login("198.51.100.8", "guess"); rec.Code != http.StatusUnauthorized {
		t.Errorf("another address: %d, want 401 (its own allowance)", rec.Code)
	}
	now = now.Add(loginInterval)
	if rec := login("198.51.100.7", "guess"); rec.Code != http.StatusUnauthorized {
		t.Errorf("12 s later: %d, want one more try (401)", rec.Code)
	}
	if rec := login("198.51.100.7", "guess"); rec.Code != http.StatusTooManyRequests {
		t.Errorf("right after: %d, want 429", rec.Code)
	}
	now = now.Add(loginInterval)
	if rec := login("198.51.100.7", testToken); rec.Code != http.StatusSeeOther {
		t.Fatalf("the right token after the wait: %d, want 303", rec.Code)
	}
	if _, ok := h.guard.tat["198.51.100.7"]; ok {
		t.Error("a right token did not clear the address's record")
	}
}

// TestLoginGuardBounded: the guard tracks at most maxGuarded addresses.
func TestLoginGuardBounded(t *testing.T) {
	var g loginGuard
	now := time.Unix(2e9, 0)
	for i := 0; i < maxGuarded+100; i++ {
		g.fail(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), now.Add(time.Duration(i)*time.Millisecond))
	}
	if len(g.tat) != maxGuarded {
		t.Fatalf("%d addresses tracked, want %d", len(g.tat), maxGuarded)
	}
	if _, ok := g.tat["10.0.0.0"]; ok {
		t.Error("the address whose allowance returns first was kept")
	}
}

// TestSharedCookieKey: handlers given the same cookie key (replicas with
// one admin token) accept each other's sessions; another key does not.
func TestSharedCookieKey(t *testing.T) {
	mk := func(key string) *Handler {
		h, err := New(Options{Source: &fakeSource{}, BearerOK: func(string) bool { return false },
			TokenOK: func(string) bool { return false }, CookieKey: []byte(key)})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a, b, other := mk("key-one"), mk("key-one"), mk("key-two")
	v := a.cookieValue(time.Now().Add(time.Hour))
	if !b.sessionOK(v) || other.sessionOK(v) {
		t.Errorf("same key accepted %v, other key accepted %v; want true and false", b.sessionOK(v), other.sessionOK(v))
	}
	if r1, r2 := mk(""), mk(""); r2.sessionOK(r1.cookieValue(time.Now().Add(time.Hour))) {
		t.Error("two random keys accepted each other's session")
	}
}
