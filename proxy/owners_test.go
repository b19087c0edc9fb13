package proxy

import (
	"sort"
	"strings"
	"testing"
)

func TestParseObjectPath(t *testing.T) {
	for _, c := range []struct {
		path, kind, id string
		coll, derived  bool
		free           bool
	}{
		{path: "/v1/files", kind: "File", coll: true},
		{path: "/v1/files/file-1", kind: "File", id: "file-1"},
		{path: "/v1/files/file-1/content", kind: "File", id: "file-1"},
		{path: "/v1/batches/batch_1/cancel", kind: "Batch", id: "batch_1", derived: true},
		{path: "/v1/fine_tuning/jobs", kind: "FineTuningJob", coll: true, derived: true},
		{path: "/v1/fine_tuning/jobs/ftjob-1", kind: "FineTuningJob", id: "ftjob-1", derived: true},
		{path: "/v1/fine_tuning/checkpoints/ft:x:ckpt/permissions", kind: "Checkpoint", id: "ft:x:ckpt"},
		{path: "/v1/fine_tuning/alpha/graders/run", free: true},
		{path: "/v1/chat/completions/chatcmpl-1/messages", kind: "ChatCompletion", id: "chatcmpl-1"},
		{path: "/v1/responses/resp_1", kind: "Response", id: "resp_1"},
		{path: "/v1/threads/runs", kind: "Thread", coll: true},
		{path: "/v1/uploads/upload_1/complete", kind: "Upload", id: "upload_1", derived: true},
		{path: "/v1/vector_stores/vs_1/files", kind: "VectorStore", id: "vs_1"},
	} {
		if !storedObjectPath([]byte(c.path)) {
			t.Errorf("%s is not a stored-object path", c.path)
		}
		p := parseObjectPath([]byte(c.path))
		if p.kind != c.kind || p.id != c.id || p.collection != c.coll || p.derived != c.derived || p.free != c.free {
			t.Errorf("%s: %+v", c.path, p)
		}
	}
}

func TestCollectRefs(t *testing.T) {
	var v any = map[string]any{
		"input_file_id": "file-a", "model": "ft:gpt-4o-mini:org::x",
		"tools": []any{map[string]any{"type": "file_search", "vector_store_ids": []any{"vs_1", "vs_2"}}},
		"input": []any{map[string]any{"content": []any{map[string]any{"type": "input_file", "file_id": "file-b"}}}},
		"name":  "file-c", // not a reference field
	}
	var ids, models []string
	collectRefs(v, "", &ids, &models)
	sort.Strings(ids)
	if got := strings.Join(ids, ","); got != "file-a,file-b,vs_1,vs_2" {
		t.Errorf("ids %s", got)
	}
	if len(models) != 1 || models[0] != "ft:gpt-4o-mini:org::x" {
		t.Errorf("models %v", models)
	}
}
