package proxy

import "testing"

func TestPathProblem(t *testing.T) {
	bad := []string{
		"/v1/%252e%252e/admin", "/v1/%2e%2e/x", "/v1/%2E%2E/x", "/v1/files/%2e", "/v1/.%2e/x",
		"/v1/files%3Fpurpose=x", "/v1/files%3fx", "/v1/a%23b", "/v1/a%00b", "/v1/a%0d%0ab", "/v1/a%7f",
		"/v1/./files", "/v1/../admin", "/v1/files/..", "/v1/files/.", "/v1/a%5c..%5cb", "/v1/a\\b",
		"/v1/a%zz", "/v1/a%2", "/v1/a%", "http://h/v1/%2e%2e/x", "/v1/a\x01b", "/v1/a#b",
	}
	for _, raw := range bad {
		if why := pathProblem([]byte(raw), []byte("/v1/x")); why == "" {
			t.Errorf("pathProblem(%q) = \"\", want a refusal", raw)
		}
	}
	good := []string{
		"/v1/chat/completions", "/v1/chat/completions/", "/v1/models/ft:gpt-4o:org:x", "/v1/models/meta-llama%2FLlama-3",
		"/v1/files?purpose=a%2e%2e%3F", "/v1/files/file-abc.jsonl", "/v1/.well/x", "/v1/a...b", "http://h/v1/models",
		"/v1/models/caf%C3%A9",
	}
	for _, raw := range good {
		if why := pathProblem([]byte(raw), []byte("/v1/x")); why != "" {
			t.Errorf("pathProblem(%q) = %q, want none", raw, why)
		}
	}
	// The decoded path is checked too.
	if pathProblem([]byte("/v1/x"), []byte("/v1/a%2e")) == "" {
		t.Error("a '%' in the decoded path must be refused")
	}
}

func TestClassifyTrailingSlash(t *testing.T) {
	for path, want := range map[string]endpoint{
		"/v1/chat/completions/":  epChat,
		"/v1/chat/completions//": epChat,
		"/v1/embeddings/":        epEmbeddings,
		"/v1/responses/":         epResponses,
		"/v1/models/":            epModels,
		"/v1/models/gpt-4o/":     epModel,
		"/v1/files/":             epPassthrough,
		"/v1/":                   epPassthrough,
		"/v2/chat/completions/":  epUnknown,
	} {
		if got := classify([]byte(path)); got != want {
			t.Errorf("classify(%q) = %s, want %s", path, endpointLabels[got], endpointLabels[want])
		}
	}
}

func TestStoredObjectPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/v1/files": true, "/v1/files/file-1/content": true, "/v1/batches": true, "/v1/vector_stores/vs/files": true,
		"/v1/responses/resp_1": true, "/v1/responses/resp_1/input_items": true, "/v1/chat/completions/c1": true,
		"/v1/fine_tuning/jobs": true, "/v1/uploads/u/parts": true,
		"/v1/filesystem": false, "/v1/audio/speech": false, "/v1/images/generations": false,
		"/v1/moderations": false, "/v1/responses": false,
	} {
		if got := storedObjectPath([]byte(path)); got != want {
			t.Errorf("storedObjectPath(%q) = %v, want %v", path, got, want)
		}
	}
}
