package e2e

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// jsonlRecords reads every transcript line in dir.
func jsonlRecords(t *testing.T, dir string) []map[string]any {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "transcripts-*.jsonl"))
	var out []map[string]any
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			out = append(out, m)
		}
		_ = f.Close()
	}
	return out
}

// TestTranscriptsJSONLDefault runs sluice without ClickHouse: transcripts go
// to JSONL files, secrets are redacted before they are written, the admin
// endpoint reads them back, and metadata mode keeps no content.
func TestTranscriptsJSONLDefault(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	for _, content := range []string{"full", "metadata"} {
		t.Run(content, func(t *testing.T) {
			dir := t.TempDir()
			cfg := strings.Replace(makeConfig(configOptions{}), "  shutdown_timeout: 10s\n",
				"  shutdown_timeout: 10s\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1) +
				"transcripts:\n  content: " + content + "\n  flush_interval: 50ms\n  jsonl:\n    dir: " + dir + "\n"
			s := startSluice(t, sluiceOptions{Config: cfg, Policies: trustedPolicies(), BaseURL: f.URL,
				Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}})
			client := s.client(appKey)
			ctx := testContext(t, 20*time.Second)
			secret := "sk-proj-" + nonce() + nonce() + nonce()
			prompt := "my key is " + secret + " please keep it"
			user := "jsonl-" + content
			var resp *http.Response
			c, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini,
				Messages: userMessages(prompt)}, option.WithHeader("X-Sluice-User", user), option.WithResponseInto(&resp))
			if err != nil {
				t.Fatal(err)
			}
			var recs []map[string]any
			if !waitFor(5*time.Second, func() bool { recs = jsonlRecords(t, dir); return len(recs) == 1 }) {
				t.Fatalf("%d JSONL records, want 1", len(recs))
			}
			r := recs[0]
			raw, _ := json.Marshal(r)
			if strings.Contains(string(raw), secret) {
				t.Fatalf("the secret reached the file: %s", raw)
			}
			if r["user"] != user || r["upstream_request_id"] != resp.Header.Get("X-Request-Id") || r["status"] != float64(200) ||
				r["total_tokens"] != float64(c.Usage.TotalTokens) {
				t.Fatalf("record: %s", raw)
			}
			switch content {
			case "full":
				if !strings.Contains(r["request"].(string), "[REDACTED:api_key]") || !strings.Contains(r["response"].(string), "[REDACTED:api_key]") {
					t.Fatalf("full content not kept redacted: %s", raw)
				}
			case "metadata":
				if r["request"] != "" || r["response"] != "" {
					t.Fatalf("metadata mode kept content: %s", raw)
				}
			}
			req, _ := http.NewRequest(http.MethodGet, s.AdminURL+"/admin/transcripts?user="+user, nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			hr, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(hr.Body)
			_ = hr.Body.Close()
			if hr.StatusCode != 200 || !strings.Contains(string(body), resp.Header.Get("X-Request-Id")) {
				t.Fatalf("/admin/transcripts: %d %s", hr.StatusCode, body)
			}
		})
	}
}
