package policy

import (
	"strings"
	"testing"
)

// TestHashTagGroups: every key one request touches carries one Redis
// Cluster hash tag, its group's: a team with its users, teams joined by a
// user who has keys in both, and the same tag from every key of a user.
func TestHashTagGroups(t *testing.T) {
	data := `
tiers:
  free: {rpm: 10}
teams:
  research: {rpm: 100}
keys:
  - {id: a1, sha256: ` + HashKey("sk-a1") + `, user: alice, team: research, tier: free}
  - {id: a2, sha256: ` + HashKey("sk-a2") + `, user: alice, team: ops, tier: free}
  - {id: b1, sha256: ` + HashKey("sk-b1") + `, user: bob, team: ops, tier: free}
  - {id: c1, sha256: ` + HashKey("sk-c1") + `, user: carol, team: "x{y}:z", tier: free}
  - {id: d1, sha256: ` + HashKey("sk-d1") + `, user: dan, tier: free, trusted: true}
`
	p, err := Parse("p.yaml", []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	plan := func(id, endUser string) Plan {
		k, ok := p.KeyByID(id)
		if !ok {
			t.Fatalf("no key %s", id)
		}
		return p.Plan(p.Principal(k, endUser), k, "gpt-4o")
	}
	tag := func(s string) string {
		i, j := strings.IndexByte(s, '{'), strings.IndexByte(s, '}')
		if i != 0 || j < 0 {
			t.Fatalf("%q does not start with a hash tag", s)
		}
		return s[:j+1]
	}
	// alice joins research and ops: one group, tagged by its first team.
	for _, id := range []string{"a1", "a2", "b1"} {
		pl := plan(id, "")
		if id == "a1" && pl.TeamScope != "{ops}t:research" {
			t.Errorf("team scope %q", pl.TeamScope)
		}
		for _, s := range []string{pl.UserScope, pl.AppScope} {
			if tag(s) != "{ops}" {
				t.Errorf("key %s: scope %q, want tag {ops}", id, s)
			}
		}
	}
	if a1, a2 := plan("a1", ""), plan("a2", ""); a1.UserScope != a2.UserScope || a1.UserScope != "{ops}u:alice" {
		t.Errorf("alice's scope differs by key: %q %q", a1.UserScope, a2.UserScope)
	}
	// Braces in a name are escaped: the tag is the whole team name.
	if pl := plan("c1", ""); pl.UserScope != "{x%7By%7D%3Az}u:carol" {
		t.Errorf("escaped tag: %q", pl.UserScope)
	}
	// An end user of a trusted key shares the key's tag (the team defaults
	// to the user).
	if pl := plan("d1", "eve"); pl.UserScope != "{dan}k:d1:u:eve" || tag(pl.AppScope) != "{dan}" {
		t.Errorf("end user: %q %q", pl.UserScope, pl.AppScope)
	}
}
