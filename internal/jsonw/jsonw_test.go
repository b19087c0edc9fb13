package jsonw

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// chat1K is a realistic ~1 KB chat request, with escapes and non-ASCII.
var chat1K = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant for a travel booking site. Answer briefly, in the user's language, and never invent prices or availability."},{"role":"user","content":"` +
	strings.Repeat(`I want to fly from Lisbon to Tōkyō in March with two children. \"Soon\".\n`, 12) +
	`"}],"temperature":0.7,"max_tokens":256,"user":"user-1234","stream":false,"stop":null,"n":1,"logit_bias":{"50256":-100}}`)

// valid reports whether s accepts b whole: one value, white space around.
func valid(b []byte) bool {
	s := Scanner{B: b}
	s.WS()
	if !s.Value(0) {
		return false
	}
	s.WS()
	return s.I == len(b)
}

func TestValue(t *testing.T) {
	f := func(doc string, want bool) {
		t.Helper()
		if got := valid([]byte(doc)); got != want {
			t.Fatalf("valid(%q) = %v; want %v", doc, got, want)
		}
	}
	for _, doc := range []string{
		`{}`, `[]`, `""`, `0`, `-0`, `1.5e+3`, `-12.25E-2`, `true`, `false`, `null`,
		` { "a" : [ 1 , 2 , { } ] , "b" : "x" } `, `"\u00e9\uD83D\uDE00\ud800\"\\\/\b\f\n\r\t"`,
		`"é中🎉"`, `[[[]]]`, `{"":""}`, "\t\r\n[1]\n", string(chat1K),
	} {
		f(doc, true)
	}
	for _, doc := range []string{
		``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `{'a':1}`, `[1 2]`,
		`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `0x1`, `NaN`, `tru`, `nul`, `True`,
		`"abc`, `"\x"`, `"\u12"`, `"\u12G4"`, "\"a\x01\"", "\"\xff\"", "\"\xc3\"", `"\`,
		`{"a":1}x`, `[] []`, `{"a":1 "b":2}`, "\x00", `[-]`, `{"a":-}`,
	} {
		f(doc, false)
	}
	// The depth limit: the top value is at depth 0, and no value (scalars
	// included) may sit deeper than MaxDepth.
	f(strings.Repeat("[", MaxDepth)+"1"+strings.Repeat("]", MaxDepth), true)
	f(strings.Repeat("[", MaxDepth+1)+"1"+strings.Repeat("]", MaxDepth+1), false)
	f(strings.Repeat("[", MaxDepth+1)+strings.Repeat("]", MaxDepth+1), true)
	f(strings.Repeat("[", MaxDepth+2)+strings.Repeat("]", MaxDepth+2), false)
}

func TestKind(t *testing.T) {
	for doc, want := range map[string]Kind{
		`"x"`: String, `{}`: Object, `[]`: Array, `true`: True, `false`: False,
		`null`: Null, `-1`: Number, `7`: Number, `x`: Invalid, ``: Invalid, ` 1`: Invalid,
	} {
		s := Scanner{B: []byte(doc)}
		if got := s.Kind(); got != want {
			t.Errorf("Kind(%q) = %q; want %q", doc, got, want)
		}
	}
}

func TestStrValue(t *testing.T) {
	f := func(lit, want string, escaped bool) {
		t.Helper()
		s := Scanner{B: []byte(lit)}
		if !s.Str() {
			t.Fatalf("Str(%s) failed", lit)
		}
		if s.Escaped != escaped || s.I != len(lit) {
			t.Fatalf("Str(%s): Escaped %v, I %d; want %v, %d", lit, s.Escaped, s.I, escaped, len(lit))
		}
		if got := s.StrValue(0); string(got) != want {
			t.Fatalf("StrValue(%s) = %q; want %q", lit, got, want)
		}
	}
	f(`"plain"`, "plain", false)
	f(`""`, "", false)
	f(`"é"`, "é", false)
	f(`"a\"b"`, `a"b`, true)
	f(`"\\\/\b\f\n\r\t"`, "\\/\b\f\n\r\t", true)
	f(`"\u00e9\u4E2D"`, "é中", true)
	f(`"\uD83D\uDE00"`, "😀", true)
	f(`"\ud800"`, "\uFFFD", true)        // lone high surrogate
	f(`"\udc00x"`, "\uFFFDx", true)      // lone low surrogate
	f(`"\ud800\u0041"`, "\uFFFDA", true) // high surrogate, then no low one
	f(`"\ud800\ud800"`, "\uFFFD\uFFFD", true)
}

func TestInteger(t *testing.T) {
	f := func(doc string, want int64, ok bool, end int) {
		t.Helper()
		s := Scanner{B: []byte(doc)}
		v, got := s.Integer()
		if v != want || got != ok || s.I != end {
			t.Fatalf("Integer(%s) = %d, %v, I %d; want %d, %v, %d", doc, v, got, s.I, want, ok, end)
		}
	}
	f(`0`, 0, true, 1)
	f(`-42,`, -42, true, 3)
	f(`9223372036854775807`, 1<<63-1, true, 19)
	f(`9223372036854775808`, 0, false, 19) // beyond int64: I past it
	f(`-9223372036854775809`, 0, false, 20)
	f(`1.5`, 0, false, 0) // not whole: I stays
	f(`1e3`, 0, false, 0)
	f(`"1"`, 0, false, 0)
	f(`-`, 0, false, 0)
}

func TestBoolLiteral(t *testing.T) {
	for doc, want := range map[string][2]bool{`true`: {true, true}, `false`: {false, true}, `null`: {false, false}, `tru`: {false, false}} {
		s := Scanner{B: []byte(doc)}
		if v, ok := s.Bool(); v != want[0] || ok != want[1] {
			t.Errorf("Bool(%s) = %v, %v; want %v", doc, v, ok, want)
		}
	}
}

func TestAppendUnescaped(t *testing.T) {
	f := func(body, want string) {
		t.Helper()
		if got := AppendUnescaped([]byte("<"), []byte(body)); string(got) != "<"+want {
			t.Fatalf("AppendUnescaped(%q) = %q; want %q", body, got[1:], want)
		}
	}
	f(``, ``)
	f(`abc`, `abc`)
	f(`a\nb\u0041\"`, "a\nbA\"")
	f(`\uD83D\uDE00!`, "😀!")
	// Malformed escapes (which Str rejects) decode without panicking.
	f(`\u12`, "\uFFFD12")
	f(`\x`, "x")
	f(`\`, "\uFFFD")
}

func TestIter(t *testing.T) {
	type kv struct{ k, v string }
	f := func(doc string, want []kv, bad bool) {
		t.Helper()
		it := NewIter([]byte(doc))
		var got []kv
		for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
			got = append(got, kv{string(k), string(v)})
		}
		if len(got) != len(want) || it.Bad() != bad {
			t.Fatalf("Iter(%s) = %q, bad %v; want %q, bad %v", doc, got, it.Bad(), want, bad)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("Iter(%s) = %q; want %q", doc, got, want)
			}
		}
	}
	f(`{}`, nil, false)
	f(`[]`, nil, false)
	f(`{ "a" : 1 , "b\"c" : [1, {"x": "]"}], "d": "}" }`, []kv{{"a", "1"}, {`b\"c`, `[1, {"x": "]"}]`}, {"d", `"}"`}}, false)
	f(`[1, "two", null, {"a": [true]}, -2.5e3]`, []kv{{"", "1"}, {"", `"two"`}, {"", "null"}, {"", `{"a": [true]}`}, {"", "-2.5e3"}}, false)
	f(`{"a":"x\\"}`, []kv{{"a", `"x\\"`}}, false)
	f(`{"a" 1}`, nil, true)
	f(`{1:2}`, nil, true)
	f(`{"a":"unterminated}`, nil, true)
	f(`["a", "b`, []kv{{"", `"a"`}}, true)
	// A missing close at the very end is not noticed: the walk trusts its
	// input.
	f(`["a", [1, 2]`, []kv{{"", `"a"`}, {"", "[1, 2]"}}, false)
	f(`"str"`, nil, false)
	f(`7`, nil, false)
	it := NewIter([]byte(`{"a":1}`))
	if !it.IsObject() {
		t.Fatal("IsObject() false for an object")
	}
	if it = NewIter([]byte(`[1]`)); it.IsObject() {
		t.Fatal("IsObject() true for an array")
	}
}

func TestField(t *testing.T) {
	v := []byte(`{"type":"text","text":"hi","nested":{"detail":"low"},"text":"again"}`)
	for key, want := range map[string]string{"type": `"text"`, "text": `"hi"`, "nested": `{"detail":"low"}`, "none": ""} {
		if got := Field(v, key); string(got) != want || (want == "") != (got == nil) {
			t.Errorf("Field(%s) = %q; want %q", key, got, want)
		}
	}
	if got := Field([]byte(`[1]`), "a"); got != nil {
		t.Errorf("Field of an array = %q; want nil", got)
	}
	if s, ok := StrBody([]byte(`"a\nb"`)); !ok || string(s) != `a\nb` {
		t.Errorf("StrBody = %q, %v", s, ok)
	}
	if _, ok := StrBody([]byte(`12`)); ok {
		t.Error("StrBody of a number reports a string")
	}
}

func TestSkip(t *testing.T) {
	f := func(doc string, i, want int) {
		t.Helper()
		if got := Skip([]byte(doc), i); got != want {
			t.Fatalf("Skip(%q, %d) = %d; want %d", doc, i, got, want)
		}
	}
	f(`"a\"b" x`, 0, 6)
	f(`{"a":[1,"]"]},`, 0, 13)
	f(`12 `, 0, 2)
	f(`true]`, 0, 4)
	f(`[1,2`, 0, -1)
	f(`"abc`, 0, -1)
	f(`,`, 0, -1)
	f(`x`, 1, -1)
	if got := SkipString([]byte(`\"`), 1); got != -1 {
		t.Fatalf("SkipString past a lone quote = %d; want -1", got)
	}
	if got := SkipWS([]byte(" \t\r\nx"), 0); got != 4 {
		t.Fatalf("SkipWS = %d; want 4", got)
	}
	// Skip agrees with the validating Scanner on valid input.
	s := Scanner{B: chat1K}
	if !s.Value(0) || Skip(chat1K, 0) != s.I {
		t.Fatalf("Skip(chat1K) = %d, Scanner %d", Skip(chat1K, 0), s.I)
	}
	if !bytes.Equal(Field(chat1K, "model"), []byte(`"gpt-4o-mini"`)) {
		t.Fatalf("Field(model) = %q", Field(chat1K, "model"))
	}
	if !json.Valid(chat1K) {
		t.Fatal("chat1K is not valid JSON")
	}
}

// TestIntegerParseInt checks Integer against strconv.ParseInt, whose
// decisions it copies: value, ok, and where I ends.
func TestIntegerParseInt(t *testing.T) {
	for _, doc := range []string{
		"0", "-0", "7", "-7", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
		"-9223372036854775809", "18446744073709551615", "18446744073709551616", "99999999999999999999",
		"9223372036854775808.5", "99999999999999999999.5", "184467440737095516150.5", "1.0", "1e2", "-1E+2", "12345678901234567890123",
	} {
		s := Scanner{B: []byte(doc)}
		v, ok := s.Integer()
		want, err := strconv.ParseInt(doc, 10, 64)
		end := len(doc)
		if err != nil {
			want = 0
			if !errors.Is(err, strconv.ErrRange) {
				end = 0
			}
		}
		if v != want || ok != (err == nil) || s.I != end {
			t.Errorf("Integer(%s) = %d, %v, I %d; ParseInt %d, %v (I %d)", doc, v, ok, s.I, want, err, end)
		}
	}
}
