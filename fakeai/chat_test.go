package fakeai

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestChatCompletion(t *testing.T) {
	s, base := startServer(t, Config{})
	resp, body := post(t, base+"/chat/completions", `{"model":"gpt-4o-mini","messages":[
		{"role":"system","content":"be brief"},
		{"role":"user","content":"first question"},
		{"role":"assistant","content":"echo: first question"},
		{"role":"user","content":[{"type":"text","text":"second"},{"type":"text","text":"question"}]}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	m := decodeJSON(t, body)
	if id, _ := m["id"].(string); !strings.HasPrefix(id, "chatcmpl-") {
		t.Fatalf("id = %q", id)
	}
	if m["object"] != "chat.completion" || m["model"] != "gpt-4o-mini" {
		t.Fatalf("object/model: %s", body)
	}
	if c, _ := m["created"].(float64); c < 1.7e9 {
		t.Fatalf("created = %v", m["created"])
	}
	choices := m["choices"].([]any)
	if len(choices) != 1 {
		t.Fatalf("%d choices", len(choices))
	}
	if got := jpath(t, m, "choices", 0, "message", "role"); got != "assistant" {
		t.Fatalf("role = %v", got)
	}
	if got := jpath(t, m, "choices", 0, "message", "content"); got != "echo: second question" {
		t.Fatalf("content = %q", got)
	}
	if got := jpath(t, m, "choices", 0, "finish_reason"); got != "stop" {
		t.Fatalf("finish_reason = %v", got)
	}
	// prompt: 2 + 2 + 3 + 2 words; completion: "echo: second question".
	u := m["usage"].(map[string]any)
	if u["prompt_tokens"] != 9.0 || u["completion_tokens"] != 3.0 || u["total_tokens"] != 12.0 {
		t.Fatalf("usage = %v", u)
	}
	st := s.Stats()
	if st.Requests != 1 || st.PromptTokens != 9 || st.CompletionTokens != 3 || st.Streams != 0 || st.Errors != 0 {
		t.Fatalf("stats = %+v", st)
	}
	if st.ByPath["/v1/chat/completions"] != 1 {
		t.Fatalf("ByPath = %v", st.ByPath)
	}
}

func TestChatChoicesAndTruncation(t *testing.T) {
	_, base := startServer(t, Config{})
	_, body := post(t, base+"/chat/completions",
		`{"model":"m","n":3,"max_completion_tokens":2,"messages":[{"role":"user","content":"one two three"}]}`)
	m := decodeJSON(t, body)
	choices := m["choices"].([]any)
	if len(choices) != 3 {
		t.Fatalf("%d choices, want 3", len(choices))
	}
	for i := range choices {
		if got := jpath(t, m, "choices", i, "index"); got != float64(i) {
			t.Fatalf("index = %v, want %d", got, i)
		}
		if got := jpath(t, m, "choices", i, "message", "content"); got != "echo: one" {
			t.Fatalf("content = %q", got)
		}
		if got := jpath(t, m, "choices", i, "finish_reason"); got != "length" {
			t.Fatalf("finish_reason = %v", got)
		}
	}
	if got := jpath(t, m, "usage", "completion_tokens"); got != 6.0 {
		t.Fatalf("completion_tokens = %v, want 6", got)
	}

	// max_tokens that is not reached keeps finish_reason "stop".
	_, body = post(t, base+"/chat/completions",
		`{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"one two"}]}`)
	m = decodeJSON(t, body)
	if jpath(t, m, "choices", 0, "finish_reason") != "stop" || jpath(t, m, "choices", 0, "message", "content") != "echo: one two" {
		t.Fatalf("untruncated: %s", body)
	}
}

// chatChunkJSON is what a client reads from a chat stream.
type chatChunkJSON struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func TestChatStreamIncludeUsage(t *testing.T) {
	s, base := startServer(t, Config{Chunks: 4})
	resp, body := post(t, base+"/chat/completions", `{"model":"gpt-4o","stream":true,
		"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"tell me a story"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type = %q", ct)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Fatal("no x-request-id on stream")
	}
	events := parseSSE(t, body)
	// role + 4 content + finish + usage + [DONE]
	if len(events) != 8 {
		t.Fatalf("%d events, want 8:\n%s", len(events), body)
	}
	if events[7].Data != "[DONE]" {
		t.Fatalf("last event %q, want [DONE]", events[7].Data)
	}
	var text strings.Builder
	var id string
	for i, ev := range events[:7] {
		if ev.Name != "" {
			t.Fatalf("chat events have no name, got %q", ev.Name)
		}
		// Every chunk carries "usage" (null but the last) when include_usage is set.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(ev.Data), &raw); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if _, ok := raw["usage"]; !ok {
			t.Fatalf("event %d has no usage field: %s", i, ev.Data)
		}
		var ch chatChunkJSON
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ch.Object != "chat.completion.chunk" || ch.Model != "gpt-4o" || !strings.HasPrefix(ch.ID, "chatcmpl-") {
			t.Fatalf("event %d: %s", i, ev.Data)
		}
		if id == "" {
			id = ch.ID
		} else if ch.ID != id {
			t.Fatalf("id changed: %s vs %s", ch.ID, id)
		}
		switch {
		case i == 0:
			if ch.Choices[0].Delta.Role != "assistant" || ch.Usage != nil || ch.Choices[0].FinishReason != nil {
				t.Fatalf("first chunk: %s", ev.Data)
			}
		case i <= 4:
			if ch.Choices[0].Delta.Content == nil || ch.Choices[0].Delta.Role != "" {
				t.Fatalf("content chunk %d: %s", i, ev.Data)
			}
			text.WriteString(*ch.Choices[0].Delta.Content)
		case i == 5:
			if ch.Choices[0].FinishReason == nil || *ch.Choices[0].FinishReason != "stop" {
				t.Fatalf("finish chunk: %s", ev.Data)
			}
		case i == 6:
			if len(ch.Choices) != 0 || !strings.Contains(ev.Data, `"choices":[]`) || ch.Usage == nil {
				t.Fatalf("usage chunk: %s", ev.Data)
			}
			if ch.Usage.PromptTokens != 4 || ch.Usage.CompletionTokens != 5 || ch.Usage.TotalTokens != 9 {
				t.Fatalf("usage = %+v", *ch.Usage)
			}
		}
	}
	if text.String() != "echo: tell me a story" {
		t.Fatalf("streamed text %q", text.String())
	}
	if st := s.Stats(); st.Streams != 1 || st.CompletionTokens != 5 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestChatStreamWithoutUsage(t *testing.T) {
	_, base := startServer(t, Config{})
	_, body := post(t, base+"/chat/completions",
		`{"model":"m","stream":true,"n":2,"messages":[{"role":"user","content":"hi"}]}`, HeaderChunks, "3")
	events := parseSSE(t, body)
	// per choice: role + 3 content + finish; then [DONE]
	if len(events) != 2*5+1 {
		t.Fatalf("%d events:\n%s", len(events), body)
	}
	texts := map[int]string{}
	for _, ev := range events[:len(events)-1] {
		if strings.Contains(ev.Data, `"usage"`) {
			t.Fatalf("usage present without include_usage: %s", ev.Data)
		}
		var ch chatChunkJSON
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			t.Fatal(err)
		}
		if c := ch.Choices[0].Delta.Content; c != nil {
			texts[ch.Choices[0].Index] += *c
		}
	}
	if texts[0] != "echo: hi" || texts[1] != "echo: hi" {
		t.Fatalf("texts = %v", texts)
	}
}

func TestChatErrors(t *testing.T) {
	s, base := startServer(t, Config{})
	url := base + "/chat/completions"
	cases := []struct {
		name, body, code, param string
	}{
		{"malformed", `{"model":`, "", ""},
		{"empty body", ``, "", ""},
		{"missing model", `{"messages":[{"role":"user","content":"x"}]}`, "", ""},
		{"missing messages", `{"model":"m"}`, "missing_required_parameter", "messages"},
		{"empty messages", `{"model":"m","messages":[]}`, "empty_array", "messages"},
		{"wrong type", `{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}`, "invalid_type", "stream"},
		{"bad content", `{"model":"m","messages":[{"role":"user","content":42}]}`, "invalid_type", "messages[0].content"},
		{"n zero", `{"model":"m","n":0,"messages":[{"role":"user","content":"x"}]}`, "integer_below_min_value", "n"},
		{"stream_options without stream", `{"model":"m","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}`, "invalid_value", "stream_options"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := post(t, url, tc.body)
			e := wantError(t, resp, body, 400, "invalid_request_error", tc.code)
			if tc.param != "" && e["param"] != tc.param {
				t.Fatalf("param = %v, want %q", e["param"], tc.param)
			}
		})
	}
	if got := s.Stats().Errors; got != int64(len(cases)) {
		t.Fatalf("Errors = %d, want %d", got, len(cases))
	}
	_, body := post(t, url, `{"messages":[{"role":"user","content":"x"}]}`)
	if !strings.Contains(string(body), "you must provide a model parameter") {
		t.Fatalf("missing model message: %s", body)
	}
}
