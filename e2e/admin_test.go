package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/fakeai"
	"sluice/internal/testkit"
)

// reloadPolicies is a policies.yaml with a "load" tier for the trusted app
// key's end users (never limited by either version) and a "probe" tier for
// the demo key whose burst is probeBurst: one request per minute, so the
// bucket barely refills during a test and its state is easy to read.
func reloadPolicies(loadRPM, probeBurst int, extra string) string {
	return fmt.Sprintf(`tiers:
  load:
    rpm: %d
  probe:
    rpm: {limit: 1, burst: %d}
%s
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    team: demo
    tier: probe
  - id: app
    sha256: %s
    trusted: true
    team: apps
    tier: load
`, loadRPM, probeBurst, extra, sha256Hex(appKey))
}

// policiesPath is the policies file a started sluice reads.
func (s *sluiceProc) policiesPath(t *testing.T) string {
	t.Helper()
	args := s.cmd.Args
	for i := range args[:len(args)-1] {
		if args[i] == "-policies" {
			return args[i+1]
		}
	}
	t.Fatal("sluice was started without -policies")
	return ""
}

// replaceFile writes data beside path and renames it over path, as an
// editor does.
func replaceFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".new"
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// admin calls the admin API with token ("" sends no Authorization header)
// and returns the status and body.
func (s *sluiceProc) admin(t *testing.T, method, path, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.AdminURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// probeRemaining reads the demo user's rpm bucket through the admin API.
func probeRemaining(t *testing.T, s *sluiceProc) (remaining, burst int64) {
	t.Helper()
	status, body := s.admin(t, "GET", "/admin/usage?user=demo", adminToken, "")
	if status != 200 {
		t.Fatalf("GET /admin/usage: %d %s", status, body)
	}
	var u struct {
		Buckets []struct {
			Limit     string `json:"limit"`
			Burst     int64  `json:"burst"`
			Remaining int64  `json:"remaining"`
		} `json:"buckets"`
	}
	if err := json.Unmarshal(body, &u); err != nil || len(u.Buckets) != 1 || u.Buckets[0].Limit != "rpm" {
		t.Fatalf("usage %s: %v", body, err)
	}
	return u.Buckets[0].Remaining, u.Buckets[0].Burst
}

// probe sends n chat requests as the demo user and returns how many were
// answered 200 and 429.
func probe(t *testing.T, s *sluiceProc, n int) (ok, limited int) {
	t.Helper()
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"probe `+nonce()+`"}]}`))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Fatalf("probe: status %d", resp.StatusCode)
		}
	}
	return ok, limited
}

// TestPolicyReloadUnderLoad sends about 1,000 requests a second for four
// seconds while the policy is reloaded 20 times between two limit sets (by
// file watch, the admin call and SIGHUP): every request is answered 200,
// the probe user's bucket keeps what it spent across the swaps, and the
// limits in force switch with the file.
func TestPolicyReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	f := startFake(t, fakeai.Config{})
	setA, setB := reloadPolicies(600000, 30, ""), reloadPolicies(500000, 15, "")
	s := startSluice(t, sluiceOptions{Policies: setA, BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken, "SLUICE_POLICY_WATCH": "100ms"}})
	path := s.policiesPath(t)

	if ok, lim := probe(t, s, 10); ok != 10 || lim != 0 {
		t.Fatalf("probe under A: %d ok, %d limited; want 10 ok", ok, lim)
	}
	if rem, burst := probeRemaining(t, s); rem != 20 || burst != 30 {
		t.Fatalf("probe bucket under A: %d of %d left; want 20 of 30", rem, burst)
	}

	// The cache survives the reloads too.
	cached := `{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"kept ` + nonce() + `"}]}`
	if got := appCacheStatus(t, s, cached); got != "miss" {
		t.Fatalf("first deterministic request: %q", got)
	}

	const rate, seconds = 1000, 4
	done := make(chan *loadResult, 1)
	start := time.Now()
	go func() {
		done <- runLoad(testContext(t, time.Minute), loadOptions{url: s.URL, n: rate * seconds, conc: 32, rate: rate, tag: "reload " + nonce()})
	}()
	// 20 reloads, alternating B and A, about every 180 ms; the triggers
	// rotate: the file watch alone, the admin call, SIGHUP.
	for i := 1; i <= 20; i++ {
		time.Sleep(seconds * time.Second / 22)
		next := setA
		if i%2 == 1 {
			next = setB
		}
		replaceFile(t, path, next)
		switch i % 3 {
		case 0: // the watch picks it up
		case 1:
			if status, body := s.admin(t, "POST", "/admin/reload", adminToken, ""); status != 200 {
				t.Fatalf("POST /admin/reload: %d %s", status, body)
			}
		case 2:
			s.signal(t, syscall.SIGHUP)
		}
		want := float64(i)
		waitMetric(t, s, "sluice_policy_reloads_total", want, `result="success"`)
	}
	res := <-done
	took := time.Since(start)
	total := rate * seconds
	if got := res.statusCount(200); got != total || res.failed.Load() != 0 {
		t.Fatalf("under reloads: %d of %d answered 200, %d failed (statuses %v)", got, total, res.failed.Load(), statusHistogram(res))
	}
	t.Logf("%d requests in %v (%.0f req/s) across 20 reloads; p50 %v, p99 %v", total, took.Round(time.Millisecond),
		float64(total)/took.Seconds(), res.percentile(0.5), res.percentile(0.99))
	if v, _ := s.metric(t, "sluice_policy_reloads_total", `result="failure"`); v != 0 {
		t.Fatalf("%v reloads failed", v)
	}
	if got := appCacheStatus(t, s, cached); got != "hit" {
		t.Fatalf("the cached answer did not survive 20 reloads: %q", got)
	}
	// Back on A after an even number of swaps: the 10 requests spent before
	// the load are still in the bucket.
	if rem, burst := probeRemaining(t, s); rem != 20 || burst != 30 {
		t.Fatalf("probe bucket after 20 reloads: %d of %d left; want 20 of 30 (state kept)", rem, burst)
	}
	// On B the same bucket has 15-10 = 5 left: the limits switched and the
	// state carried over.
	replaceFile(t, path, setB)
	if status, body := s.admin(t, "POST", "/admin/reload", adminToken, ""); status != 200 || !bytes.Contains(body, []byte(`"reloaded": true`)) {
		t.Fatalf("POST /admin/reload: %d %s", status, body)
	}
	if rem, burst := probeRemaining(t, s); rem != 5 || burst != 15 {
		t.Fatalf("probe bucket on B: %d of %d left; want 5 of 15", rem, burst)
	}
	if ok, lim := probe(t, s, 6); ok != 5 || lim != 1 {
		t.Fatalf("probe on B: %d ok, %d limited; want 5 ok then a 429", ok, lim)
	}
}

func statusHistogram(r *loadResult) map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := map[int]int{}
	for _, s := range r.ids {
		h[s]++
	}
	return h
}

// waitMetric waits up to 5 s for a metric sample to reach want.
func waitMetric(t *testing.T, s *sluiceProc, name string, want float64, labels ...string) {
	t.Helper()
	var v float64
	if !testkit.Poll(5*time.Second, func() bool { v, _ = s.metric(t, name, labels...); return v == want }) {
		t.Fatalf("%s%v = %v; want %v\n%s", name, labels, v, want, s.Output())
	}
}

// TestPolicyReloadBrokenFile: a file with an error leaves the policy in
// force, flips sluice_policy_last_reload_successful to 0, and the log and
// the admin answer name the file and the line; fixing the file recovers.
func TestPolicyReloadBrokenFile(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Policies: reloadPolicies(1000, 2, ""), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken, "SLUICE_POLICY_WATCH": "50ms"}})
	path := s.policiesPath(t)
	waitMetric(t, s, "sluice_policy_last_reload_successful", 1)

	// Line 5 gets a limit that is not a number.
	broken := strings.Replace(reloadPolicies(1000, 50, ""), "rpm: {limit: 1, burst: 50}", "rpm: {limit: 1, burst: lots}", 1)
	replaceFile(t, path, broken)
	waitMetric(t, s, "sluice_policy_last_reload_successful", 0)
	waitMetric(t, s, "sluice_policy_reloads_total", 1, `result="failure"`)
	if want := path + ":5"; !strings.Contains(s.Output(), want) {
		t.Fatalf("the log does not name %s:\n%s", want, s.Output())
	}
	status, body := s.admin(t, "POST", "/admin/reload", adminToken, "")
	if status != http.StatusUnprocessableEntity || !bytes.Contains(body, []byte(path+":5")) {
		t.Fatalf("POST /admin/reload of a broken file: %d %s", status, body)
	}
	// The old policy (burst 2) is still in force.
	if ok, lim := probe(t, s, 3); ok != 2 || lim != 1 {
		t.Fatalf("probe: %d ok, %d limited; want the old burst of 2", ok, lim)
	}
	replaceFile(t, path, reloadPolicies(1000, 50, ""))
	waitMetric(t, s, "sluice_policy_last_reload_successful", 1)
	waitMetric(t, s, "sluice_policy_reloads_total", 1, `result="success"`)
	if _, burst := probeRemaining(t, s); burst != 50 {
		t.Fatalf("fixed file not in force: burst %d", burst)
	}
}

// TestPolicyReloadConfigMapSwap: a Kubernetes-style ConfigMap directory
// (policies.yaml -> ..data/policies.yaml, ..data -> a version directory)
// whose ..data symlink is swapped triggers a reload.
func TestPolicyReloadConfigMapSwap(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	dir := t.TempDir()
	version := func(name string, burst int) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "policies.yaml"), reloadPolicies(1000, burst, ""))
	}
	version("..2026_v1", 7)
	if err := os.Symlink("..2026_v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "policies.yaml")
	if err := os.Symlink("..data/policies.yaml", link); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(moduleRoot, "configs", "sluice.yaml")
	s, err := launchWith(t, cfgPath, link, sluiceOptions{BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken, "SLUICE_POLICY_WATCH": "50ms"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, burst := probeRemaining(t, s); burst != 7 {
		t.Fatalf("burst %d; want 7", burst)
	}
	version("..2026_v2", 9)
	if err := os.Symlink("..2026_v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(dir, "..2026_v1"))
	waitMetric(t, s, "sluice_policy_reloads_total", 1, `result="success"`)
	if _, burst := probeRemaining(t, s); burst != 9 {
		t.Fatalf("burst %d after the swap; want 9", burst)
	}
}

// launchWith starts sluice on the given files (retrying a port clash).
func launchWith(t *testing.T, cfgPath, polPath string, o sluiceOptions) (*sluiceProc, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var s *sluiceProc
		if s, err = launch(t, cfgPath, polPath, o); err == nil {
			return s, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

// TestShadowLimits: a tier's shadow rpm of 3 counts 7 of 10 requests as
// would-reject while all 10 are answered.
func TestShadowLimits(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Policies: reloadPolicies(1000, 100, "    shadow: {rpm: 3}"), BaseURL: f.URL})
	if ok, lim := probe(t, s, 10); ok != 10 || lim != 0 {
		t.Fatalf("%d ok, %d limited; a shadow limit was enforced", ok, lim)
	}
	if v, _ := s.metric(t, "sluice_shadow_decisions_total", `tier="probe"`, `limit="rpm"`, `outcome="would_reject"`); v != 7 {
		t.Fatalf("would_reject = %v; want 7", v)
	}
	if v, _ := s.metric(t, "sluice_shadow_decisions_total", `tier="probe"`, `outcome="would_admit"`); v != 3 {
		t.Fatalf("would_admit = %v; want 3", v)
	}
}

// TestAdminAPIAuth: without a configured token the API is absent (404);
// with one, a call without a token or with a wrong one gets 401 and the
// right one is answered.
func TestAdminAPIAuth(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	none := startSluice(t, sluiceOptions{Policies: reloadPolicies(1000, 5, ""), BaseURL: f.URL})
	if status, _ := none.admin(t, "GET", "/admin/policy?user=demo", "anything", ""); status != 404 {
		t.Fatalf("no token configured: %d; want 404", status)
	}
	s := startSluice(t, sluiceOptions{Policies: reloadPolicies(1000, 5, ""), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}})
	calls := []struct{ method, path, body string }{
		{"GET", "/admin/policy?user=demo", ""},
		{"GET", "/admin/policy?key=app&user=alice", ""},
		{"GET", "/admin/usage?user=demo", ""},
		{"GET", "/admin/queues", ""},
		{"POST", "/admin/cache/purge", `{"namespace":"team:demo"}`},
		{"POST", "/admin/reload", ""},
		{"GET", "/admin/reload", ""},
	}
	for _, c := range calls {
		for _, tok := range []string{"", "wrong-" + adminToken, adminToken[:len(adminToken)-1]} {
			if status, _ := s.admin(t, c.method, c.path, tok, c.body); status != 401 {
				t.Fatalf("%s %s with token %q: %d; want 401", c.method, c.path, tok, status)
			}
		}
		status, body := s.admin(t, c.method, c.path, adminToken, c.body)
		if status != 200 {
			t.Fatalf("%s %s with the token: %d %s", c.method, c.path, status, body)
		}
	}
	_, body := s.admin(t, "GET", "/admin/policy?key=app&user=alice", adminToken, "")
	var eff struct {
		KeyID, User, Tier string
		EndUser           bool `json:"end_user"`
		Limits            struct {
			RPM struct{ Limit int64 } `json:"rpm"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(body, &eff); err != nil || eff.User != "alice" || eff.Tier != "load" || !eff.EndUser || eff.Limits.RPM.Limit != 1000 {
		t.Fatalf("effective policy of alice via app: %s (%v)", body, err)
	}
	if status, _ := s.admin(t, "GET", "/admin/policy?user=nobody", adminToken, ""); status != 404 {
		t.Fatalf("unknown user: %d; want 404", status)
	}
}

// TestValidateAndDiff: validate names file and line of an error; diff lists
// the effective changes.
func TestValidateAndDiff(t *testing.T) {
	dir := t.TempDir()
	a, b, bad := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "bad.yaml")
	writeFile(t, a, reloadPolicies(1000, 5, ""))
	writeFile(t, b, reloadPolicies(2000, 5, "    shadow: {rpm: 3}"))
	writeFile(t, bad, strings.Replace(reloadPolicies(1000, 5, ""), "tier: load", "tier: nope", 1))
	cmd := exec.Command(sluiceBin, "diff", a, b)
	cmd.Env = childEnv(map[string]string{"SLUICE_DEMO_KEY": demoKey})
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "~ tier load rpm: 1000 -> 2000\n~ tier probe shadow rpm: - -> 3\n~ effective user app (key app) rpm: 1000 -> 2000\n~ effective user demo (key demo) shadow rpm: - -> 3\n" {
		t.Fatalf("sluice diff: %v\n%s", err, out)
	}
	cmd = exec.Command(sluiceBin, "validate", "-policies", bad)
	cmd.Env = childEnv(map[string]string{"OPENAI_API_KEY": "x"})
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), bad+":17: keys[1].tier: unknown tier \"nope\"") {
		t.Fatalf("sluice validate of a broken file: %v\n%s", err, out)
	}
}

// TestAdminCachePurge: a namespace purge and a purge of one request make
// the next identical request a miss; other entries stay.
func TestAdminCachePurge(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Policies: reloadPolicies(1000, 100, ""), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}})
	body := func(tag string) string {
		return `{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"purge ` + tag + `"}]}`
	}
	one, two := body("one "+nonce()), body("two "+nonce())
	cacheStatus := func(b string) string {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions", strings.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Sluice-Cache")
	}
	for _, b := range []string{one, two} {
		if got := cacheStatus(b); got != "miss" {
			t.Fatalf("first call: %q", got)
		}
		if got := cacheStatus(b); got != "hit" {
			t.Fatalf("second call: %q", got)
		}
	}
	// One entry, by the request that stored it.
	purge := `{"namespace":"team:demo","endpoint":"chat","model":"gpt-4o-mini","request":` + one + `}`
	if status, resp := s.admin(t, "POST", "/admin/cache/purge", adminToken, purge); status != 200 {
		t.Fatalf("purge by request: %d %s", status, resp)
	}
	if got, other := cacheStatus(one), cacheStatus(two); got != "miss" || other != "hit" {
		t.Fatalf("after purging one entry: %q and %q; want miss and hit", got, other)
	}
	// The whole namespace.
	if status, resp := s.admin(t, "POST", "/admin/cache/purge", adminToken, `{"namespace":"team:demo"}`); status != 200 {
		t.Fatalf("purge namespace: %d %s", status, resp)
	}
	if got, other := cacheStatus(one), cacheStatus(two); got != "miss" || other != "miss" {
		t.Fatalf("after purging the namespace: %q and %q; want two misses", got, other)
	}
	if got := cacheStatus(two); got != "hit" {
		t.Fatalf("the cache no longer stores after a purge: %q", got)
	}
	if status, _ := s.admin(t, "POST", "/admin/cache/purge", adminToken, `{"key":"zz"}`); status != 400 {
		t.Fatalf("a bad key: %d; want 400", status)
	}
}

// TestAdminUsageAndQueues: usage reports what a user spent without
// spending; queues lists every upstream.
func TestAdminUsageAndQueues(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	s := startSluice(t, sluiceOptions{Policies: reloadPolicies(1000, 8, ""), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}})
	if ok, _ := probe(t, s, 3); ok != 3 {
		t.Fatal("probe failed")
	}
	for i := 0; i < 3; i++ {
		if rem, burst := probeRemaining(t, s); rem != 5 || burst != 8 {
			t.Fatalf("usage read %d: %d of %d left; want 5 of 8", i, rem, burst)
		}
	}
	status, body := s.admin(t, "GET", "/admin/queues", adminToken, "")
	if status != 200 || !bytes.Contains(body, []byte(`"upstream": "openai"`)) || !bytes.Contains(body, []byte(`"waiting": 0`)) {
		t.Fatalf("queues: %d %s", status, body)
	}
}

// TestAdminCachePurgeAcrossReplicas: two replicas share a tiered cache on
// Redis; a namespace purged through one replica's admin API turns the
// other's hits into misses within about a second.
func TestAdminCachePurgeAcrossReplicas(t *testing.T) {
	addr, prefix, _ := testRedisAddr(t)
	f := startFake(t, fakeai.Config{})
	cfg := strings.Replace(cacheConfig("tiered", addr, prefix), "  admin_listen: ${SLUICE_ADMIN_ADDR}\n",
		"  admin_listen: ${SLUICE_ADMIN_ADDR}\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1)
	env := map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}
	s1 := startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL, Env: env})
	s2 := startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL, Env: env})
	ctx := testContext(t, 30*time.Second)
	p := deterministic("purge replicas " + nonce())
	status := func(s *sluiceProc) string {
		t.Helper()
		_, h, err := chat(ctx, s.client(demoKey), p)
		if err != nil {
			t.Fatal(err)
		}
		return h.Get("X-Sluice-Cache")
	}
	if a, b := status(s1), status(s2); a != "miss" || b != "hit" {
		t.Fatalf("before the purge: %q, %q; want miss, hit", a, b)
	}
	if code, body := s1.admin(t, "POST", "/admin/cache/purge", adminToken, `{"namespace":"team:red"}`); code != 200 {
		t.Fatalf("purge: %d %s", code, body)
	}
	start := time.Now()
	for status(s2) == "hit" {
		if time.Since(start) > 5*time.Second {
			t.Fatal("replica 2 still answers from the purged namespace after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("replica 2 took the purge up after %v", time.Since(start).Round(time.Millisecond))
	if got := status(s1); got != "hit" {
		t.Fatalf("replica 1 after replica 2 stored the new entry: %q; want hit (both use the new generation)", got)
	}
}

// appCacheStatus sends body as an end user of the app key and returns the
// X-Sluice-Cache header.
func appCacheStatus(t *testing.T, s *sluiceProc, body string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+appKey)
	req.Header.Set("X-Sluice-User", "cache-check")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("X-Sluice-Cache")
}
