package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// appPolicy is the example's shape: a trusted app key whose end users get
// the limited free tier, in a key tier without limits.
const appPolicy = `tiers:
  default: {}
  free:
    rpm: 20
    concurrent: 2
keys:
  - id: chat-app
    sha256: 00000000000000000000000000000000000000000000000000000000000000aa
    team: chat-app
    tier: default
    trusted: true
    user_tier: free
`

// cutPolicy is appPolicy cut short in the middle of the key: still valid
// YAML, and its end users fall to the unlimited key tier.
var cutPolicy = appPolicy[:strings.Index(appPolicy, "    user_tier")]

func TestLifts(t *testing.T) {
	parse := func(s string) *Policy {
		t.Helper()
		p, err := Parse("p.yaml", []byte(s), env(nil))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, cut := parse(appPolicy), parse(cutPolicy)
	got := Lifts(old, cut)
	if len(got) != 2 || !strings.Contains(got[0], "key chat-app end users") {
		t.Fatalf("Lifts(app, cut) = %q; want the end users' rpm and concurrent", got)
	}
	if l := Lifts(cut, old); len(l) != 0 {
		t.Fatalf("adding limits lifts nothing: %q", l)
	}
	raised := parse(strings.Replace(appPolicy, "rpm: 20", "rpm: 2000", 1))
	if l := Lifts(old, raised); len(l) != 0 {
		t.Fatalf("raising a limit is no lift: %q", l)
	}
	noTier := parse(strings.Replace(appPolicy, "    rpm: 20\n", "", 1))
	if l := Lifts(old, noTier); len(l) != 2 || !strings.HasPrefix(l[0], "tier free rpm: 20 -> unlimited") {
		t.Fatalf("a tier losing its rpm: %q", l)
	}
	allow := parse("on_store_error: allow\n" + appPolicy)
	if l := Lifts(old, allow); len(l) != 1 || !strings.Contains(l[0], "on_store_error") {
		t.Fatalf("on_store_error allow: %q", l)
	}
}

// TestReloadRefusesLifts: a reload by SIGHUP or the admin call (and the
// watch) of a file cut short mid-key is refused and counted; forced, it is
// applied, each lift logged at WARN.
func TestReloadRefusesLifts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(appPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, path, 0)
	if err := os.WriteFile(path, []byte(cutPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, trigger := range []string{"sighup", "admin"} {
		applied, err := f.r.Reload(trigger)
		var lifts *LiftsError
		if applied || !errors.As(err, &lifts) || len(lifts.Lifts) != 2 {
			t.Fatalf("%s reload of a cut file: applied %v, err %v", trigger, applied, err)
		}
	}
	if n := f.metric(t, ReloadRefused); n != 2 || f.count() != 1 {
		t.Fatalf("refused = %v, applied %d; want 2 refused and only the first policy", n, f.count())
	}
	if !strings.Contains(f.log.String(), "level=WARN msg=\"policy reload would lift a limit\"") {
		t.Fatalf("no WARN line per lift:\n%s", f.log.String())
	}
	if st := f.r.Status(); !strings.Contains(st.LastError, "lifts limits") {
		t.Fatalf("status: %+v", st)
	}
	applied, err := f.r.ReloadWith("admin", true)
	if !applied || err != nil || f.count() != 2 || f.metric(t, ReloadForced) != 1 {
		t.Fatalf("forced reload: applied %v err %v count %d", applied, err, f.count())
	}
}

// TestReloadSettles: a SIGHUP or admin reload waits until the file stops
// changing rather than read a write in progress.
func TestReloadSettles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(policyWithRPM(5)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, path, 0)
	full := policyWithRPM(7)
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		// A slow writer: a few bytes every 30 ms (the read must wait for
		// the whole file; half of it is "tiers:\n  t:" and no keys).
		defer close(done)
		for i := 0; i < len(full); i += 8 {
			_, _ = fh.WriteString(full[i:min(i+8, len(full))])
			time.Sleep(30 * time.Millisecond)
		}
		_ = fh.Close()
	}()
	time.Sleep(40 * time.Millisecond)
	applied, err := f.r.Reload("sighup")
	<-done
	if err != nil || !applied || rpmOf(f.last()) != 7 {
		t.Fatalf("reload during a slow write: applied %v err %v", applied, err)
	}
}
