package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// TestAccessLogJSON: with the default log format (JSON) and access_log on,
// every request has one JSON line carrying its request id and the fields an
// operator needs, and no line holds the client's key, the upstream key or
// the message text.
func TestAccessLogJSON(t *testing.T) {
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: makeConfig(configOptions{accessLog: true}),
		Policies: accessLogPolicy(),
		Env:      map[string]string{"SLUICE_LOG_FORMAT": "json", "SLUICE_LOG_LEVEL": "debug"}})
	c := s.client(demoKey)
	ctx := testContext(t, 20*time.Second)
	secret := "my private question " + nonce()
	var resp *http.Response
	if _, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: userMessages(secret), MaxTokens: openai.Int(8),
	}, option.WithResponseInto(&resp)); err != nil {
		t.Fatal(err)
	}
	reqID := resp.Header.Get("X-Request-Id")
	if reqID == "" {
		t.Fatal("no X-Request-Id on the answer")
	}
	line := s.waitLogLine(2*time.Second, `"msg":"request"`, `"request_id":"`+reqID+`"`)
	if line == "" {
		t.Fatalf("no JSON access log line for request %s in:\n%s", reqID, s.Output())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("access log line is not JSON: %v: %s", err, line)
	}
	for _, k := range []string{"time", "level", "msg", "request_id", "route", "status", "duration_ms", "key_id", "user", "model", "client_gone"} {
		if _, ok := m[k]; !ok {
			t.Errorf("access log line without %q: %s", k, line)
		}
	}
	if m["route"] != "chat_completions" || m["status"] != float64(200) || m["key_id"] != "demo" || m["model"] != "gpt-4o-mini" {
		t.Errorf("access log line %v", m)
	}
	// Method, client, upstream, sizes, tokens, cache and tier.
	client, _ := m["client"].(string)
	if m["method"] != "POST" || !strings.HasPrefix(client, "127.0.0.1:") || m["upstream"] != "openai" || m["tier"] != "users" ||
		logNum(m["bytes_in"]) <= 0 || logNum(m["bytes_out"]) <= 0 || logNum(m["prompt_tokens"]) <= 0 || logNum(m["completion_tokens"]) <= 0 ||
		m["cache"] == nil || m["limited_by"] != nil {
		t.Errorf("access log line lacks a field or has a wrong one: %s", line)
	}

	// A 429 of admission says whose limit and which.
	tight := s.client(appKey)
	var codes []int
	for i := 0; i < 3; i++ {
		var r *http.Response
		_, err := tight.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: userMessages("x")},
			option.WithResponseInto(&r), option.WithMaxRetries(0))
		codes = append(codes, r.StatusCode)
		if r.StatusCode == 429 {
			line := s.waitLogLine(2*time.Second, `"msg":"request"`, `"request_id":"`+r.Header.Get("X-Request-Id")+`"`)
			if !strings.Contains(line, `"status":429`) || !strings.Contains(line, `"limited_by":"user"`) || !strings.Contains(line, `"limit":"rpm"`) {
				t.Errorf("429 access log line without its reason: %s", line)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if codes[len(codes)-1] != 429 {
		t.Fatalf("no 429 from a tier of rpm 1: %v", codes)
	}
	// Every line the process wrote is JSON, and none carries a key or the
	// prompt.
	for _, l := range strings.Split(strings.TrimSpace(s.Output()), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("log line is not JSON: %s", l)
		}
		for _, leak := range []string{demoKey, upstreamKey, secret} {
			if strings.Contains(l, leak) {
				t.Errorf("log line holds %q: %s", leak, l)
			}
		}
	}
}

func logNum(v any) float64 { f, _ := v.(float64); return f }

// accessLogPolicy: demo may wait; the app key's tier allows one request a
// minute and never waits.
func accessLogPolicy() string {
	return fmt.Sprintf(`
tiers:
  users:
    max_wait: 10s
  tight:
    rpm: 1
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: users
  - id: tight
    sha256: %s
    user: tight-user
    tier: tight
`, sha256Hex(appKey))
}
