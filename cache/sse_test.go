package cache

import (
	"bytes"
	"encoding/json"
	"reflect"
	"runtime"
	"testing"
)

const chatStream = `data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":"lo <&>"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","system_fingerprint":"fp","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}

data: [DONE]

`

func splitEvents(s string) [][]byte {
	var out [][]byte
	for _, ev := range bytes.SplitAfter([]byte(s), []byte("\n\n")) {
		if len(ev) > 0 {
			out = append(out, ev)
		}
	}
	return out
}

func TestAssembleStreamAndRenderBack(t *testing.T) {
	body, err := AssembleStream(splitEvents(chatStream))
	if err != nil {
		t.Fatal(err)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	m := c.Choices[0].Message
	if c.Object != "chat.completion" || c.ID != "c1" || *m.Content != "Hello <&>" || *c.Choices[0].FinishReason != "tool_calls" ||
		len(m.ToolCalls) != 1 || m.ToolCalls[0].ID != "call_1" || m.ToolCalls[0].Function.Arguments != `{"q":1}` ||
		string(c.Usage) != `{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}` {
		t.Fatalf("assembled %s", body)
	}
	// Rendering the answer as a stream and assembling it again gives the
	// same answer.
	sse, err := RenderStream(body, true)
	if err != nil {
		t.Fatal(err)
	}
	again, err := AssembleStream(splitEvents(string(sse)))
	if err != nil {
		t.Fatalf("assemble rendered stream: %v\n%s", err, sse)
	}
	var c2 completion
	_ = json.Unmarshal(again, &c2)
	if !reflect.DeepEqual(c, c2) {
		t.Errorf("render then assemble changed the answer:\n%s\n%s", body, again)
	}
	// Without usage asked, no usage chunk.
	sse, _ = RenderStream(body, false)
	if bytes.Contains(sse, []byte(`"usage"`)) {
		t.Errorf("usage rendered though not asked:\n%s", sse)
	}
}

func TestAssembleRejectsIncompleteStreams(t *testing.T) {
	evs := splitEvents(chatStream)
	cases := map[string][][]byte{
		"no [DONE]":       evs[:len(evs)-1],
		"no finish":       append(append([][]byte{}, evs[:5]...), evs[len(evs)-1]),
		"logprobs":        {[]byte(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"x"},"logprobs":{"content":[]},"finish_reason":"stop"}]}` + "\n\n"), evs[len(evs)-1]},
		"garbage":         {[]byte("data: {oops\n\n"), evs[len(evs)-1]},
		"responses event": {[]byte(`data: {"type":"response.created"}` + "\n\n"), evs[len(evs)-1]},
	}
	for name, c := range cases {
		if _, err := AssembleStream(c); err == nil {
			t.Errorf("%s: stored", name)
		}
	}
}

func TestLegacyCompletionStream(t *testing.T) {
	s := `data: {"id":"t","object":"text_completion","created":1,"model":"m","choices":[{"text":"ab","index":0,"logprobs":null,"finish_reason":null}]}

data: {"id":"t","object":"text_completion","created":1,"model":"m","choices":[{"text":"c","index":0,"logprobs":null,"finish_reason":"length"}]}

data: [DONE]

`
	body, err := AssembleStream(splitEvents(s))
	if err != nil {
		t.Fatal(err)
	}
	var c completion
	_ = json.Unmarshal(body, &c)
	if c.Object != "text_completion" || *c.Choices[0].Text != "abc" || *c.Choices[0].FinishReason != "length" {
		t.Fatalf("assembled %s", body)
	}
	sse, err := RenderStream(body, false)
	if err != nil {
		t.Fatal(err)
	}
	again, err := AssembleStream(splitEvents(string(sse)))
	if err != nil || !bytes.Equal(again, body) {
		t.Errorf("round trip: %s, %v; want %s", again, err, body)
	}
}

// TestAssembleAzureFilterChunk: Azure OpenAI's streams begin with a chunk
// that carries only prompt_filter_results (no object, id or choices); the
// answer is assembled from the chunks after it.
func TestAssembleAzureFilterChunk(t *testing.T) {
	s := `data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}

data: {"id":"chatcmpl-a","object":"chat.completion.chunk","created":5,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null,"content_filter_results":{}}]}

data: {"id":"chatcmpl-a","object":"chat.completion.chunk","created":5,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: [DONE]

`
	body, err := AssembleStream(splitEvents(s))
	if err != nil {
		t.Fatalf("Azure stream not storable: %v", err)
	}
	var c completion
	_ = json.Unmarshal(body, &c)
	if c.ID != "chatcmpl-a" || c.Object != "chat.completion" || *c.Choices[0].Message.Content != "Hi" {
		t.Fatalf("assembled %s", body)
	}
}

// TestAssembleLongDeltasIsLinear: a long tool call and refusal streamed in
// small deltas are assembled in buffers; appending to a string delta by
// delta copied it each time (quadratic: 2.7 GB allocated for these 100
// KiB of each, 17 s for a 400 KiB tool call).
func TestAssembleLongDeltasIsLinear(t *testing.T) {
	const size, piece = 100 << 10, "abcd"
	events := [][]byte{[]byte(`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}` + "\n\n")}
	for range size / len(piece) {
		events = append(events, []byte(`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"refusal":"`+piece+`","tool_calls":[{"index":0,"function":{"arguments":"`+piece+`"}}]},"finish_reason":null}]}`+"\n\n"))
	}
	events = append(events, []byte(`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`+"\n\ndata: [DONE]\n\n"))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	body, err := AssembleStream(events)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	m := c.Choices[0].Message
	if len(m.ToolCalls) != 1 || len(m.ToolCalls[0].Function.Arguments) != size || m.Refusal == nil || len(*m.Refusal) != size {
		t.Fatalf("assembled %d tool calls, refusal %v", len(m.ToolCalls), m.Refusal != nil)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 200<<20 {
		t.Fatalf("assembling %d KiB in %d deltas allocated %d MiB: quadratic", size>>10, size/len(piece), alloc>>20)
	}
}
