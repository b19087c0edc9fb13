package fakeai

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCompletion(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := post(t, base+"/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":"say this"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	m := decodeJSON(t, body)
	if id, _ := m["id"].(string); !strings.HasPrefix(id, "cmpl-") {
		t.Fatalf("id = %q", id)
	}
	if m["object"] != "text_completion" || m["model"] != "gpt-3.5-turbo-instruct" {
		t.Fatalf("shape: %s", body)
	}
	if got := jpath(t, m, "choices", 0, "text"); got != "echo: say this" {
		t.Fatalf("text = %q", got)
	}
	if got := jpath(t, m, "choices", 0, "finish_reason"); got != "stop" {
		t.Fatalf("finish_reason = %v", got)
	}
	if got := jpath(t, m, "usage", "total_tokens"); got != 5.0 {
		t.Fatalf("total_tokens = %v", got)
	}

	// An array of prompts gives n choices per prompt, in order.
	_, body = post(t, base+"/completions", `{"model":"m","prompt":["a","b c"],"n":2,"max_tokens":2}`)
	m = decodeJSON(t, body)
	want := []struct{ text, finish string }{{"echo: a", "stop"}, {"echo: a", "stop"}, {"echo: b", "length"}, {"echo: b", "length"}}
	for i, w := range want {
		if jpath(t, m, "choices", i, "text") != w.text || jpath(t, m, "choices", i, "finish_reason") != w.finish ||
			jpath(t, m, "choices", i, "index") != float64(i) {
			t.Fatalf("choice %d: %s", i, body)
		}
	}

	resp, body = post(t, base+"/completions", `{"prompt":"x"}`)
	wantError(t, resp, body, 400, "invalid_request_error", "")
}

func TestCompletionStream(t *testing.T) {
	_, base := startServer(t, Config{Chunks: 2})
	_, body := post(t, base+"/completions",
		`{"model":"m","prompt":"abc def","stream":true,"stream_options":{"include_usage":true}}`)
	events := parseSSE(t, body)
	// 2 text chunks + finish + usage + [DONE]
	if len(events) != 5 || events[4].Data != "[DONE]" {
		t.Fatalf("events:\n%s", body)
	}
	var text strings.Builder
	for i, ev := range events[:4] {
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				TotalTokens int `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			t.Fatal(err)
		}
		if ch.Object != "text_completion" {
			t.Fatalf("object %q", ch.Object)
		}
		switch i {
		case 0, 1:
			text.WriteString(ch.Choices[0].Text)
		case 2:
			if ch.Choices[0].FinishReason == nil || *ch.Choices[0].FinishReason != "stop" {
				t.Fatalf("finish: %s", ev.Data)
			}
		case 3:
			if len(ch.Choices) != 0 || ch.Usage == nil || ch.Usage.TotalTokens != 5 {
				t.Fatalf("usage chunk: %s", ev.Data)
			}
		}
	}
	if text.String() != "echo: abc def" {
		t.Fatalf("text %q", text.String())
	}
}
