package cache

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func mustKey(t *testing.T, body string) (Key, KeyInfo) {
	t.Helper()
	k, info, err := NewKey("team:a", "chat", "gpt-4o", []byte(body))
	if err != nil {
		t.Fatalf("NewKey(%s): %v", body, err)
	}
	return k, info
}

func TestKeySameMeaningSameKey(t *testing.T) {
	base := `{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":7,"max_tokens":10}`
	same := []string{
		// order and whitespace
		"{ \"seed\" : 7 ,\n\"temperature\":0, \"max_tokens\":10, \"messages\":[{\"content\":\"hi\",\"role\":\"user\"}], \"model\":\"x\"}",
		// number spellings
		`{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.0,"seed":7,"max_tokens":1e1}`,
		`{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":-0,"seed":7,"max_tokens":10.0}`,
		// escapes
		`{"model":"x","messages":[{"role":"\u0075ser","content":"h\u0069"}],"temperature":0,"seed":7,"max_tokens":10}`,
		// ignored fields and top-level nulls
		`{"model":"other","user":"bob","stream":true,"stream_options":{"include_usage":true},"metadata":{"a":"b"},"top_p":null,
		  "messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":7,"max_tokens":10}`,
	}
	want, info := mustKey(t, base)
	if !info.Deterministic {
		t.Errorf("temperature 0 and a seed: Deterministic = false")
	}
	for _, s := range same {
		if got, _ := mustKey(t, s); got != want {
			t.Errorf("key of %s differs from the base request's", s)
		}
	}
}

func TestKeyDifferentMeaningDifferentKey(t *testing.T) {
	base := `{"messages":[{"role":"user","content":"hi"}],"temperature":0}`
	want, _ := mustKey(t, base)
	differ := []string{
		`{"messages":[{"role":"user","content":"hi "}],"temperature":0}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0.5}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":1}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"max_tokens":5}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"n":2}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"stop":["x"]}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"tools":[]}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"response_format":{"type":"json_object"}}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"logit_bias":{"50256":-100}}`,
		`{"messages":[{"role":"system","content":"hi"}],"temperature":0}`,
		`{"messages":[{"role":"user","content":["hi"]}],"temperature":0}`,
		`{"messages":[{"role":"user","content":"hi"},{"role":"user","content":"hi"}],"temperature":0}`,
		`{"messages":[{"role":"user","content":"hi","name":"a"}],"temperature":0}`,
		`{"messages":[{"role":"user","content":"hi"}],"temperature":0,"seed":12345678901234567}`,
	}
	seen := map[Key]string{want: base}
	for _, s := range differ {
		k, _ := mustKey(t, s)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s has the same key as %s", s, prev)
		}
		seen[k] = s
	}
	// Large seeds keep every digit.
	a, _ := mustKey(t, `{"seed":12345678901234567}`)
	b, _ := mustKey(t, `{"seed":12345678901234568}`)
	if a == b {
		t.Errorf("seeds differing in the 17th digit share a key")
	}
	// Namespace, endpoint and model are part of the key.
	body := []byte(base)
	k1, _, _ := NewKey("team:a", "chat", "gpt-4o", body)
	for _, args := range [][3]string{{"team:b", "chat", "gpt-4o"}, {"team:a", "completions", "gpt-4o"}, {"team:a", "chat", "gpt-4o-mini"}} {
		k2, _, _ := NewKey(args[0], args[1], args[2], body)
		if k1 == k2 {
			t.Errorf("NewKey%v has the key of team:a chat gpt-4o", args)
		}
	}
}

func TestKeyDeterministic(t *testing.T) {
	for body, want := range map[string]bool{
		`{"temperature":0}`:              true,
		`{"temperature":0.0}`:            true,
		`{"seed":3}`:                     true,
		`{"temperature":0.2}`:            false,
		`{}`:                             false,
		`{"seed":null}`:                  false,
		`{"metadata":{"temperature":0}}`: false,
	} {
		if _, info := mustKey(t, body); info.Deterministic != want {
			t.Errorf("%s: Deterministic = %v, want %v", body, info.Deterministic, want)
		}
	}
}

func TestKeyRejectsBadBodies(t *testing.T) {
	for _, body := range []string{``, `[]`, `{`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":01}`, `{"a":"\x01"}`,
		`{"a":1,"a":2}`, `{"a":tru}`, `{"a":"\q"}`} {
		if _, _, err := NewKey("", "chat", "m", []byte(body)); err == nil {
			t.Errorf("NewKey(%q) = nil error, want one", body)
		}
	}
}

// FuzzKey checks that NewKey never panics, accepts only valid JSON objects,
// and gives a re-encoded body (other order, spacing and escapes) the same key.
func FuzzKey(f *testing.F) {
	f.Add([]byte(`{"model":"x","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"temperature":0.0,"seed":1e2}`))
	f.Add([]byte(`{"a":[1,2,{"b":null,"c":true}],"d":-0.5e-3}`))
	f.Add([]byte(`{"x":"\ud83d\ude00"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		k, _, err := NewKey("ns", "chat", "m", body)
		// Valid JSON, an object: values kept raw, as 1e400 is valid JSON but
		// no float64.
		var v map[string]json.RawMessage
		jerr := json.Unmarshal(body, &v)
		if err != nil {
			return // invalid, duplicate keys, or too deep: no key, and no panic
		}
		if jerr != nil || v == nil {
			t.Fatalf("NewKey accepted %q, which encoding/json rejects: %v", body, jerr)
		}
		// Re-encode: sorted keys, no spaces, other escapes. Numbers go
		// through float64, so only compare when that is exact.
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var u map[string]any
		if dec.Decode(&u) != nil {
			return
		}
		re, err := json.Marshal(u)
		if err != nil {
			return
		}
		k2, _, err := NewKey("ns", "chat", "m", re)
		if err != nil {
			t.Fatalf("re-encoded body %q has no key: %v", re, err)
		}
		if k != k2 && utf8.Valid(body) {
			t.Fatalf("re-encoded body %q has another key than %q", re, body)
		}
	})
}

var benchBody = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant that answers briefly and precisely, citing sources when you can."},` +
	`{"role":"user","content":"Summarise the following paragraph in one sentence: Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum."}],` +
	`"temperature":0,"max_tokens":256,"stream":true,"user":"alice","tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]}`)

func BenchmarkKey(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		if _, _, err := NewKey("team:a", "chat", "gpt-4o-mini", benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeyAllocations fails when computing a key starts allocating.
func TestKeyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	NewKey("team:a", "chat", "gpt-4o-mini", benchBody) // warm the pool
	if n := testing.AllocsPerRun(100, func() { NewKey("team:a", "chat", "gpt-4o-mini", benchBody) }); n > 0 {
		t.Errorf("NewKey allocates %.1f times per call, want 0", n)
	}
}
