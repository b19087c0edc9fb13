package fakeai

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestResponses(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := post(t, base+"/responses", `{"model":"gpt-4o-mini","instructions":"be nice",
		"input":[{"role":"user","content":"old"},{"type":"message","role":"user","content":[{"type":"input_text","text":"new question"}]}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	m := decodeJSON(t, body)
	if id, _ := m["id"].(string); !strings.HasPrefix(id, "resp_") {
		t.Fatalf("id %q", id)
	}
	if m["object"] != "response" || m["status"] != "completed" || m["model"] != "gpt-4o-mini" || m["instructions"] != "be nice" {
		t.Fatalf("shape: %s", body)
	}
	if jpath(t, m, "output", 0, "type") != "message" || jpath(t, m, "output", 0, "role") != "assistant" {
		t.Fatalf("output: %s", body)
	}
	if jpath(t, m, "output", 0, "content", 0, "type") != "output_text" {
		t.Fatalf("content type: %s", body)
	}
	if got := jpath(t, m, "output", 0, "content", 0, "text"); got != "echo: new question" {
		t.Fatalf("text %q", got)
	}
	// input: "old" + "new question" + "be nice" = 5; output 3.
	u := m["usage"].(map[string]any)
	if u["input_tokens"] != 5.0 || u["output_tokens"] != 3.0 || u["total_tokens"] != 8.0 {
		t.Fatalf("usage %v", u)
	}

	_, body = post(t, base+"/responses", `{"model":"m","input":"a b c d","max_output_tokens":2}`)
	m = decodeJSON(t, body)
	if m["status"] != "incomplete" || jpath(t, m, "incomplete_details", "reason") != "max_output_tokens" ||
		jpath(t, m, "output", 0, "content", 0, "text") != "echo: a" {
		t.Fatalf("incomplete: %s", body)
	}
}

func TestResponsesStream(t *testing.T) {
	_, base := startServer(t, Config{Chunks: 3})
	resp, body := post(t, base+"/responses", `{"model":"gpt-4o","input":"stream this please","stream":true}`)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	events := parseSSE(t, body)
	want := []string{"response.created", "response.in_progress", "response.output_item.added",
		"response.content_part.added", "response.output_text.delta", "response.output_text.delta",
		"response.output_text.delta", "response.output_text.done", "response.content_part.done",
		"response.output_item.done", "response.completed"}
	if len(events) != len(want) {
		t.Fatalf("%d events, want %d:\n%s", len(events), len(want), body)
	}
	var text strings.Builder
	for i, ev := range events {
		if ev.Name != want[i] {
			t.Fatalf("event %d is %q, want %q", i, ev.Name, want[i])
		}
		var d struct {
			Type           string `json:"type"`
			SequenceNumber *int   `json:"sequence_number"`
			Delta          string `json:"delta"`
			Text           string `json:"text"`
			Response       *struct {
				Status string `json:"status"`
				Output []struct {
					Content []struct {
						Text string `json:"text"`
					} `json:"content"`
				} `json:"output"`
				Usage *struct {
					TotalTokens int `json:"total_tokens"`
				} `json:"usage"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if d.Type != ev.Name || d.SequenceNumber == nil || *d.SequenceNumber != i {
			t.Fatalf("event %d data: %s", i, ev.Data)
		}
		switch ev.Name {
		case "response.created":
			if d.Response == nil || d.Response.Status != "in_progress" {
				t.Fatalf("created: %s", ev.Data)
			}
		case "response.output_text.delta":
			text.WriteString(d.Delta)
		case "response.output_text.done":
			if d.Text != "echo: stream this please" {
				t.Fatalf("done text %q", d.Text)
			}
		case "response.completed":
			if d.Response.Status != "completed" || d.Response.Usage == nil || d.Response.Usage.TotalTokens != 7 ||
				d.Response.Output[0].Content[0].Text != "echo: stream this please" {
				t.Fatalf("completed: %s", ev.Data)
			}
		}
	}
	if text.String() != "echo: stream this please" {
		t.Fatalf("deltas %q", text.String())
	}
	if strings.Contains(string(body), "[DONE]") {
		t.Fatal("the Responses API stream has no [DONE]")
	}
}
