package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/internal/testkit"
	"sluice/policy/limit"
)

// policyWithRPM is a small policies.yaml whose one tier allows rpm
// requests per minute.
func policyWithRPM(rpm int) string {
	return "tiers:\n  t:\n    rpm: " + strconv.Itoa(rpm) + "\nkeys:\n  - id: k\n    sha256: " + HashKey("sk-k") + "\n    user: u\n    tier: t\n"
}

// syncBuf is a log sink safe for the watcher goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type reloadFixture struct {
	r       *Reloader
	reg     *prometheus.Registry
	log     *syncBuf
	mu      sync.Mutex
	applied []*Policy
}

func (f *reloadFixture) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.applied)
}

func (f *reloadFixture) last() *Policy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[len(f.applied)-1]
}

func newFixture(t *testing.T, path string, interval time.Duration) *reloadFixture {
	t.Helper()
	f := &reloadFixture{reg: prometheus.NewRegistry(), log: &syncBuf{}}
	r, err := NewReloader(ReloaderOptions{Path: path, Interval: interval, Registry: f.reg,
		Logger: slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Apply: func(p *Policy) {
			f.mu.Lock()
			f.applied = append(f.applied, p)
			f.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	f.applied = append(f.applied, p)
	f.r = r
	r.Start()
	t.Cleanup(r.Stop)
	return f
}

func rpmOf(p *Policy) int64 { return p.Tiers["t"].Limits.RPM.Limit }

func (f *reloadFixture) metric(t *testing.T, result string) float64 {
	t.Helper()
	return testutil.ToFloat64(f.r.reloads.WithLabelValues(result))
}

// writeAtomic writes data to a temporary file beside path and renames it
// over path, as editors and config managers do.
func writeAtomic(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReloadBrokenFileKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomic(t, path, policyWithRPM(10))
	f := newFixture(t, path, 0)

	if changed, err := f.r.Reload("test"); changed || err != nil {
		t.Fatalf("same bytes: changed %v, err %v; want a skip", changed, err)
	}
	if f.metric(t, ReloadUnchanged) != 1 || f.count() != 1 {
		t.Fatalf("unchanged bytes were applied")
	}
	// Line 12 names a tier that does not exist.
	writeAtomic(t, path, policyWithRPM(10)+"  - id: k2\n    sha256: "+HashKey("sk-k2")+"\n    user: v\n    tier: nope\n")
	_, err := f.r.Reload("test")
	if err == nil {
		t.Fatal("a key with an unknown tier reloaded")
	}
	if !strings.Contains(err.Error(), path+":12: keys[1].tier: unknown tier") {
		t.Fatalf("error does not name file and line: %v", err)
	}
	if f.count() != 1 || rpmOf(f.r.Policy()) != 10 {
		t.Fatalf("a broken file replaced the policy in force")
	}
	if v := testutil.ToFloat64(f.r.ok); v != 0 {
		t.Fatalf("sluice_policy_last_reload_successful = %v after a failure; want 0", v)
	}
	if !strings.Contains(f.log.String(), path+":12") {
		t.Fatalf("the log does not name file and line:\n%s", f.log.String())
	}
	if f.r.Status().LastError == "" {
		t.Fatal("Status does not report the error")
	}
	writeAtomic(t, path, policyWithRPM(20))
	if changed, err := f.r.Reload("test"); !changed || err != nil {
		t.Fatalf("fixed file: changed %v, err %v", changed, err)
	}
	if !strings.Contains(f.log.String(), `change="~ tier t rpm: 10 -> 20"`) {
		t.Fatalf("the reload did not log its change:\n%s", f.log.String())
	}
	if rpmOf(f.last()) != 20 || testutil.ToFloat64(f.r.ok) != 1 || f.metric(t, ReloadSuccess) != 1 || f.metric(t, ReloadFailure) != 1 {
		t.Fatalf("the fixed file was not applied or counted")
	}
	// A file that vanished is a failure too, and the policy stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Reload("test"); err == nil || rpmOf(f.r.Policy()) != 20 {
		t.Fatalf("missing file: err %v", err)
	}
}

func TestReloadWatchRenameOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomic(t, path, policyWithRPM(10))
	f := newFixture(t, path, 10*time.Millisecond)
	writeAtomic(t, path, policyWithRPM(30))
	testkit.Eventually(t, 5*time.Second, "the renamed-over file to load", func() bool { return f.count() == 2 })
	if rpmOf(f.last()) != 30 {
		t.Fatalf("rpm = %d; want 30", rpmOf(f.last()))
	}
	// An in-place rewrite of the same length counts too (size and inode
	// equal; the modification time differs).
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(path, []byte(policyWithRPM(40)), 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the rewritten file to load", func() bool { return f.count() == 3 })
	if rpmOf(f.last()) != 40 {
		t.Fatalf("rpm = %d; want 40", rpmOf(f.last()))
	}
}

// TestReloadWatchWaitsForWrite: an in-place write in progress (the file
// truncated, then half written, then whole) is read only once it has
// settled, so no truncated policy is ever tried. The polls are driven by
// hand, one per step, so the test does not depend on timing.
func TestReloadWatchWaitsForWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomic(t, path, policyWithRPM(10))
	f := newFixture(t, path, 0)
	full := policyWithRPM(60)
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var seen os.FileInfo
	if seen = f.r.poll(seen); seen == nil {
		t.Fatal("the truncated file was not seen as a change")
	}
	// Each step changes the size, as a slow writer's would: every poll
	// sees a new identity and none reads the file.
	for i := 0; i < len(full); i += 8 {
		if _, err := fh.WriteString(full[i:min(i+8, len(full))]); err != nil {
			t.Fatal(err)
		}
		if seen = f.r.poll(seen); seen == nil {
			t.Fatalf("a poll after %d bytes read the file", min(i+8, len(full)))
		}
	}
	if f.count() != 1 || f.metric(t, ReloadFailure) != 0 {
		t.Fatalf("the file was read mid-write:\n%s", f.log.String())
	}
	// The write is over: the next poll finds the same identity and reads.
	if seen = f.r.poll(seen); seen != nil || f.count() != 2 {
		t.Fatalf("the settled file was not read (seen %v, applied %d)", seen != nil, f.count())
	}
	if rpmOf(f.last()) != 60 || f.metric(t, ReloadFailure) != 0 {
		t.Fatalf("rpm = %d, failures %v; want 60 and 0", rpmOf(f.last()), f.metric(t, ReloadFailure))
	}
	// Unchanged since: polls do nothing.
	if seen = f.r.poll(seen); seen != nil || f.count() != 2 {
		t.Fatal("an unchanged file was read again")
	}
}

// TestReloadWatchSymlinkSwap mimics a Kubernetes ConfigMap volume:
// policies.yaml -> ..data/policies.yaml, ..data -> ..2026_v1; an update
// writes ..2026_v2 and swaps ..data by renaming a new symlink over it.
func TestReloadWatchSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	mkVersion := func(name, data string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "policies.yaml"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkVersion("..v1", policyWithRPM(10))
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policies.yaml")
	if err := os.Symlink("..data/policies.yaml", path); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, path, 10*time.Millisecond)
	mkVersion("..v2", policyWithRPM(50))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the swapped ConfigMap to load", func() bool { return f.count() == 2 })
	if rpmOf(f.last()) != 50 {
		t.Fatalf("rpm = %d; want 50", rpmOf(f.last()))
	}
}

func TestDiff(t *testing.T) {
	old := `
tiers:
  free: {rpm: 20, tpm: {limit: 40000, burst: 20000}, models: {"gpt-4o*": {rpm: 5}}}
  pro: {rpm: 600}
keys:
  - {id: a, sha256: ` + HashKey("a") + `, user: alice, tier: free}
  - {id: b, sha256: ` + HashKey("b") + `, user: bob, tier: free}
users:
  carol: {rpm: 5}
`
	cur := `
tiers:
  free: {rpm: 30, tpm: {limit: 40000, burst: 20000}, shadow: {rpm: 10}}
  team: {rpm: 100}
keys:
  - {id: a, sha256: ` + HashKey("a2") + `, user: alice, tier: team}
  - {id: c, sha256: ` + HashKey("c") + `, user: cid, tier: free, limits: {rpm: 3}}
users:
  carol: {rpm: 7}
  dave: {tier: team}
`
	po, err := Parse("old.yaml", []byte(old), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	pn, err := Parse("new.yaml", []byte(cur), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Diff(po, pn), "\n")
	want := strings.Join([]string{
		"~ tier free rpm: 20 -> 30",
		"- tier free model gpt-4o*",
		"~ tier free shadow rpm: - -> 10",
		"- tier pro",
		"+ tier team: rpm 100",
		"~ key a: secret changed",
		"~ key a tier: free -> team",
		"- key b",
		"+ key c: user cid, tier free",
		"~ user carol rpm: 5 -> 7",
		`+ user dave: tier "team", unlimited`,
		"~ effective user alice (key a) tier: free -> team",
		"~ effective user alice (key a) rpm: 20 -> 100",
		"~ effective user alice (key a) tpm: 40000 (burst 20000) -> -",
	}, "\n")
	if got != want {
		t.Fatalf("Diff:\n%s\nwant:\n%s", got, want)
	}
	if d := Diff(po, po); len(d) != 0 {
		t.Fatalf("a policy differs from itself: %v", d)
	}
}

func TestShadowCountsWithoutEffect(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`
tiers:
  t: {rpm: 100, shadow: {rpm: 3}}
keys:
  - {id: k, sha256: `+HashKey("k")+`, user: u, tier: t}
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	mem := limit.NewMemory(limit.MemoryOptions{})
	defer mem.Close()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: reg})
	defer l.Close()
	k, _ := p.KeyByID("k")
	pl := p.Plan(p.Principal(k, ""), k, "m")
	for i := 0; i < 10; i++ {
		ad := l.Admit(context.Background(), p, &Ask{Plan: pl, RequestID: "r"})
		if ad.Outcome != Admitted {
			t.Fatalf("request %d was not admitted: the shadow limit was enforced", i)
		}
		l.Finish(context.Background(), ad, -1, 0)
	}
	would := testutil.ToFloat64(l.shadowDecisions.WithLabelValues("t", "rpm", ShadowReject))
	ok := testutil.ToFloat64(l.shadowDecisions.WithLabelValues("t", "none", ShadowAdmit))
	if would != 7 || ok != 3 {
		t.Fatalf("shadow: %v would-reject, %v would-admit; want 7 and 3", would, ok)
	}
	// The real bucket holds 10 requests; the shadow's own is separate.
	u, err := l.Usage(context.Background(), &pl)
	if err != nil || len(u) != 1 || u[0].Used != 10 || u[0].Remaining != 90 {
		t.Fatalf("usage = %+v, %v; want 10 used of 100", u, err)
	}
	// Usage reads without spending.
	u2, _ := l.Usage(context.Background(), &pl)
	if u2[0].Remaining != 90 {
		t.Fatalf("reading usage spent: %+v", u2)
	}
}

func TestShadowConcurrencyRejected(t *testing.T) {
	_, err := Parse("p.yaml", []byte("tiers:\n  t: {shadow: {concurrent: 3}}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "p.yaml:2: tiers.t.shadow.concurrent") {
		t.Fatalf("err = %v", err)
	}
}

// TestShadowWouldQueue: within the tier's max wait, a shadow limit counts
// the requests it would have queued; beyond it, the ones it would reject.
func TestShadowWouldQueue(t *testing.T) {
	p, err := Parse("p.yaml", []byte(`
tiers:
  t: {shadow: {rpm: 60}}
keys:
  - {id: k, sha256: `+HashKey("k")+`, user: u, tier: t}
`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	mem := limit.NewMemory(limit.MemoryOptions{})
	defer mem.Close()
	l := NewLimiter(LimiterOptions{Store: mem, Registry: prometheus.NewRegistry()})
	defer l.Close()
	k, _ := p.KeyByID("k")
	pl := p.Plan(p.Principal(k, ""), k, "m")
	if !pl.Limited() {
		t.Fatal("a plan with shadow limits only is not evaluated")
	}
	// 60 fit the burst; each further one waits a second more: with 2.5 s of
	// max wait, two more would queue and the rest would be rejected.
	for i := 0; i < 65; i++ {
		ad := l.Admit(context.Background(), p, &Ask{Plan: pl, RequestID: "r", MaxWait: 2500 * time.Millisecond})
		if ad.Outcome != Admitted || ad.Wait != 0 {
			t.Fatalf("request %d: outcome %d, wait %v: the shadow had an effect", i, ad.Outcome, ad.Wait)
		}
		l.Finish(context.Background(), ad, -1, 0)
	}
	got := func(lim, outcome string) float64 {
		return testutil.ToFloat64(l.shadowDecisions.WithLabelValues("t", lim, outcome))
	}
	if got("none", ShadowAdmit) != 60 || got("rpm", ShadowQueue) != 2 || got("rpm", ShadowReject) != 3 {
		t.Fatalf("admit %v, queue %v, reject %v; want 60, 2, 3", got("none", ShadowAdmit), got("rpm", ShadowQueue), got("rpm", ShadowReject))
	}
}

// TestShadowOverrides: a key's and a user's shadow limits replace the
// tier's field by field, like real limits; diff shows them.
func TestShadowOverrides(t *testing.T) {
	src := `
tiers:
  t: {rpm: 100, shadow: {rpm: 50, tpm: 1000}}
keys:
  - {id: k, sha256: ` + HashKey("k") + `, user: u, tier: t, shadow: {rpm: 20}}
  - {id: v, sha256: ` + HashKey("v") + `, user: vip, tier: t}
users:
  vip: {shadow: {tpm: 9000}}
`
	p, err := Parse("p.yaml", []byte(src), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := p.KeyByID("k")
	if sh := p.Plan(p.Principal(k, ""), k, "").Shadow; sh.RPM.Limit != 20 || sh.TPM.Limit != 1000 {
		t.Fatalf("key override: %+v", sh)
	}
	v, _ := p.KeyByID("v")
	if sh := p.Plan(p.Principal(v, ""), v, "").Shadow; sh.RPM.Limit != 50 || sh.TPM.Limit != 9000 {
		t.Fatalf("user override: %+v", sh)
	}
	p2, err := Parse("p.yaml", []byte(strings.Replace(src, "shadow: {rpm: 20}", "shadow: {rpm: 30}", 1)), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Diff(p, p2), "\n")
	if want := "~ key k shadow rpm: 20 -> 30\n~ effective user u (key k) shadow rpm: 20 -> 30"; got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", got, want)
	}
	if _, err := Parse("p.yaml", []byte("tiers:\n  t: {}\nusers:\n  x:\n    shadow: {concurrent: 1}\n"), env(nil)); err == nil ||
		!strings.Contains(err.Error(), "p.yaml:5: users.x.shadow.concurrent") {
		t.Fatalf("user shadow concurrency: %v", err)
	}
}

// TestReloadHistory: the history keeps the start, each applied change with
// its diff, failures and refusals with their error, newest first, leaves
// out unchanged reloads and holds at most historyLen events.
func TestReloadHistory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomic(t, path, policyWithRPM(10))
	f := newFixture(t, path, 0)
	if _, err := f.r.Reload("test"); err != nil { // unchanged: not kept
		t.Fatal(err)
	}
	writeAtomic(t, path, policyWithRPM(20))
	if _, err := f.r.Reload("admin"); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, path, "tiers: [")
	if _, err := f.r.Reload("sighup"); err == nil {
		t.Fatal("a broken file reloaded")
	}
	writeAtomic(t, path, policyWithRPM(5))
	if _, err := f.r.Reload("watch"); err != nil {
		t.Fatal(err)
	}
	// No tier limit at all lifts the rpm: refused.
	writeAtomic(t, path, strings.Replace(policyWithRPM(5), "    rpm: 5\n", "    tpm: 1000\n", 1))
	if _, err := f.r.Reload("watch"); err == nil {
		t.Fatal("a lift was not refused")
	}
	h := f.r.Status().History
	type ev struct{ trigger, result string }
	want := []ev{{"watch", ReloadRefused}, {"watch", ReloadSuccess}, {"sighup", ReloadFailure}, {"admin", ReloadSuccess}, {"start", "loaded"}}
	if len(h) != len(want) {
		t.Fatalf("history has %d events, want %d: %+v", len(h), len(want), h)
	}
	for i, w := range want {
		if h[i].Trigger != w.trigger || h[i].Result != w.result || h[i].At.IsZero() {
			t.Errorf("event %d = %s/%s, want %s/%s", i, h[i].Trigger, h[i].Result, w.trigger, w.result)
		}
	}
	if h[3].SHA256 == "" || h[3].SHA256 == h[4].SHA256 || len(h[3].Changes) == 0 || h[3].Changes[0] != "~ tier t rpm: 10 -> 20" {
		t.Errorf("the applied change: %+v", h[3])
	}
	if h[2].Error == "" || h[2].SHA256 != "" || h[0].Error == "" || len(h[0].Changes) == 0 {
		t.Errorf("failure %+v / refusal %+v lack their error or lifts", h[2], h[0])
	}
	for i := range historyLen + 5 {
		writeAtomic(t, path, policyWithRPM(4-i%2))
		if _, err := f.r.ReloadWith("watch", true); err != nil {
			t.Fatal(err)
		}
	}
	if h := f.r.Status().History; len(h) != historyLen || h[0].Result == "" {
		t.Fatalf("history holds %d events after many reloads, want %d", len(h), historyLen)
	}
}
