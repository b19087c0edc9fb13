package tokens

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScanPaths checks that scan's fast path (ASCII, in registers) and its
// general path (every character through step, as calibration sees it)
// price every text alike, raw and JSON-escaped.
func TestScanPaths(t *testing.T) {
	var texts []string
	for _, ss := range corpus(t) {
		texts = append(texts, ss...)
	}
	fz, _ := filepath.Glob("testdata/fuzz/FuzzEstimateBound/*")
	for _, f := range fz {
		b, _ := os.ReadFile(f)
		texts = append(texts, string(b))
	}
	rng := rand.New(rand.NewPCG(3, 4))
	pieces := []string{" the", " cat", "x", "é", "中", "\\", "'", "\"", "\n", "  ", "aaa", "ab", "0", "🎉", "\u0000", "Word", " HTTP"}
	for range 2000 {
		var b strings.Builder
		for range rng.IntN(30) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		texts = append(texts, b.String())
	}
	for _, tb := range tables {
		for _, s := range texts {
			q, _ := json.Marshal(s)
			for _, in := range []struct {
				b       []byte
				escaped bool
			}{{[]byte(s), false}, {q[1 : len(q)-1], true}} {
				fast, _ := tb.scan(in.b, in.escaped, nil)
				slow, _ := tb.scan(in.b, in.escaped, make([]int32, 2*len(in.b)+1))
				if fast != slow {
					t.Fatalf("scan(%q, escaped=%v): fast path %d, general path %d", in.b, in.escaped, fast, slow)
				}
			}
		}
	}
}
