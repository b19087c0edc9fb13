package proxy

import (
	"strings"
	"testing"

	"sluice/sink"
)

func TestTopLevelValue(t *testing.T) {
	f := func(body, want string) {
		t.Helper()
		got := topLevelValue([]byte(body), requestKeys[:])
		if string(got) != want {
			t.Fatalf("topLevelValue(%s) = %q, want %q", body, got, want)
		}
	}
	f(`{"model":"m","messages":[{"role":"user","content":"hi \"x\""}],"stream":true}`, `[{"role":"user","content":"hi \"x\""}]`)
	f(`{"input":"embed me","model":"e"}`, `"embed me"`)
	f(`{"model":"m","prompt":["a","b"]}`, `["a","b"]`)
	f(`{"model":"m","metadata":{"messages":"nested, not top level"}}`, ``)
	f(`{}`, ``)
	f(`not json`, ``)
}

// TestScanFindsTranscriptContent: the request scan delimits the same value
// topLevelValue finds, so the proxy does not walk the body again.
func TestScanFindsTranscriptContent(t *testing.T) {
	for _, body := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi \"x\""}],"stream":true}`,
		`{"input":"embed me","model":"e"}`,
		`{"model":"m","prompt":["a","b"]}`,
		`{"model":"m","metadata":{"messages":"nested, not top level"}}`,
		`{"model":"m","input":[1,2],"messages":[]}`,
		`{}`,
		string(chatBody1K),
	} {
		var f reqFields
		if err := scanRequest([]byte(body), &f); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got, want := f.content([]byte(body)), topLevelValue([]byte(body), requestKeys[:]); string(got) != string(want) {
			t.Fatalf("%s: scan found %q, topLevelValue %q", body, got, want)
		}
	}
}

func TestAnswerTextFromStreamEvents(t *testing.T) {
	tx := &txState{max: 1 << 10}
	for _, ev := range []string{
		`data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{"content":"lo \"wörld\"\n"},"finish_reason":null}]}` + "\n\n",
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n",
		`data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}` + "\n\n",
		"data: [DONE]\n\n",
	} {
		tx.event(epChat, []byte(ev))
	}
	if got := string(tx.text); got != "Hello \"wörld\"\n" {
		t.Fatalf("text %q", got)
	}
	if tx.finish != "stop" || tx.usage.prompt != 3 || tx.usage.completion != 4 || tx.firstTok.IsZero() {
		t.Fatalf("finish %q usage %+v first %v", tx.finish, tx.usage, tx.firstTok)
	}
}

func TestAnswerTextIsCappedWithMarker(t *testing.T) {
	tx := &txState{max: 10}
	for range 5 {
		tx.event(epChat, []byte(`data: {"choices":[{"delta":{"content":"abcdef"}}]}`+"\n\n"))
	}
	if string(tx.text) != "abcdefabcd" || tx.textCut != 20 {
		t.Fatalf("text %q cut %d; want 10 bytes kept and 20 cut", tx.text, tx.textCut)
	}
	if !strings.HasPrefix(sink.TruncationMarker, "…[truncated ") {
		t.Fatalf("marker %q", sink.TruncationMarker)
	}
}

func TestBufferedAnswerAndErrors(t *testing.T) {
	tx := &txState{max: 1 << 10}
	tx.answer(epChat, 200, []byte(`{"choices":[{"index":0,"message":{"role":"assistant","content":"echo: hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}`))
	if string(tx.text) != "echo: hi" || tx.finish != "length" || tx.usage.total() != 11 {
		t.Fatalf("text %q finish %q usage %+v", tx.text, tx.finish, tx.usage)
	}
	tx = &txState{max: 1 << 10}
	tx.answer(epChat, 429, []byte(`{"error":{"message":"slow down","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}`))
	if tx.errType != "rate_limit_exceeded" || len(tx.text) != 0 {
		t.Fatalf("error type %q text %q", tx.errType, tx.text)
	}
	// Responses streams: deltas only, never the completed event's full text.
	tx = &txState{max: 1 << 10}
	tx.event(epResponses, []byte(`event: response.output_text.delta`+"\n"+`data: {"type":"response.output_text.delta","delta":"Hi"}`+"\n\n"))
	tx.event(epResponses, []byte(`event: response.completed`+"\n"+`data: {"type":"response.completed","response":{"output":[{"content":[{"type":"output_text","text":"Hi"}]}]}}`+"\n\n"))
	if string(tx.text) != "Hi" {
		t.Fatalf("responses stream text %q", tx.text)
	}
	// Metadata only: nothing of the content is kept.
	tx = &txState{max: 1 << 10, metadata: true}
	tx.noteRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"secret"}]}`), false)
	tx.answer(epChat, 200, []byte(`{"choices":[{"message":{"content":"secret answer"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`))
	if tx.request != "" || len(tx.text) != 0 || tx.usage.total() != 3 {
		t.Fatalf("metadata mode kept %q / %q (usage %+v)", tx.request, tx.text, tx.usage)
	}
}

func TestNilTranscriptStateIsANoOp(t *testing.T) {
	var tx *txState
	tx.noteRequest([]byte(`{}`), true)
	tx.event(epChat, []byte("data: x\n\n"))
	tx.answer(epChat, 200, []byte(`{}`))
}
