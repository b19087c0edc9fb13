package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"mime/multipart"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
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

// TestOwnedRefs: a body naming another team's object is refused, however
// the name is spelled (JSON escapes) and in multipart forms too.
func TestOwnedRefs(t *testing.T) {
	o, err := newOwners(&Options{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{own: o, log: slog.New(slog.DiscardHandler)}
	_ = o.store.Own(context.Background(), "team:a", "file-a")
	_ = o.store.Own(context.Background(), "team:b", "file-b")
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	_ = mw.WriteField("file_id", "file-a")
	_ = mw.Close()
	for _, c := range []struct {
		name, ct, body string
		ok             bool
	}{
		{"own", "application/json", `{"input_file_id":"file-b"}`, true},
		{"other's", "application/json", `{"input_file_id":"file-a"}`, false},
		{"unrecorded", "application/json", `{"training_file":"file-x"}`, false},
		{"escaped key", "application/json", `{"input_file\u005fid":"file-a"}`, false},
		{"nested", "application/json", `{"input":[{"content":[{"type":"input_file","file_id":"file-a"}]}]}`, false},
		{"other's model", "application/json", `{"model":"ft:m:o::a","training_file":"file-b"}`, true}, // unrecorded model: allowed
		{"form", mw.FormDataContentType(), form.String(), false},
		{"no refs", "application/json", `{"name":"file-a"}`, true},
	} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetContentType(c.ct)
		if got := s.ownedRefs(&ctx, "team:b", []byte(c.body)); got != c.ok {
			t.Errorf("%s: ownedRefs = %v; want %v (%d %s)", c.name, got, c.ok, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if !c.ok && ctx.Response.StatusCode() != 404 {
			t.Errorf("%s: status %d; want 404", c.name, ctx.Response.StatusCode())
		}
	}
	_ = o.store.Own(context.Background(), "team:a", "ft:m:o::a")
	var ctx fasthttp.RequestCtx
	if s.ownedRefs(&ctx, "team:b", []byte(`{"model":"ft:m:o::a","training_file":"file-b"}`)) ||
		!bytes.Contains(ctx.Response.Body(), []byte("model_not_found")) {
		t.Errorf("another team's recorded model: %d %s; want 404 model_not_found", ctx.Response.StatusCode(), ctx.Response.Body())
	}
}
