package tokens

import (
	"encoding/json"
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

// FuzzEstimateBound checks that the estimate bounds the exact count, for
// the text alone and as the content of a chat message, in every encoding.
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
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip()
		}
		body, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": s}}})
		for _, e := range []Encoding{O200kBase, Cl100kBase, Fallback} {
			if est, n := e.EstimateText([]byte(s)), countText(t, e, s); est < n {
				t.Errorf("%s: EstimateText %d < count %d for %q", e, est, n, s)
			}
			n, err := c.Count(Chat, modelOf(e), body)
			if est := c.EstimateFor(e, Chat, body); err != nil || est < n {
				t.Errorf("%s: Estimate %d < Count %d (%v) for %q", e, est, n, err, s)
			}
		}
		if est, n := EstimateText([]byte(s)), countText(t, Cl100kBase, s); est < n {
			t.Errorf("EstimateText %d < cl100k count %d for %q", est, n, s)
		}
	})
}

func modelOf(e Encoding) string {
	return map[Encoding]string{O200kBase: "gpt-4o", Cl100kBase: "gpt-4", Fallback: "llama-3.1-8b"}[e]
}
