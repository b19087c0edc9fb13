package e2e

import (
	"net/http"
	"strings"
	"testing"

	"sluice/fakeai"
)

// storedObjectsPolicy: "shared" runs in the upstream's project and may not
// touch stored objects; "own" has a provider project of its own; "allowed"
// shares the upstream's project but is allowed the endpoints.
func storedObjectsPolicy() string {
	return `tiers:
  default: {}
keys:
  - id: shared
    key_env: SLUICE_DEMO_KEY
    user: ua
    team: a
    tier: default
  - id: own
    sha256: ` + sha256Hex(appKey) + `
    user: ub
    team: b
    tier: default
    project: proj_team_b
  - id: allowed
    sha256: ` + sha256Hex(otherKey) + `
    user: uc
    team: c
    tier: default
    stored_objects: true
`
}

// otherKey is a third client key for tests that need one.
const otherKey = "sk-sluice-other-e2e-1a2b3c4d5e6f7a8b9c0d"

// TestSecurityStoredObjects: files, batches, stored responses, vector stores
// and fine-tuned models live at the provider under its key, so every key of
// one provider project could list, read and delete every other's (the
// review's finding 2). A key that shares the upstream's project gets a 403
// on those endpoints unless allowed; a key with a project of its own runs
// every call in it (OpenAI-Project, in place of the upstream's), so the
// provider keeps its objects apart.
func TestSecurityStoredObjects(t *testing.T) {
	fake := startFake(t, fakeai.Config{})
	relay := startRecordingRelay(t, fake.URL)
	s := startSluice(t, sluiceOptions{Config: makeConfig(configOptions{}), Policies: storedObjectsPolicy(), BaseURL: relay.URL})
	addr := strings.TrimPrefix(s.URL, "http://")
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/files"}, {"GET", "/v1/files/file-abc/content"}, {"DELETE", "/v1/files/file-abc"},
		{"GET", "/v1/responses/resp_abc"}, {"GET", "/v1/batches"}, {"GET", "/v1/vector_stores/vs_1"},
		{"DELETE", "/v1/models/ft:gpt-4o-mini:org::abc"}, {"GET", "/v1/chat/completions/chatcmpl-1"},
		{"GET", "/v1/fine_tuning/jobs"},
	} {
		st, body := rawRequest(t, addr, c.method, c.path, demoKey, "")
		if st != http.StatusForbidden || !strings.Contains(body, `"code":"stored_objects_forbidden"`) {
			t.Errorf("%s %s with a key sharing the project: %d %s; want 403 stored_objects_forbidden", c.method, c.path, st, body)
		}
	}
	if sent := relay.Sent(); sent != "" {
		t.Fatalf("refused stored-object calls reached the upstream:\n%s", sent)
	}
	// The same key's other calls pass.
	if st, body := rawRequest(t, addr, "GET", "/v1/models", demoKey, ""); st != 200 {
		t.Fatalf("GET /v1/models: %d %s", st, body)
	}
	chat := `{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	if st, body := rawRequest(t, addr, "POST", "/v1/chat/completions", demoKey, chat); st != 200 {
		t.Fatalf("chat: %d %s", st, body)
	}
	if sent := relay.Sent(); strings.Contains(strings.ToLower(sent), "openai-project") {
		t.Fatalf("a key without a project sent an OpenAI-Project header:\n%s", sent)
	}

	// A key with its own project: stored objects allowed, and every call,
	// chat included, goes out in that project.
	for _, path := range []string{"/v1/files", "/v1/batches"} {
		if st, body := rawRequest(t, addr, "GET", path, appKey, ""); st == http.StatusForbidden {
			t.Fatalf("GET %s with a project of its own: %d %s", path, st, body)
		}
	}
	if st, body := rawRequest(t, addr, "POST", "/v1/chat/completions", appKey, chat); st != 200 {
		t.Fatalf("chat with a project: %d %s", st, body)
	}
	if n := strings.Count(relay.Sent(), "Openai-Project: proj_team_b\r\n"); n != 3 {
		t.Fatalf("calls sent with OpenAI-Project proj_team_b: %d; want 3 (files, batches, chat)", n)
	}

	// stored_objects: true lets a key of the shared project through.
	if st, body := rawRequest(t, addr, "GET", "/v1/files", otherKey, ""); st == http.StatusForbidden {
		t.Fatalf("GET /v1/files with stored_objects: true: %d %s", st, body)
	}
}

// TestSecurityAllowLists: keys[].endpoints and keys[].models limit what a
// key may call and use; anything else is a 403 (a path) or the provider's
// own 404 model_not_found (a model), before anything goes upstream.
func TestSecurityAllowLists(t *testing.T) {
	policy := `tiers:
  default: {}
keys:
  - id: narrow
    key_env: SLUICE_DEMO_KEY
    user: u
    tier: default
    endpoints: ["/v1/chat/completions", "/v1/models*"]
    models: ["gpt-4o-mini"]
`
	fake := startFake(t, fakeai.Config{})
	relay := startRecordingRelay(t, fake.URL)
	s := startSluice(t, sluiceOptions{Config: makeConfig(configOptions{}), Policies: policy, BaseURL: relay.URL})
	addr := strings.TrimPrefix(s.URL, "http://")
	chat := func(model string) (int, string) {
		return rawRequest(t, addr, "POST", "/v1/chat/completions", demoKey,
			`{"model":"`+model+`","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	}
	if st, body := chat("gpt-4o"); st != http.StatusNotFound || !strings.Contains(body, `"code":"model_not_found"`) {
		t.Fatalf("a model outside the key's list: %d %s; want 404 model_not_found", st, body)
	}
	if st, body := rawRequest(t, addr, "POST", "/v1/embeddings", demoKey, `{"model":"gpt-4o-mini","input":"x"}`); st != http.StatusForbidden ||
		!strings.Contains(body, `"code":"endpoint_forbidden"`) {
		t.Fatalf("an endpoint outside the key's list: %d %s; want 403 endpoint_forbidden", st, body)
	}
	if st, _ := rawRequest(t, addr, "GET", "/v1/models/gpt-4o", demoKey, ""); st != http.StatusNotFound {
		t.Fatalf("GET /v1/models/gpt-4o outside the key's models: %d; want 404", st)
	}
	if sent := relay.Sent(); sent != "" {
		t.Fatalf("refused calls reached the upstream:\n%s", sent)
	}
	if st, body := chat("gpt-4o-mini"); st != 200 {
		t.Fatalf("the allowed model: %d %s", st, body)
	}
}
