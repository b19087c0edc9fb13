package proxy

import "testing"

func TestFindUsage(t *testing.T) {
	f := func(body string, prompt, completion int64, ok bool) {
		t.Helper()
		u := findUsage([]byte(body))
		if u.prompt != prompt || u.completion != completion || u.ok != ok {
			t.Fatalf("findUsage(%s) = %+v; want %d %d %v", body, u, prompt, completion, ok)
		}
	}
	f(chatAnswer, 200, 3, true)
	f(`{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}`, 8, 0, true)
	f(`{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12,"output_tokens_details":{"reasoning_tokens":0}}}}`, 5, 7, true)
	f(`data: {"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9}}`+"\n\n", 4, 5, true)
	f(`{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":99}"}}],"usage":null}`, 0, 0, false)
	f(`{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}`, 1, 2, true)
	f(`{"usage":{"prompt_tokens":"x"}}`, 0, 0, false)
	f(`no json`, 0, 0, false)
}

func TestUsageOnlyEvent(t *testing.T) {
	f := func(ev string, want bool) {
		t.Helper()
		if got := isUsageOnlyEvent([]byte(ev)); got != want {
			t.Fatalf("isUsageOnlyEvent(%s) = %v", ev, got)
		}
	}
	f(`data: {"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9}}`+"\n\n", true)
	f(`data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}`+"\n\n", false)
	f(`data: {"id":"c","choices":[],"usage":null}`+"\n\n", false)
	f("data: [DONE]\n\n", false)
	// An event: line before the data (vLLM and others may send one).
	f("event: message\n"+`data: {"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9}}`+"\n\n", true)
	f(": ping\nid: 7\n"+`data: {"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9}}`+"\n\n", true)
	f("event: message\n"+`data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}`+"\n\n", false)
}

func TestDoneEvent(t *testing.T) {
	for ev, want := range map[string]bool{
		"data: [DONE]\n\n":                 true,
		"data:[DONE]\r\n\r\n":              true,
		"data: [DONE]x\n\n":                false,
		"event: done\n\n":                  false,
		"event: message\ndata: [DONE]\n\n": true,
		`data: {"choices":[{"delta":{"content":"[DONE]"}}]}` + "\n\n": false,
	} {
		if got := isDoneEvent([]byte(ev)); got != want {
			t.Errorf("isDoneEvent(%q) = %v, want %v", ev, got, want)
		}
	}
}

func TestGeneratedBytes(t *testing.T) {
	f := func(ev string, want int64) {
		t.Helper()
		if got := generatedBytes([]byte(ev)); got != want {
			t.Fatalf("generatedBytes(%s) = %d; want %d", ev, got, want)
		}
	}
	f(`data: {"choices":[{"delta":{"content":"hello"}}]}`, 5)
	f(`data: {"choices":[{"delta":{"content":"say \"hi\""}}]}`, 10)
	f(`data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}`, 9)
	f(`data: {"choices":[{"text":"abc"}]}`, 3)
	f(`data: {"type":"response.output_text.delta","delta":"wor"}`, 3)
	f(`data: {"choices":[{"delta":{"role":"assistant","content":""}}]}`, 0)
}
