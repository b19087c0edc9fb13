package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets for the stream parsers on the relay path: event framing
// (relay.next), usage finding, generated-text counting and the transcript's
// answer text. The seed corpora live in testdata/fuzz/<FuzzName>/.

// splitEventsRef is the reference framing: an event ends at a line that is
// empty ("\n" or "\r\n"); what follows the last blank line is the tail,
// returned apart.
func splitEventsRef(b []byte) (events [][]byte, tail []byte) {
	for line := range bytes.Lines(b) {
		tail = append(tail, line...)
		if string(line) == "\n" || string(line) == "\r\n" {
			events = append(events, tail)
			tail = nil
		}
	}
	return events, tail
}

// FuzzRelayEvents feeds arbitrary upstream bytes through the relay's SSE
// framing with the smallest read buffer (so every line longer than 16 bytes
// takes the long-line path) and checks: no panic; the events are exactly the
// reference framing's, in order; without usage stripping the relayed bytes
// equal the upstream's; with it, exactly the usage-only events are dropped,
// the usage kept is the last one an event reported and the generated-text
// count is the sum over the events relayed.
func FuzzRelayEvents(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n"), true)
	f.Add([]byte(": keep-alive\r\n\r\nevent: x\r\ndata: y\r\n\r\ntail without end"), false)
	f.Add([]byte("data: "+strings.Repeat("x", 100)+"\n\n\n\n"), false)
	f.Fuzz(func(t *testing.T, body []byte, strip bool) {
		r := &relay{sse: true, br: bufio.NewReaderSize(bytes.NewReader(body), 16)}
		r.x.stripUsage = strip
		var got [][]byte
		for i := 0; ; i++ {
			if i > len(body)+1 {
				t.Fatalf("relay did not end after %d events from %d bytes", i, len(body))
			}
			ev, err := r.next()
			if len(ev) > 0 {
				got = append(got, bytes.Clone(ev))
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("next: %v", err)
			}
		}
		if !r.eof {
			t.Fatal("body read to its end, eof not noted")
		}
		var want [][]byte
		var wantUsage usage
		var wantGen int64
		events, tail := splitEventsRef(body)
		for _, ev := range events {
			if !strip { // nothing to settle or strip: events pass unparsed
				want = append(want, ev)
				continue
			}
			if bytes.Contains(ev, usageKey) {
				if u := findUsage(ev); u.ok {
					wantUsage = u
				}
				if strip && isUsageOnlyEvent(ev) {
					continue
				}
			}
			wantGen += generatedBytes(ev)
			want = append(want, ev)
		}
		if len(tail) > 0 { // relayed as it is, not parsed
			want = append(want, tail)
		}
		if len(got) != len(want) {
			t.Fatalf("%d events, want %d:\n got %q\nwant %q", len(got), len(want), got, want)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("event %d = %q, want %q", i, got[i], want[i])
			}
		}
		if !strip && !bytes.Equal(bytes.Join(got, nil), body) {
			t.Fatalf("relayed %q, upstream sent %q", bytes.Join(got, nil), body)
		}
		if r.usage != wantUsage || r.generated != wantGen {
			t.Fatalf("usage %+v generated %d; want %+v and %d", r.usage, r.generated, wantUsage, wantGen)
		}
	})
}

// usageEvent is an SSE event shaped like OpenAI's: its usage object comes
// after other fields, holds an unknown field with an arbitrary value, and the
// arbitrary text sits in string fields beside it.
type usageEvent struct {
	ID      string         `json:"id"`
	Choices []any          `json:"choices"`
	Usage   map[string]any `json:"usage"`
	After   string         `json:"after"`
}

// FuzzFindUsage checks that findUsage never panics on arbitrary bytes, and
// that it finds the token counts of a well-formed chat or Responses event
// whatever text surrounds them (the text cannot fake a usage object: inside
// a JSON string every quote is escaped).
func FuzzFindUsage(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":1,"completion_tokens":2}}`), "x", int64(3), int64(4), false)
	f.Add([]byte(`data: {"usage":{"prompt_tokens":1,"x":[{"y":"}"}],"completion_tokens":-2}}`), `"usage":{"prompt_tokens":9}`, int64(0), int64(1<<62), true)
	f.Add([]byte(`{"usage": {"input_tokens": 1e3}}`), "\\\"usage\\\":{", int64(-1), int64(0), false)
	f.Fuzz(func(t *testing.T, raw []byte, text string, prompt, completion int64, responses bool) {
		u := findUsage(raw)
		if !u.ok && (u.prompt != 0 || u.completion != 0) {
			t.Fatalf("no usage found in %q, but counts %+v", raw, u)
		}
		var doc any = usageEvent{ID: text, Choices: []any{}, After: text, Usage: map[string]any{
			"prompt_tokens": prompt, "completion_tokens": completion, "details": map[string]any{"x": []string{text}, "prompt_tokens": 7}}}
		if responses {
			doc = map[string]any{"type": "response.completed", "response": map[string]any{"text": text,
				"usage": map[string]any{"input_tokens": prompt, "output_tokens": completion, "z": text}}}
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		ev := append([]byte("data: "), b...)
		ev = append(ev, "\n\n"...)
		u = findUsage(ev)
		if !u.ok || u.prompt != prompt || u.completion != completion {
			t.Fatalf("findUsage(%s) = %+v; want prompt %d completion %d", ev, u, prompt, completion)
		}
	})
}

// streamEvents renders text as the stream events an upstream sends for ep
// (chat, legacy completions or Responses), cut into pieces of n runes, with
// a finish reason and a usage event, and returns the pieces too.
func streamEvents(ep endpoint, text string, n int) (events [][]byte, pieces []string) {
	for len(text) > 0 {
		i, k := 0, 0
		for i < len(text) && k < n {
			_, size := utf8.DecodeRuneInString(text[i:])
			i += size
			k++
		}
		pieces = append(pieces, text[:i])
		text = text[i:]
	}
	emit := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		var ev []byte
		if name != "" {
			ev = fmt.Appendf(ev, "event: %s\n", name)
		}
		ev = fmt.Appendf(ev, "data: %s\n\n", b)
		events = append(events, ev)
	}
	type m = map[string]any
	switch ep {
	case epChat:
		emit("", m{"object": "chat.completion.chunk", "choices": []m{{"index": 0, "delta": m{"role": "assistant", "content": ""}, "finish_reason": nil}}})
		for _, p := range pieces {
			emit("", m{"object": "chat.completion.chunk", "choices": []m{{"index": 0, "delta": m{"content": p}, "finish_reason": nil}}})
		}
		emit("", m{"object": "chat.completion.chunk", "choices": []m{{"index": 0, "delta": m{}, "finish_reason": "stop"}}})
		emit("", m{"object": "chat.completion.chunk", "choices": []m{}, "usage": m{"prompt_tokens": 3, "completion_tokens": len(pieces)}})
	case epCompletions:
		for _, p := range pieces {
			emit("", m{"object": "text_completion", "choices": []m{{"index": 0, "text": p, "finish_reason": nil}}})
		}
		emit("", m{"object": "text_completion", "choices": []m{{"index": 0, "text": "", "finish_reason": "stop"}}})
		emit("", m{"object": "text_completion", "choices": []m{}, "usage": m{"prompt_tokens": 3, "completion_tokens": len(pieces)}})
	case epResponses:
		emit("response.created", m{"type": "response.created", "response": m{"status": "in_progress"}})
		for _, p := range pieces {
			emit("response.output_text.delta", m{"type": "response.output_text.delta", "delta": p})
		}
		emit("response.completed", m{"type": "response.completed", "response": m{"status": "completed",
			"usage": m{"input_tokens": 3, "output_tokens": len(pieces)}}})
	}
	events = append(events, []byte("data: [DONE]\n\n"))
	return events, pieces
}

// FuzzAnswerText checks the transcript's assembly of a streamed answer: the
// text recorded equals the concatenated deltas (cut at max bytes, the rest
// counted), the usage is the usage event's, and the relay's generated-text
// count never undercounts the text (a cut stream's estimate must not charge
// less than was relayed).
func FuzzAnswerText(f *testing.F) {
	f.Add("Hello, \"wörld\" <&> \\n\n", uint8(3), uint16(1000), uint8(0))
	f.Add("\u2028\u2029 \x7f \U0001F600 tab\t", uint8(1), uint16(5), uint8(1))
	f.Add(`"content":"x" "delta":"y" \u0000`, uint8(7), uint16(0), uint8(2))
	f.Fuzz(func(t *testing.T, text string, n uint8, maxBytes uint16, kind uint8) {
		text = strings.ToValidUTF8(text, "\uFFFD") // JSON carries text, not bytes
		ep := [...]endpoint{epChat, epCompletions, epResponses}[kind%3]
		events, pieces := streamEvents(ep, text, int(n%16)+1)
		tx := &txState{max: int(maxBytes)}
		var gen int64
		for _, ev := range events {
			tx.event(ep, ev)
			gen += generatedBytes(ev)
		}
		want := strings.Join(pieces, "")
		kept := want[:min(len(want), int(maxBytes))]
		if string(tx.text) != kept || len(tx.text)+tx.textCut != len(want) {
			t.Fatalf("%s: text %q (+%d cut), want %q of %q", endpointLabels[ep], tx.text, tx.textCut, kept, want)
		}
		if tx.usage.prompt != 3 || tx.usage.completion != int64(len(pieces)) {
			t.Fatalf("%s: usage %+v, want 3 and %d", endpointLabels[ep], tx.usage, len(pieces))
		}
		if ep != epResponses && tx.finish != "stop" {
			t.Fatalf("%s: finish %q", endpointLabels[ep], tx.finish)
		}
		if gen < int64(len(want)) {
			t.Fatalf("%s: generatedBytes counted %d of %d bytes of text", endpointLabels[ep], gen, len(want))
		}
	})
}
