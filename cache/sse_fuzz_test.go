package cache

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAssembleStream feeds arbitrary bytes as a stream's events to
// AssembleStream and as a stored body to RenderStream: no panic, and an
// answer assembled from a stream is a fixed point of replay: rendered as a
// stream (with and without usage) and assembled again, it is the same body,
// byte for byte (a cache hit replays exactly what was stored).
func FuzzAssembleStream(f *testing.F) {
	f.Add([]byte(chatStream))
	f.Add([]byte("data: {\"object\":\"text_completion\",\"choices\":[{\"index\":1,\"text\":\"a\",\"finish_reason\":\"length\"},{\"index\":0,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"no\"},\"finish_reason\":\"stop\"}],\"usage\":7}\ndata:[DONE]"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		_, _ = RenderStream(stream, true) // stream bytes as a stored body: no panic
		body, err := AssembleStream(splitEvents(string(stream)))
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("assembled invalid JSON %q", body)
		}
		for _, usage := range []bool{true, false} {
			sse, err := RenderStream(body, usage)
			if err != nil {
				t.Fatalf("an assembled answer does not render: %v\n%s", err, body)
			}
			again, err := AssembleStream(splitEvents(string(sse)))
			if err != nil {
				t.Fatalf("the rendered stream does not assemble: %v\n%s", err, sse)
			}
			want := body
			if !usage {
				want = withoutUsage(t, body)
			}
			if !bytes.Equal(again, want) {
				t.Fatalf("replay changed the answer (usage %t):\n stored %s\nreplayed %s", usage, want, again)
			}
		}
	})
}

// withoutUsage is body with its usage removed, as a stream rendered without
// the usage chunk assembles.
func withoutUsage(t *testing.T, body []byte) []byte {
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	c.Usage = nil
	b, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzAssembleDeltas cuts a text into deltas of up to n runes, spread over
// two choices and a tool call's arguments, as an upstream streams them; the
// assembled answer's content equals the concatenated deltas, the arguments
// the concatenated fragments, and replaying it gives the same answer.
func FuzzAssembleDeltas(f *testing.F) {
	f.Add("Hello <&> \"wörld\"\n", uint8(3), false)
	f.Add("\u2028\U0001F600\\u0000", uint8(1), true)
	f.Fuzz(func(t *testing.T, text string, n uint8, legacy bool) {
		text = strings.ToValidUTF8(text, "\uFFFD") // JSON carries text, not bytes
		var pieces []string
		for rest := text; len(rest) > 0; {
			i := 0
			for k := 0; i < len(rest) && k < int(n%8)+1; k++ {
				_, size := utf8.DecodeRuneInString(rest[i:])
				i += size
			}
			pieces = append(pieces, rest[:i])
			rest = rest[i:]
		}
		type m = map[string]any
		var events [][]byte
		emit := func(v m) {
			if legacy {
				v["object"] = "text_completion"
			} else {
				v["object"] = "chat.completion.chunk"
			}
			v["id"], v["model"], v["created"] = "id-1", "m", 7
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, append(append([]byte("data: "), b...), "\n\n"...))
		}
		stop := "stop"
		for i, p := range pieces {
			for choice := range 2 {
				c := m{"index": choice, "finish_reason": nil}
				if legacy {
					c["text"] = p
				} else {
					d := m{"content": p}
					if i == 0 {
						d["role"] = "assistant"
					}
					if choice == 1 {
						d["tool_calls"] = []m{{"index": 0, "function": m{"arguments": p}}}
					}
					c["delta"] = d
				}
				emit(m{"choices": []m{c}})
			}
		}
		for choice := range 2 {
			c := m{"index": choice, "delta": m{}, "finish_reason": &stop}
			if legacy {
				c = m{"index": choice, "text": "", "finish_reason": &stop}
			}
			emit(m{"choices": []m{c}})
		}
		emit(m{"choices": []m{}, "usage": m{"prompt_tokens": 1, "completion_tokens": len(pieces)}})
		events = append(events, []byte("data: [DONE]\n\n"))
		body, err := AssembleStream(events)
		if err != nil {
			t.Fatalf("assemble: %v\n%s", err, bytes.Join(events, nil))
		}
		var c completion
		if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) != 2 {
			t.Fatalf("assembled %s: %v", body, err)
		}
		for i, a := range c.Choices {
			var got string
			switch {
			case legacy && a.Text != nil:
				got = *a.Text
			case !legacy && a.Message != nil && a.Message.Content != nil:
				got = *a.Message.Content
			case !legacy && a.Message != nil && text == "":
				// no content delta: content null, as upstream sent none
			default:
				t.Fatalf("choice %d has no text: %s", i, body)
			}
			if got != text {
				t.Fatalf("choice %d: assembled %q, the deltas make %q", i, got, text)
			}
		}
		if !legacy {
			tc := c.Choices[1].Message.ToolCalls
			if len(text) > 0 && (len(tc) != 1 || tc[0].Function.Arguments != text) {
				t.Fatalf("tool call arguments %+v, the fragments make %q", tc, text)
			}
		}
		sse, err := RenderStream(body, true)
		if err != nil {
			t.Fatal(err)
		}
		again, err := AssembleStream(splitEvents(string(sse)))
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("replay changed the answer (%v):\n stored %s\nreplayed %s", err, body, again)
		}
	})
}
