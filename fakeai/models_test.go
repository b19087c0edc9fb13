package fakeai

import (
	"net/http"
	"testing"
)

func TestModels(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := do(t, http.MethodGet, base+"/models", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	m := decodeJSON(t, body)
	if m["object"] != "list" {
		t.Fatalf("object %v", m["object"])
	}
	ids := map[string]bool{}
	for i := range m["data"].([]any) {
		if jpath(t, m, "data", i, "object") != "model" {
			t.Fatalf("entry %d: %s", i, body)
		}
		ids[jpath(t, m, "data", i, "id").(string)] = true
	}
	for _, id := range []string{"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-3.5-turbo-instruct"} {
		if !ids[id] {
			t.Fatalf("%s not listed", id)
		}
	}

	for _, id := range []string{"gpt-4o-mini", "gpt-5-preview", "text-whatever", "o3"} {
		resp, body := do(t, http.MethodGet, base+"/models/"+id, "")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d: %s", id, resp.StatusCode, body)
		}
		m := decodeJSON(t, body)
		if m["id"] != id || m["object"] != "model" || m["owned_by"] == nil || m["created"] == nil {
			t.Fatalf("%s: %s", id, body)
		}
	}

	resp, body = do(t, http.MethodGet, base+"/models/claude-3", "")
	e := wantError(t, resp, body, 404, "invalid_request_error", "model_not_found")
	if e["param"] != "model" {
		t.Fatalf("param %v", e["param"])
	}
}
