package policy

import (
	"strings"
	"testing"
)

// TestKeyProject: a key's project makes it a key of its own provider
// project, allowed the stored-object endpoints; stored_objects allows them
// without one; a project that cannot be a header value is refused.
func TestKeyProject(t *testing.T) {
	doc := func(extra string) string {
		return "tiers: {t: {}}\nkeys:\n  - id: k\n    user: u\n    tier: t\n    sha256: " + HashKey("sk-k") + "\n" + extra
	}
	f := func(extra string, project string, stored bool) {
		t.Helper()
		p, err := Parse("p.yaml", []byte(doc(extra)), nil)
		if err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
		k, _ := p.Identify([]byte("sk-k"))
		if k.Project != project || k.StoredObjects != stored {
			t.Fatalf("%q: project %q stored %v; want %q %v", extra, k.Project, k.StoredObjects, project, stored)
		}
	}
	f("", "", false)
	f("    project: proj_1\n", "proj_1", true)
	f("    stored_objects: true\n", "", true)
	_, err := Parse("p.yaml", []byte(doc("    project: \"proj\\u00e9\"\n")), nil)
	if err == nil || !strings.Contains(err.Error(), "keys[0].project") {
		t.Fatalf("a non-ASCII project: %v; want an error naming keys[0].project", err)
	}
}
