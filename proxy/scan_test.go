package proxy

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestScanRequestFields(t *testing.T) {
	f := func(body, model, user string, stream, includeUsage bool, maxTokens, n int64) {
		t.Helper()
		var got reqFields
		if err := scanRequest([]byte(body), &got); err != nil {
			t.Fatalf("scanRequest(%s): unexpected error: %v", body, err)
		}
		if string(got.model) != model || string(got.user) != user || got.stream != stream ||
			got.includeUsage != includeUsage || got.maxTokens != maxTokens || got.n != n {
			t.Fatalf("scanRequest(%s) = model %q user %q stream %v usage %v max %d n %d; want %q %q %v %v %d %d",
				body, got.model, got.user, got.stream, got.includeUsage, got.maxTokens, got.n,
				model, user, stream, includeUsage, maxTokens, n)
		}
	}
	f(`{"model":"gpt-4o"}`, "gpt-4o", "", false, false, -1, 1)
	f(` { "model" : "gpt-4o" , "stream" : true } `, "gpt-4o", "", true, false, -1, 1)
	f(`{"messages":[{"role":"user","content":"hi \"there\" \u00e9 {[}]"}],"model":"m","user":"u1","n":3,"max_tokens":100}`,
		"m", "u1", false, false, 100, 3)
	f(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, "m", "", true, true, -1, 1)
	f(`{"model":"m","stream":null,"stream_options":null,"user":null,"n":null,"max_tokens":null}`, "m", "", false, false, -1, 1)
	f(`{"model":"m","max_completion_tokens":7}`, "m", "", false, false, 7, 1)
	f(`{"model":"m","max_output_tokens":9}`, "m", "", false, false, 9, 1)
	f(`{"mod\u0065l":"gpt\u002d4o","us\u0065r":"\u00fcser"}`, "gpt-4o", "üser", false, false, -1, 1)
	f(`{"model":"m","tools":[{"type":"function","function":{"parameters":{"a":[1,2.5e3,-0.1,true,false,null,{}]}}}]}`,
		"m", "", false, false, -1, 1)
	f(`{}`, "", "", false, false, -1, 1)
	f(`{"model":"m","stream_options":{"other":[1],"include_usage":false}}`, "m", "", false, false, -1, 1)
}

func TestScanRequestModelOffsets(t *testing.T) {
	body := []byte(`{"a":1, "model" : "fast", "b":2}`)
	var f reqFields
	if err := scanRequest(body, &f); err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if got := string(body[f.modelStart:f.modelEnd]); got != `"fast"` {
		t.Fatalf("model span = %s; want \"fast\"", got)
	}
	out := rewriteModel(body, &f, "gpt-4o-mini")
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil || v["model"] != "gpt-4o-mini" || v["b"] != 2.0 {
		t.Fatalf("rewriteModel gave %s (%v)", out, err)
	}
}

func TestScanRequestErrors(t *testing.T) {
	f := func(body, param, msgPart string) {
		t.Helper()
		var got reqFields
		err := scanRequest([]byte(body), &got)
		if err == nil {
			t.Fatalf("scanRequest(%q): expecting an error", body)
		}
		if err.param != param || !strings.Contains(err.msg, msgPart) {
			t.Fatalf("scanRequest(%q) = param %q msg %q; want param %q msg containing %q", body, err.param, err.msg, param, msgPart)
		}
	}
	f(``, "", "empty")
	f(`[]`, "", "must be a JSON object")
	f(`{bad`, "", "invalid JSON")
	f(`{"model":"m"`, "", "invalid JSON")
	f(`{"model":"m"}x`, "", "invalid JSON")
	f(`{"model":"m",}`, "", "invalid JSON")
	f(`{"a":01}`, "", "invalid JSON")
	f(`{"a":"\x"}`, "", "invalid JSON")
	f("{\"a\":\"\x01\"}", "", "invalid JSON")
	f("{\"a\":\"\xff\"}", "", "invalid JSON")
	f(`{"a":tru}`, "", "invalid JSON")
	f(`{"model":`, "", "invalid JSON")
	f(`{"stream":x}`, "", "invalid JSON")
	f(`{"stream_options":{"include_usage":}}`, "", "invalid JSON")
	f(`{"model":1}`, "model", "expected a string, but got a number")
	f(`{"model":null}`, "model", "expected a string, but got null")
	f(`{"stream":"yes"}`, "stream", "expected a boolean, but got a string")
	f(`{"n":1.5}`, "n", "expected an integer, but got a number")
	f(`{"max_tokens":"10"}`, "max_tokens", "expected an integer")
	f(`{"user":5}`, "user", "expected a string")
	f(`{"stream_options":true}`, "stream_options", "expected an object")
	f(`{"stream_options":{"include_usage":1}}`, "stream_options.include_usage", "expected a boolean")
	f(`{"a":`+strings.Repeat("[", maxJSONDepth+2)+strings.Repeat("]", maxJSONDepth+2)+`}`, "", "invalid JSON")
}

// FuzzScanRequest checks the scanner never panics and agrees with
// encoding/json on which bodies are valid JSON objects.
func FuzzScanRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`{"model":"m","stream_options":{"include_usage":true},"n":2,"max_tokens":5,"user":"x"}`,
		`{"a":[1,2,{"b":null}],"c":"\u00e9\n"}`, `{}`, `{"model":1}`, `[`, `{"a":1e5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got reqFields
		err := scanRequest(body, &got)
		var v map[string]json.RawMessage
		jerr := json.Unmarshal(body, &v)
		if err == nil && jerr != nil {
			t.Fatalf("scanner accepted %q that encoding/json rejects: %v", body, jerr)
		}
		if err == nil && got.model != nil {
			var m string
			if json.Unmarshal(v["model"], &m) != nil || m != string(got.model) {
				// duplicate keys: the scanner and encoding/json both keep the last
				t.Fatalf("model %q; encoding/json says %s", got.model, v["model"])
			}
		}
		// The scanner rejects invalid UTF-8, which encoding/json replaces.
		if err != nil && err.param == "" && jerr == nil && depth(body) <= maxJSONDepth && utf8.Valid(body) {
			t.Fatalf("scanner rejected %q that encoding/json accepts: %s", body, err.msg)
		}
	})
}

// depth is the maximum nesting of brackets in b, ignoring strings roughly;
// it only needs to be an upper bound for the fuzz check above.
func depth(b []byte) int {
	d, maxD := 0, 0
	for _, c := range b {
		switch c {
		case '{', '[':
			d++
			if d > maxD {
				maxD = d
			}
		case '}', ']':
			d--
		}
	}
	return maxD
}

func TestWithIncludeUsage(t *testing.T) {
	f := func(body string) {
		t.Helper()
		var fields reqFields
		if err := scanRequest([]byte(body), &fields); err != nil {
			t.Fatal(err)
		}
		out := withIncludeUsage([]byte(body), &fields)
		var again reqFields
		if err := scanRequest(out, &again); err != nil {
			t.Fatalf("withIncludeUsage(%s) = %s: not valid: %s", body, out, err.msg)
		}
		if !again.includeUsage || string(again.model) != string(fields.model) || again.stream != fields.stream {
			t.Fatalf("withIncludeUsage(%s) = %s", body, out)
		}
		var before, after map[string]any
		_ = json.Unmarshal([]byte(body), &before)
		_ = json.Unmarshal(out, &after)
		delete(before, "stream_options")
		delete(after, "stream_options")
		if len(before) != len(after) {
			t.Fatalf("other fields changed: %s → %s", body, out)
		}
	}
	f(`{"model":"m","stream":true}`)
	f(` {"model":"m","stream":true}`)
	f(`{"model":"m","stream":true,"stream_options":{}}`)
	f(`{"model":"m","stream":true,"stream_options":{ }}`)
	f(`{"model":"m","stream":true,"stream_options":{"x":1}}`)
	f(`{"model":"m","stream":true,"stream_options":{"include_usage":false,"x":1}}`)
	f(`{"model":"m","stream":true,"stream_options":{"include_usage":null}}`)
	f(`{"model":"m","stream":true,"stream_options":null}`)
	f(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`)
}
