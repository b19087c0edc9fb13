package fakeai

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCountWords(t *testing.T) {
	for s, want := range map[string]int{"": 0, "  ": 0, "a": 1, " a  b\tc\n": 3, "echo: héllo wörld": 3, "a\u00a0b": 2} {
		if got := countWords(s); got != want {
			t.Errorf("countWords(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestTruncateWords(t *testing.T) {
	cases := []struct {
		s    string
		n    int
		want string
		cut  bool
	}{
		{"echo: a b c", 2, "echo: a", true},
		{"echo: a b c", 4, "echo: a b c", false},
		{"echo: a b c", 9, "echo: a b c", false},
		{"echo: a  ", 2, "echo: a  ", false},
		{"echo:  é  ü", 2, "echo:  é", true},
	}
	for _, tc := range cases {
		got, cut := truncateWords(tc.s, tc.n)
		if got != tc.want || cut != tc.cut {
			t.Errorf("truncateWords(%q, %d) = %q, %v; want %q, %v", tc.s, tc.n, got, cut, tc.want, tc.cut)
		}
	}
}

func TestSplitPieces(t *testing.T) {
	for _, s := range []string{"", "a", "echo: hello", "échø: ünïcode ✓ text", strings.Repeat("ab", 100)} {
		for n := 1; n <= 12; n++ {
			pieces := splitPieces(s, n)
			if len(pieces) != n {
				t.Fatalf("%q/%d: %d pieces", s, n, len(pieces))
			}
			if strings.Join(pieces, "") != s {
				t.Fatalf("%q/%d: pieces %q", s, n, pieces)
			}
			total := utf8.RuneCountInString(s)
			for _, p := range pieces {
				if !utf8.ValidString(p) {
					t.Fatalf("%q/%d: invalid piece %q", s, n, p)
				}
				if c := utf8.RuneCountInString(p); c < total/n || c > total/n+1 {
					t.Fatalf("%q/%d: uneven pieces %q", s, n, pieces)
				}
			}
		}
	}
}

func TestFiller(t *testing.T) {
	for _, n := range []int{0, 1, 77, 78, 1000} {
		if got := filler(n); len(got) != n {
			t.Fatalf("filler(%d) has %d bytes", n, len(got))
		}
	}
}

func TestMakeAnswer(t *testing.T) {
	o := options{chunks: 5}
	if a := makeAnswer("hi there", 0, &o); a.text != "echo: hi there" || a.finish != "stop" || a.tokens != 3 {
		t.Fatalf("%+v", a)
	}
	if a := makeAnswer("hi there", 2, &o); a.text != "echo: hi" || a.finish != "length" || a.tokens != 2 {
		t.Fatalf("%+v", a)
	}
	o.chunkSize = 10
	if a := makeAnswer("hi", 1, &o); len(a.text) != 50 || a.finish != "stop" {
		t.Fatalf("%+v", a)
	}
}
