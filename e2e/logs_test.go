package e2e

import (
	"encoding/json"
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
		Env: map[string]string{"SLUICE_LOG_FORMAT": "json", "SLUICE_LOG_LEVEL": "debug"}})
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
