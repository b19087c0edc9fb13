package fakeai

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"testing"
)

// upload posts content as a file and returns the file's id.
func upload(t *testing.T, base, purpose, content string) string {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", purpose)
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	_, _ = fw.Write([]byte(content))
	_ = mw.Close()
	resp, b := do(t, http.MethodPost, base+"/files", buf.String(), "Content-Type", mw.FormDataContentType())
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %s", resp.StatusCode, b)
	}
	return decodeJSON(t, b)["id"].(string)
}

func TestStoredObjects(t *testing.T) {
	_, base := startServer(t, Config{})
	a := upload(t, base, "batch", "line a\n")
	b := upload(t, base, "batch", "line b\n")
	resp, body := do(t, http.MethodGet, base+"/files?limit=1", "")
	m := decodeJSON(t, body)
	if resp.StatusCode != 200 || jpath(t, m, "data", 0, "id") != b || m["has_more"] != true || m["last_id"] != b {
		t.Fatalf("newest-first page of one: %d %s", resp.StatusCode, body)
	}
	_, body = do(t, http.MethodGet, base+"/files?limit=1&after="+b, "")
	if m := decodeJSON(t, body); jpath(t, m, "data", 0, "id") != a || m["has_more"] != false {
		t.Fatalf("second page: %s", body)
	}
	if resp, body := do(t, http.MethodGet, base+"/files/"+a+"/content", ""); resp.StatusCode != 200 || string(body) != "line a\n" {
		t.Fatalf("content: %d %q", resp.StatusCode, body)
	}
	if resp, body := do(t, http.MethodDelete, base+"/files/"+a, ""); resp.StatusCode != 200 || decodeJSON(t, body)["deleted"] != true {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, http.MethodGet, base+"/files/"+a, "")
	if e := wantError(t, resp, body, 404, "invalid_request_error", ""); e["message"] != "No such File object: "+a || e["param"] != "id" {
		t.Fatalf("deleted file: %s", body)
	}

	resp, body = post(t, base+"/batches", `{"input_file_id":"`+b+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
	bm := decodeJSON(t, body)
	if resp.StatusCode != 200 || bm["status"] != "completed" || bm["output_file_id"] == nil {
		t.Fatalf("batch: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, http.MethodGet, base+"/files/"+bm["output_file_id"].(string), ""); resp.StatusCode != 200 {
		t.Fatalf("the batch's output file: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, base+"/batches", `{"input_file_id":"file-nope","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
	wantError(t, resp, body, 400, "invalid_request_error", "")
	if resp, body := do(t, http.MethodGet, base+"/batches/"+bm["id"].(string), ""); resp.StatusCode != 200 {
		t.Fatalf("get batch: %d %s", resp.StatusCode, body)
	}
	resp, body = post(t, base+"/fine_tuning/jobs", `{"model":"gpt-4o-mini","training_file":"`+b+`"}`)
	jm := decodeJSON(t, body)
	if resp.StatusCode != 200 || jm["fine_tuned_model"] == nil {
		t.Fatalf("job: %d %s", resp.StatusCode, body)
	}
	model := jm["fine_tuned_model"].(string)
	if _, body := do(t, http.MethodGet, base+"/models", ""); !bytes.Contains(body, []byte(`"`+model+`"`)) {
		t.Fatalf("the model listing lacks %s: %s", model, body)
	}
	if resp, body := do(t, http.MethodDelete, base+"/models/"+model, ""); resp.StatusCode != 200 || decodeJSON(t, body)["deleted"] != true {
		t.Fatalf("delete %s: %d %s", model, resp.StatusCode, body)
	}
	resp, body = do(t, http.MethodGet, base+"/models/"+model, "")
	wantError(t, resp, body, 404, "invalid_request_error", "model_not_found")
	if resp, body := do(t, http.MethodGet, base+"/fine_tuning/jobs", ""); resp.StatusCode != 200 || len(jpath(t, decodeJSON(t, body), "data").([]any)) != 1 {
		t.Fatalf("jobs list: %d %s", resp.StatusCode, body)
	}
}
