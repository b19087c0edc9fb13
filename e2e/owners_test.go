package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/fakeai"
)

// ownersPolicy: teams a and b share the upstream's provider project and
// may use the stored-object endpoints (owned mode); "solo" has no team.
func ownersPolicy() string {
	return `tiers:
  default: {}
keys:
  - id: a
    key_env: SLUICE_DEMO_KEY
    user: ua
    team: a
    tier: default
    stored_objects: true
  - id: b
    sha256: ` + sha256Hex(otherKey) + `
    user: ub
    team: b
    tier: default
    stored_objects: true
`
}

// uploadThrough posts a file through Sluice with key and returns the
// status and answer.
func uploadThrough(t *testing.T, base, key, content string) (int, map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	_, _ = fw.Write([]byte(content))
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+key)
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// listIDs returns the ids of a list answer's data.
func listIDs(t *testing.T, body string) []string {
	t.Helper()
	var l struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &l); err != nil || l.Object != "list" {
		t.Fatalf("not a list: %s", body)
	}
	ids := make([]string, len(l.Data))
	for i, d := range l.Data {
		ids[i] = d.ID
	}
	return ids
}

// TestSecurityOwnedObjects: two teams share the provider project with
// stored_objects: true (the review's finding 2). Sluice records what each
// creates; team b cannot read, download, delete, list or reference team a's
// file, batch, stored response or fine-tuned model (404s in the provider's
// shape), and the recording relay shows none of b's refused calls reached
// the upstream. Team a reaches all of its own.
func TestSecurityOwnedObjects(t *testing.T) {
	fake := startFake(t, fakeai.Config{})
	relay := startRecordingRelay(t, fake.URL)
	s := startSluice(t, sluiceOptions{Config: makeConfig(configOptions{}), Policies: ownersPolicy(), BaseURL: relay.URL})
	addr := strings.TrimPrefix(s.URL, "http://")

	st, fa := uploadThrough(t, s.URL, demoKey, "team a's data\n")
	if st != 200 {
		t.Fatalf("team a uploads: %d %v", st, fa)
	}
	fileA := fa["id"].(string)
	st, fb := uploadThrough(t, s.URL, otherKey, "team b's data\n")
	if st != 200 {
		t.Fatalf("team b uploads: %d %v", st, fb)
	}
	fileB := fb["id"].(string)

	// Team a's own file: read, downloaded.
	if st, body := rawRequest(t, addr, "GET", "/v1/files/"+fileA, demoKey, ""); st != 200 || !strings.Contains(body, fileA) {
		t.Fatalf("team a reads its file: %d %s", st, body)
	}
	if st, body := rawRequest(t, addr, "GET", "/v1/files/"+fileA+"/content", demoKey, ""); st != 200 || body != "team a's data\n" {
		t.Fatalf("team a downloads its file: %d %q", st, body)
	}
	// Team a creates a batch (its output file comes with it) and a
	// fine-tuning job (its model comes with the job).
	st, body := rawRequest(t, addr, "POST", "/v1/batches", demoKey,
		`{"input_file_id":"`+fileA+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
	if st != 200 {
		t.Fatalf("team a's batch: %d %s", st, body)
	}
	var batch struct {
		ID           string `json:"id"`
		OutputFileID string `json:"output_file_id"`
	}
	_ = json.Unmarshal([]byte(body), &batch)
	if batch.ID == "" || batch.OutputFileID == "" {
		t.Fatalf("batch answer: %s", body)
	}
	if st, body := rawRequest(t, addr, "GET", "/v1/files/"+batch.OutputFileID, demoKey, ""); st != 200 {
		t.Fatalf("team a reads its batch's output file: %d %s", st, body)
	}
	st, body = rawRequest(t, addr, "POST", "/v1/fine_tuning/jobs", demoKey, `{"model":"gpt-4o-mini","training_file":"`+fileA+`"}`)
	if st != 200 {
		t.Fatalf("team a's fine-tuning job: %d %s", st, body)
	}
	var job struct {
		ID    string `json:"id"`
		Model string `json:"fine_tuned_model"`
	}
	_ = json.Unmarshal([]byte(body), &job)
	if st, body := rawRequest(t, addr, "GET", "/v1/fine_tuning/jobs/"+job.ID, demoKey, ""); st != 200 {
		t.Fatalf("team a reads its job: %d %s", st, body)
	}
	st, body = rawRequest(t, addr, "POST", "/v1/responses", demoKey, `{"model":"gpt-4o-mini","input":"hi","max_output_tokens":5}`)
	if st != 200 {
		t.Fatalf("team a's response: %d %s", st, body)
	}
	var resp struct{ ID string }
	_ = json.Unmarshal([]byte(body), &resp)
	// Stored chat completions, buffered and streamed.
	var chatIDs []string
	for _, stream := range []string{"false", "true"} {
		st, body = rawRequest(t, addr, "POST", "/v1/chat/completions", demoKey,
			`{"model":"gpt-4o-mini","store":true,"stream":`+stream+`,"max_tokens":5,"messages":[{"role":"user","content":"keep `+stream+`"}]}`)
		i := strings.Index(body, `"id":"chatcmpl-`)
		if st != 200 || i < 0 {
			t.Fatalf("team a's stored chat (stream %s): %d %s", stream, st, body)
		}
		rest := body[i+len(`"id":"`):]
		chatIDs = append(chatIDs, rest[:strings.IndexByte(rest, '"')])
	}

	// Team b: every access to team a's objects is a 404, never forwarded.
	before := len(relay.Sent())
	chatFT := `{"model":"` + job.Model + `","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	refused := 0
	for _, c := range []struct{ method, path, body, want string }{
		{"GET", "/v1/files/" + fileA, "", "No such File object: " + fileA},
		{"GET", "/v1/files/" + fileA + "/content", "", "No such File object: " + fileA},
		{"DELETE", "/v1/files/" + fileA, "", "No such File object: " + fileA},
		{"GET", "/v1/files/" + batch.OutputFileID + "/content", "", "No such File object"},
		{"GET", "/v1/batches/" + batch.ID, "", "No such Batch object: " + batch.ID},
		{"POST", "/v1/batches/" + batch.ID + "/cancel", "", "No such Batch object"},
		{"POST", "/v1/batches", `{"input_file_id":"` + fileA + `","endpoint":"/v1/chat/completions","completion_window":"24h"}`, "No such object: " + fileA},
		{"GET", "/v1/fine_tuning/jobs/" + job.ID, "", "No such FineTuningJob object"},
		{"GET", "/v1/responses/" + resp.ID, "", "No such Response object: " + resp.ID},
		{"POST", "/v1/responses", `{"model":"gpt-4o-mini","input":"hi","previous_response_id":"` + resp.ID + `"}`, "No such object: " + resp.ID},
		{"DELETE", "/v1/models/" + job.Model, "", `"code":"model_not_found"`},
		{"GET", "/v1/chat/completions/" + chatIDs[0], "", "No such ChatCompletion object: " + chatIDs[0]},
		{"GET", "/v1/chat/completions/" + chatIDs[1] + "/messages", "", "No such ChatCompletion object: " + chatIDs[1]},
		{"POST", "/v1/chat/completions", chatFT, `"code":"model_not_found"`},
	} {
		st, body := rawRequest(t, addr, c.method, c.path, otherKey, c.body)
		if st != http.StatusNotFound || !strings.Contains(body, c.want) || !strings.Contains(body, `"type":"invalid_request_error"`) {
			t.Errorf("team b: %s %s: %d %s; want 404 %q", c.method, c.path, st, body, c.want)
			continue
		}
		refused++
	}
	if sent := relay.Sent()[before:]; sent != "" {
		t.Fatalf("team b's refused calls reached the upstream:\n%s", sent)
	}
	t.Logf("team b: %d of 14 calls on team a's objects refused with 404, 0 bytes sent upstream", refused)

	// Lists: each team sees its own.
	st, body = rawRequest(t, addr, "GET", "/v1/files", otherKey, "")
	if ids := listIDs(t, body); st != 200 || len(ids) != 1 || ids[0] != fileB {
		t.Fatalf("team b lists files: %d %v; want only %s", st, ids, fileB)
	}
	st, body = rawRequest(t, addr, "GET", "/v1/files", demoKey, "")
	if ids := listIDs(t, body); st != 200 || len(ids) != 2 || strings.Contains(body, fileB) {
		t.Fatalf("team a lists files: %d %v; want its file and its batch's output", st, ids)
	}
	for _, path := range []string{"/v1/batches", "/v1/fine_tuning/jobs"} {
		st, body = rawRequest(t, addr, "GET", path, otherKey, "")
		if ids := listIDs(t, body); st != 200 || len(ids) != 0 {
			t.Fatalf("team b lists %s: %d %v; want none", path, st, ids)
		}
		st, body = rawRequest(t, addr, "GET", path, demoKey, "")
		if ids := listIDs(t, body); st != 200 || len(ids) != 1 {
			t.Fatalf("team a lists %s: %d %v; want its one", path, st, ids)
		}
	}
	// Page by page: the provider's cursor survives the filter.
	st, body = rawRequest(t, addr, "GET", "/v1/files?limit=1", otherKey, "")
	var page struct {
		Data    []any   `json:"data"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
		HasMore bool    `json:"has_more"`
	}
	_ = json.Unmarshal([]byte(body), &page)
	if st != 200 || len(page.Data) != 0 || !page.HasMore || page.FirstID != nil || page.LastID == nil {
		t.Fatalf("team b's first page of one (team a's newest file filtered out): %d %s", st, body)
	}

	// The model listing: team b's lacks team a's fine-tuned model.
	if st, body := rawRequest(t, addr, "GET", "/v1/models", otherKey, ""); st != 200 || strings.Contains(body, job.Model) ||
		!strings.Contains(body, `"gpt-4o-mini"`) {
		t.Fatalf("team b's model listing: %d %s; want without %s", st, body, job.Model)
	}
	if st, body := rawRequest(t, addr, "GET", "/v1/models", demoKey, ""); st != 200 || !strings.Contains(body, job.Model) {
		t.Fatalf("team a's model listing: %d %s; want with %s", st, body, job.Model)
	}

	// Team a still reaches its own, b's do not go upstream: a uses its
	// fine-tuned model, deletes its file.
	if st, body := rawRequest(t, addr, "POST", "/v1/chat/completions", demoKey, chatFT); st == http.StatusNotFound && strings.Contains(body, "Sluice") {
		t.Fatalf("team a's own fine-tuned model refused: %d %s", st, body)
	}
	if st, body := rawRequest(t, addr, "GET", "/v1/responses/"+resp.ID, demoKey, ""); st == 0 || !strings.Contains(relay.Sent(), "GET /v1/responses/"+resp.ID) {
		t.Fatalf("team a's response by id did not reach the upstream: %d %s", st, body)
	}
	for _, id := range chatIDs {
		rawRequest(t, addr, "GET", "/v1/chat/completions/"+id, demoKey, "")
		if !strings.Contains(relay.Sent(), "GET /v1/chat/completions/"+id) {
			t.Fatalf("team a's stored chat %s by id did not reach the upstream", id)
		}
	}
	if st, body := rawRequest(t, addr, "DELETE", "/v1/files/"+fileA, demoKey, ""); st != 200 || !strings.Contains(body, `"deleted":true`) {
		t.Fatalf("team a deletes its file: %d %s", st, body)
	}
	if st, body := rawRequest(t, addr, "DELETE", "/v1/models/"+job.Model, demoKey, ""); st != 200 || !strings.Contains(body, `"deleted":true`) {
		t.Fatalf("team a deletes its fine-tuned model: %d %s", st, body)
	}
	if st, _ := rawRequest(t, addr, "GET", "/v1/files/"+fileB, otherKey, ""); st != 200 {
		t.Fatalf("team b reads its own file: %d", st)
	}
}

// TestSecurityOwnedObjectsReplicas: two Sluice processes on one Redis
// share the owner records (a file made through one is team a's on the
// other, with a 30-day TTL), a streamed stored response is recorded from
// its first event, and when Redis is gone an owned-mode call is refused
// with 503 (fail closed, counted) without reaching the upstream.
func TestSecurityOwnedObjectsReplicas(t *testing.T) {
	rd := startRedis(t)
	fake := startFake(t, fakeai.Config{})
	relay := startRecordingRelay(t, fake.URL)
	prefix := "e2e-" + nonce() + ":"
	cfg := limitsConfig(rd.addr, prefix)
	r1 := startSluice(t, sluiceOptions{Config: cfg, Policies: ownersPolicy(), BaseURL: relay.URL})
	r2 := startSluice(t, sluiceOptions{Config: cfg, Policies: ownersPolicy(), BaseURL: relay.URL})
	a1, a2 := strings.TrimPrefix(r1.URL, "http://"), strings.TrimPrefix(r2.URL, "http://")

	st, fa := uploadThrough(t, r1.URL, demoKey, "made on replica 1\n")
	if st != 200 {
		t.Fatalf("upload on replica 1: %d %v", st, fa)
	}
	fileA := fa["id"].(string)
	if st, body := rawRequest(t, a2, "GET", "/v1/files/"+fileA, demoKey, ""); st != 200 {
		t.Fatalf("team a's file on replica 2: %d %s", st, body)
	}
	out, err := exec.Command("redis-cli", "-p", rd.port, "pttl", prefix+"own:"+fileA).Output()
	ttl, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || ttl < (30*24*time.Hour-time.Hour).Milliseconds() {
		t.Fatalf("the record's TTL in Redis: %q %v; want about 30 days", out, err)
	}

	// A streamed response is recorded from its response.created event.
	st, body := rawRequest(t, a1, "POST", "/v1/responses", demoKey, `{"model":"gpt-4o-mini","input":"hi","stream":true}`)
	i := strings.Index(body, `"id":"resp_`)
	if st != 200 || i < 0 {
		t.Fatalf("streamed response: %d %s", st, body)
	}
	respID := body[i+len(`"id":"`) : i+len(`"id":"`)+strings.Index(body[i+len(`"id":"`):], `"`)]
	before := len(relay.Sent())
	for _, p := range []string{"/v1/files/" + fileA, "/v1/responses/" + respID} {
		if st, body := rawRequest(t, a2, "GET", p, otherKey, ""); st != http.StatusNotFound {
			t.Fatalf("team b on replica 2: GET %s: %d %s; want 404", p, st, body)
		}
	}
	if sent := relay.Sent()[before:]; sent != "" {
		t.Fatalf("team b's refused calls reached the upstream:\n%s", sent)
	}
	rawRequest(t, a2, "GET", "/v1/responses/"+respID, demoKey, "")
	if !strings.Contains(relay.Sent()[before:], "GET /v1/responses/"+respID) {
		t.Fatal("team a's streamed response by id did not reach the upstream")
	}

	// Redis gone: refused, counted, nothing sent.
	rd.kill(t)
	before = len(relay.Sent())
	st, body = rawRequest(t, a1, "GET", "/v1/files/"+fileA, demoKey, "")
	if st != http.StatusServiceUnavailable || !strings.Contains(body, `"type":"server_error"`) {
		t.Fatalf("owned call with Redis down: %d %s; want 503", st, body)
	}
	if st, body := rawRequest(t, a1, "GET", "/v1/files", demoKey, ""); st != http.StatusServiceUnavailable {
		t.Fatalf("owned list with Redis down: %d %s; want 503", st, body)
	}
	if sent := relay.Sent()[before:]; strings.Contains(sent, "GET /v1/files/") {
		t.Fatalf("a call refused for the store reached the upstream:\n%s", sent)
	}
	if n := metricValue(t, r1, "sluice_stored_objects_store_errors_total"); n < 2 {
		t.Fatalf("sluice_stored_objects_store_errors_total = %v; want at least 2", n)
	}
}
