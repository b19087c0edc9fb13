package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseAndIdentify(t *testing.T) {
	data := `
tiers:
  default: {}
  pro: {description: paid}
keys:
  - id: alice-key
    sha256: ` + HashKey("sk-alice") + `
    user: alice
    team: red
    tier: pro
  - id: app
    key_env: APP_KEY
    team: acme
    tier: default
    trusted: true
  - id: unset
    key_env: NOT_SET
    user: bob
    tier: default
`
	p, err := Parse("policies.yaml", []byte(data), env(map[string]string{"APP_KEY": "sk-app"}))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(p.Skipped) != 1 || p.Skipped[0] != "unset" {
		t.Fatalf("Skipped = %v; want [unset]", p.Skipped)
	}
	k, ok := p.Identify([]byte("sk-alice"))
	if !ok || k.ID != "alice-key" {
		t.Fatalf("Identify(sk-alice) = %v, %v", k, ok)
	}
	if got := p.Principal(k, "mallory"); got != (Principal{KeyID: "alice-key", User: "alice", Team: "red", Tier: "pro"}) {
		t.Fatalf("an untrusted key named another user: %+v", got)
	}
	app, ok := p.Identify([]byte("sk-app"))
	if !ok {
		t.Fatal("the key_env key was not loaded")
	}
	if got := p.Principal(app, "end-user-7"); got.User != "end-user-7" || got.Team != "acme" || got.KeyID != "app" {
		t.Fatalf("trusted key principal = %+v", got)
	}
	if got := p.Principal(app, ""); got.User != "app" {
		t.Fatalf("trusted key without an end user = %+v; want user app", got)
	}
	for _, bad := range []string{"", "sk-alic", "sk-alice ", "SK-ALICE"} {
		if _, ok := p.Identify([]byte(bad)); ok {
			t.Fatalf("Identify(%q) matched", bad)
		}
	}
}

// TestBadPolicies runs every fixture in testdata/bad_*.yaml; the first line
// of each is a comment with the error it must produce.
func TestBadPolicies(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad_*.yaml")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		want := strings.TrimSpace(strings.TrimPrefix(first, "#"))
		_, err = Parse(name, data, env(map[string]string{"DUP": "sk-dup"}))
		if err == nil {
			t.Errorf("%s: expecting an error", name)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q; want it to contain %q", name, err, want)
		}
	}
}
