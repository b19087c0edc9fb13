package tokens

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// countText is the exact token count of s in e (Fallback: o200k_base × 5/4).
func countText(t testing.TB, e Encoding, s string) int64 {
	n, err := codec(base(e)).Count(s)
	if err != nil {
		t.Fatal(err)
	}
	return scaleFor(e, int64(n))
}

// FuzzEstimateBound checks the estimate against the exact count on
// arbitrary UTF-8, alone and as a chat message, in every encoding.
//
// On realistic text Estimate is a true upper bound (TestEstimateBound). On
// adversarial strings it cannot be one and stay tight: without the
// vocabulary, a pseudo-word built from common letter pairs ("aYstArABAB")
// or dense punctuation looks like text that tokenizes well, and fuzzing
// finds such strings a token or two over the estimate within seconds. What
// holds for every string, and is checked here, is the documented worst
// case: Count <= Estimate + Estimate/4 + 2.
func FuzzEstimateBound(f *testing.F) {
	files, _ := filepath.Glob("testdata/corpus/*.txt")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, p := range strings.Split(string(b), "\n\n") {
			f.Add(p)
		}
	}
	for _, s := range []string{"", "a", " ", "\n\n\n", "12345678901234567890", "🙋‍♀️", "\x00\x01\x7f", "\\u0000", strings.Repeat("a", 300), strings.Repeat("🎉", 40)} {
		f.Add(s)
	}
	c := NewCounter(Options{})
	within := func(est, n int64) bool { return n <= est+est/4+2 }
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip()
		}
		body, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": s}}})
		for _, e := range []Encoding{O200kBase, Cl100kBase, Fallback} {
			if est, n := e.EstimateText([]byte(s)), countText(t, e, s); !within(est, n) {
				t.Errorf("%s: EstimateText %d, count %d for %q", e, est, n, s)
			}
			n, err := c.Count(Chat, modelOf(e), body)
			if est := c.EstimateFor(e, Chat, body); err != nil || !within(est, n) {
				t.Errorf("%s: Estimate %d, Count %d (%v) for %q", e, est, n, err, s)
			}
		}
		if est, n := EstimateText([]byte(s)), countText(t, Cl100kBase, s); !within(est, n) {
			t.Errorf("EstimateText %d, cl100k count %d for %q", est, n, s)
		}
	})
}

// FuzzBody feeds arbitrary bytes as request bodies: nothing panics,
// Estimate stays within bounds of the body's size, and Count either fails
// with ErrBody or is itself bounded by the estimate's worst case.
func FuzzBody(f *testing.F) {
	f.Add([]byte(`{"messages":[{"role":"user","content":"hi"}]}`))
	f.Add(body1KB)
	f.Add([]byte(`{"input":[[1,2],[3]],"prompt":["a","b"],"instructions":"x","tools":[{"a":1}]}`))
	f.Add([]byte(`{"input":[{"type":"function_call","name":"f","arguments":"{}"},{"type":"reasoning","summary":[]}]}`))
	c := NewCounter(Options{CacheEntries: 256})
	f.Fuzz(func(t *testing.T, body []byte) {
		// Text costs at most 8 tokens a byte; every content part that is not
		// text is priced as an image (DefaultImageTokens, scaled by 5/4 for
		// the fallback encoding), and each part is at least one object.
		bound := 8*int64(len(body)) + 64 + (DefaultImageTokens*5/4+1)*int64(bytes.Count(body, []byte("{")))
		for kind := Chat; kind <= Responses; kind++ {
			est := c.Estimate(kind, body)
			if est < 0 || est > bound {
				t.Errorf("kind %d: Estimate %d for %d bytes (bound %d)", kind, est, len(body), bound)
			}
			n, err := c.Count(kind, "gpt-4o", body)
			if err != nil && !errors.Is(err, ErrBody) {
				t.Errorf("kind %d: Count error %v", kind, err)
			}
			if n < 0 {
				t.Errorf("kind %d: Count %d", kind, n)
			}
		}
	})
}

func modelOf(e Encoding) string {
	return map[Encoding]string{O200kBase: "gpt-4o", Cl100kBase: "gpt-4", Fallback: "llama-3.1-8b"}[e]
}
