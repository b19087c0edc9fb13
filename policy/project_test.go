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

// TestKeyAllowLists: endpoints and models allow-lists, exact or by prefix;
// empty allows everything; a malformed pattern is refused.
func TestKeyAllowLists(t *testing.T) {
	k := &Key{Endpoints: []string{"/v1/chat/completions", "/v1/audio/*"}, Models: []string{"gpt-4o*", "text-embedding-3-small"}}
	for path, want := range map[string]bool{"/v1/chat/completions": true, "/v1/audio/speech": true,
		"/v1/embeddings": false, "/v1/chat/completions/x": false, "/v1/files": false} {
		if got := k.AllowsPath([]byte(path)); got != want {
			t.Errorf("AllowsPath(%q) = %v, want %v", path, got, want)
		}
	}
	for model, want := range map[string]bool{"gpt-4o": true, "gpt-4o-mini": true, "text-embedding-3-small": true,
		"text-embedding-3-large": false, "o3": false} {
		if got := k.AllowsModel(model); got != want {
			t.Errorf("AllowsModel(%q) = %v, want %v", model, got, want)
		}
	}
	if all := (&Key{}); !all.AllowsPath([]byte("/v1/files")) || !all.AllowsModel("o3") {
		t.Error("a key without allow-lists is refused something")
	}
	doc := "tiers: {t: {}}\nkeys:\n  - id: k\n    user: u\n    tier: t\n    sha256: " + HashKey("sk-k") +
		"\n    endpoints: [chat/completions, \"/v1/a*b\"]\n    models: [\"\", \"g*p\"]\n"
	_, err := Parse("p.yaml", []byte(doc), nil)
	for _, want := range []string{"keys[0].endpoints[0]", "keys[0].endpoints[1]", "keys[0].models[0]", "keys[0].models[1]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("malformed allow-lists: %v; want an error naming %s", err, want)
		}
	}
}
