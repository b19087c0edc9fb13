package jsonw

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// valueDepth is the depth of the deepest value in v as encoding/json
// decoded it, the top value at 0.
func valueDepth(v any) int {
	d := 0
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			d = max(d, 1+valueDepth(e))
		}
	case map[string]any:
		for _, e := range v {
			d = max(d, 1+valueDepth(e))
		}
	}
	return d
}

// FuzzValid checks that Scanner accepts exactly what encoding/json.Valid
// accepts, but for the two documented limits (invalid UTF-8 in strings,
// nesting beyond MaxDepth); that a string's content is what encoding/json
// decodes; and that Iter yields the members encoding/json reads, with
// Skip agreeing with the Scanner. On any input nothing panics.
func FuzzValid(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0.5e-7`, `true`, `null`, ` {"a" : [1, "x", null]} `, `[1,]`, `{"a":}`, `01`,
		`"\u00e9\uD83D\uDE00\ud800\udc00\"\\\/\b\f\n\r\t"`, "\"\xff\"", "\"a\x01\"", `"\u12G4"`, `{"a":1}x`,
		`{"k\"ey":{"x":[1,{"y":"]}"}]},"b":-1E+2}`, string(chat1K),
		strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth),
		strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := valid(b)
		want := json.Valid(b) && utf8.Valid(b)
		if want {
			var v any
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber() // a number beyond float64 is valid JSON
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("json.Valid accepts %q that json.Decoder rejects: %v", b, err)
			}
			want = valueDepth(v) <= MaxDepth
		}
		if got != want {
			t.Fatalf("Scanner accepts %q: %v; encoding/json (within the limits): %v", b, got, want)
		}
		// Whatever the input, the trusting walk stays in bounds.
		for it := NewIter(bytes.TrimLeft(b, " \t\r\n")); ; {
			_, v, ok := it.Next()
			if !ok {
				break
			}
			Skip(v, 0)
		}
		if !got {
			return
		}
		s := Scanner{B: b}
		s.WS()
		start := s.I
		switch s.Kind() {
		case String:
			s.Str()
			var want string
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if v := s.StrValue(start); string(v) != want {
				t.Fatalf("StrValue(%q) = %q; encoding/json decodes %q", b, v, want)
			}
			if v := AppendUnescaped(nil, b[start+1:s.I-1]); string(v) != want {
				t.Fatalf("AppendUnescaped(%q) = %q; encoding/json decodes %q", b, v, want)
			}
		case Object, Array:
			s.Value(0)
			if end := Skip(b, start); end != s.I {
				t.Fatalf("Skip(%q) = %d; Scanner ends at %d", b, end, s.I)
			}
			checkIter(t, b[start:s.I])
		}
	})
}

// checkIter compares Iter's walk of the valid container v with
// encoding/json's: the same keys (unescaped) and the same raw values.
func checkIter(t *testing.T, v []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(v))
	if _, err := dec.Token(); err != nil { // '{' or '['
		t.Fatal(err)
	}
	it := NewIter(v)
	for dec.More() {
		var key string
		if v[0] == '{' {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			key = tok.(string)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatal(err)
		}
		k, val, ok := it.Next()
		if !ok {
			t.Fatalf("Iter(%q) ends early (bad %v); encoding/json has %q: %s", v, it.Bad(), key, raw)
		}
		if string(AppendUnescaped(nil, k)) != key || !bytes.Equal(val, raw) {
			t.Fatalf("Iter(%q) yields %q: %s; encoding/json %q: %s", v, k, val, key, raw)
		}
		var sc Scanner
		if sc.B = val; sc.Kind() == String {
			body, _ := StrBody(val)
			var want string
			if err := json.Unmarshal(val, &want); err != nil || string(AppendUnescaped(nil, body)) != want {
				t.Fatalf("AppendUnescaped(%q) = %q; encoding/json decodes %q (%v)", body, AppendUnescaped(nil, body), want, err)
			}
		}
	}
	if _, _, ok := it.Next(); ok || it.Bad() {
		t.Fatalf("Iter(%q) goes on past encoding/json's end (bad %v)", v, it.Bad())
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		t.Fatal(err)
	}
}
