package policy

import (
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
	if pl.User != want || pl.UserScope != "k:app:u:bob" || pl.AppScope != "k:app" || pl.App.RPM.Limit != 500 {
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

	// The users section moves vip to pro and raises its rpm, for any key.
	pr = p.Principal(app, "vip")
	pl = p.Plan(pr, app, "gpt-4o")
	if pr.Tier != "pro" || pl.User.RPM.Limit != 1000 || pl.User.TPD.Limit != 1000000 || pl.Tier.DefaultMaxTokens != 512 {
		t.Fatalf("vip: %+v %+v", pr, pl)
	}
	// A personal key: its own user, unscoped by key.
	pr = p.Principal(alice, "mallory")
	pl = p.Plan(pr, alice, "gpt-4o")
	if pr.User != "alice" || pl.UserScope != "u:alice" || pl.App.IsZero() == false {
		t.Fatalf("alice: %+v %+v", pr, pl)
	}
	if pl.User.RPM.burst() != 10 || pl.User.TPM.burst() != 2000 {
		t.Fatalf("bursts: %d %d", pl.User.RPM.burst(), pl.User.TPM.burst())
	}
}
