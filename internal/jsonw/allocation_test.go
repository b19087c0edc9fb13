//go:build !race

package jsonw

import "testing"

// TestNoAllocs proves the walker stays off the heap: it reads every request
// body and every answer's usage.
func TestNoAllocs(t *testing.T) {
	lit := []byte(`"tab\there \u00e9\uD83D\uDE00 \"quoted\""`)
	buf := make([]byte, 0, 256)
	for name, f := range map[string]func(){
		"Value": func() {
			if !valid(chat1K) {
				t.Fatal("chat1K invalid")
			}
		},
		"Str escaped": func() {
			s := Scanner{B: lit}
			if !s.Str() || !s.Escaped {
				t.Fatal("Str failed")
			}
		},
		"Integer": func() {
			s := Scanner{B: []byte(`-9223372036854775808`)}
			if _, ok := s.Integer(); !ok {
				t.Fatal("Integer failed")
			}
		},
		"Integer out of range": func() {
			s := Scanner{B: []byte(`9223372036854775808`)}
			if _, ok := s.Integer(); ok {
				t.Fatal("Integer accepted an overflow")
			}
		},
		"StrValue plain": func() {
			s := Scanner{B: []byte(`"plain"`)}
			if !s.Str() || len(s.StrValue(0)) != 5 {
				t.Fatal("StrValue failed")
			}
		},
		"AppendUnescaped": func() {
			buf = AppendUnescaped(buf[:0], lit[1:len(lit)-1])
		},
		"Iter": func() {
			n := 0
			it := NewIter(chat1K)
			for _, v, ok := it.Next(); ok; _, v, ok = it.Next() {
				msgs := NewIter(v)
				for _, m, ok := msgs.Next(); ok; _, m, ok = msgs.Next() {
					if _, ok := StrBody(Field(m, "content")); ok {
						n++
					}
				}
			}
			if n != 2 {
				t.Fatalf("Iter found %d contents; want 2", n)
			}
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call; want 0", name, n)
		}
	}
}
