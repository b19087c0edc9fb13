package policy

import (
	"strings"
	"testing"
)

func TestPlan(t *testing.T) {
	data := `
on_store_error: deny
replicas: 3
tiers:
  free:
    rpm: 10
    tpm: {limit: 10000, burst: 2000}
    concurrent: 2
    models:
      "gpt-4o*": {rpm: 2}
      "gpt-4o-mini": {rpm: 5}
  pro:
    rpm: 100
    tpd: 1000000
    default_max_tokens: 512
users:
  vip: {tier: pro, rpm: 1000}
keys:
  - id: app
    sha256: ` + HashKey("sk-app") + `
    trusted: true
    tier: pro
    user_tier: free
    limits: {concurrent: 4}
    app_limits: {rpm: 500}
    end_users:
      gold: {tier: pro, rpm: 1000}
  - id: vip
    sha256: ` + HashKey("sk-vip") + `
    user: vip
    tier: free
  - id: alice
    sha256: ` + HashKey("sk-alice") + `
    user: alice
    tier: free
`
	p, err := Parse("policies.yaml", []byte(data), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if p.OnStoreError != StoreErrorDeny || p.Replicas != 3 {
		t.Fatalf("store error settings: %q %d", p.OnStoreError, p.Replicas)
	}
	app, _ := p.Identify([]byte("sk-app"))
	alice, _ := p.Identify([]byte("sk-alice"))

	// An end user of the app key: user_tier, key override, app budget, model budget.
	pr := p.Principal(app, "bob")
	if pr.Tier != "free" || !pr.EndUser {
		t.Fatalf("principal %+v", pr)
	}
	pl := p.Plan(pr, app, "gpt-4o-mini")
	want := Limits{RPM: Rate{Limit: 10}, TPM: Rate{Limit: 10000, Burst: 2000}, Concurrent: 4}
	if pl.User != want || pl.UserScope != "{app}k:app:u:bob" || pl.AppScope != "{app}k:app" || pl.App.RPM.Limit != 500 {
		t.Fatalf("plan %+v", pl)
	}
	if pl.Model == nil || pl.Model.Pattern != "gpt-4o-mini" || pl.Model.Limits.RPM.Limit != 5 {
		t.Fatalf("exact model pattern must win over the prefix: %+v", pl.Model)
	}
	if pl := p.Plan(pr, app, "gpt-4o-2024"); pl.Model == nil || pl.Model.Pattern != "gpt-4o*" {
		t.Fatalf("prefix model pattern: %+v", pl.Model)
	}
	if pl := p.Plan(pr, app, "o3"); pl.Model != nil {
		t.Fatalf("no model pattern should match o3: %+v", pl.Model)
	}
	if pl.Tier.DefaultMaxTokens != DefaultMaxTokens {
		t.Fatalf("default_max_tokens default: %d", pl.Tier.DefaultMaxTokens)
	}

	// The users section moves vip to pro and raises its rpm, for vip's own
	// (personal) key.
	vip, _ := p.Identify([]byte("sk-vip"))
	pr = p.Principal(vip, "")
	pl = p.Plan(pr, vip, "gpt-4o")
	if pr.Tier != "pro" || pl.User.RPM.Limit != 1000 || pl.User.TPD.Limit != 1000000 || pl.Tier.DefaultMaxTokens != 512 {
		t.Fatalf("vip: %+v %+v", pr, pl)
	}
	// An app's end user who calls itself vip gets the app's user_tier, not
	// vip's entry: an app may pass on names its users choose.
	pr = p.Principal(app, "vip")
	pl = p.Plan(pr, app, "gpt-4o")
	if pr.Tier != "free" || pl.User.RPM.Limit != 10 || pl.UserScope != "{app}k:app:u:vip" {
		t.Fatalf("end user vip borrowed the users entry: %+v %+v", pr, pl)
	}
	// The app's own end_users entry applies to its end user gold.
	pr = p.Principal(app, "gold")
	pl = p.Plan(pr, app, "gpt-4o")
	if pr.Tier != "pro" || pl.User.RPM.Limit != 1000 {
		t.Fatalf("end user gold: %+v %+v", pr, pl)
	}
	// ...and to no one else's: gold with a personal key named gold has none.
	if p.UnmatchedUsers != nil {
		t.Fatalf("unmatched users: %v", p.UnmatchedUsers)
	}
	// A name with the bucket key's separator is escaped: it cannot reach
	// another user's per-model bucket.
	pr = p.Principal(app, "frank:m:gpt-4o*")
	if pl = p.Plan(pr, app, "gpt-4o"); pl.UserScope != "{app}k:app:u:frank%3Am%3Agpt-4o*" {
		t.Fatalf("escaped scope: %q", pl.UserScope)
	}
	// A personal key: its own user, unscoped by key.
	pr = p.Principal(alice, "mallory")
	pl = p.Plan(pr, alice, "gpt-4o")
	if pr.User != "alice" || pl.UserScope != "{alice}u:alice" || pl.App.IsZero() == false {
		t.Fatalf("alice: %+v %+v", pr, pl)
	}
	if pl.User.RPM.burst() != 10 || pl.User.TPM.burst() != 2000 {
		t.Fatalf("bursts: %d %d", pl.User.RPM.burst(), pl.User.TPM.burst())
	}
}

func TestEscapeKeyPart(t *testing.T) {
	for in, want := range map[string]string{
		"alice": "alice", "": "", "frank:m:gpt-4o*": "frank%3Am%3Agpt-4o*", "50%": "50%25",
		"{tag}": "%7Btag%7D", "a%3Ab": "a%253Ab",
	} {
		if got := EscapeKeyPart(in); got != want {
			t.Errorf("EscapeKeyPart(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = EscapeKeyPart("plain-user") }); n != 0 {
		t.Fatalf("EscapeKeyPart allocates %v times for a plain name", n)
	}
}

func TestEndUsersValidation(t *testing.T) {
	_, err := Parse("p.yaml", []byte(`
tiers: {t: {}}
keys:
  - id: me
    sha256: `+HashKey("sk-me")+`
    user: me
    tier: t
    end_users: {bob: {tier: t}}
  - id: app
    sha256: `+HashKey("sk-app")+`
    trusted: true
    tier: t
    end_users: {bob: {tier: nope}}
`), env(nil))
	if err == nil || !strings.Contains(err.Error(), "keys[0].end_users") || !strings.Contains(err.Error(), "only a trusted key") ||
		!strings.Contains(err.Error(), "keys[1].end_users.bob.tier") {
		t.Fatalf("err = %v", err)
	}
}
