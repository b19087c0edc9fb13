package fakeai

import (
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// answerPrefix starts every generated answer.
const answerPrefix = "echo: "

// answer is the generated text of one choice.
type answer struct {
	text   string
	finish string // "stop" or "length"
	tokens int    // completion tokens of one choice (words)
}

// makeAnswer derives the answer from the input text: "echo: " + input,
// truncated to maxTokens words (0 = no limit), or filler of chunks*chunkSize
// bytes when X-Fake-Chunk-Size is set.
func makeAnswer(input string, maxTokens int, o *options) answer {
	if o.chunkSize > 0 {
		t := filler(o.chunks * o.chunkSize)
		return answer{text: t, finish: "stop", tokens: countWords(t)}
	}
	a := answer{text: answerPrefix + input, finish: "stop"}
	if maxTokens > 0 {
		if t, cut := truncateWords(a.text, maxTokens); cut {
			a.text, a.finish = t, "length"
		}
	}
	a.tokens = countWords(a.text)
	return a
}

// isSpace reports whether the rune r separates words.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || r == '\n' || r == '\t' || r == '\r' || r == '\v' || r == '\f'
	}
	return unicode.IsSpace(r)
}

// countWords counts whitespace-separated words, the fake's token unit.
func countWords(s string) int {
	n, in := 0, false
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		i += size
		if isSpace(r) {
			in = false
		} else if !in {
			in = true
			n++
		}
	}
	return n
}

// truncateWords keeps the first n words of s (up to the end of the n-th) and
// reports whether anything but space was dropped.
func truncateWords(s string, n int) (string, bool) {
	words, in := 0, false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if isSpace(r) {
			if in && words == n {
				if countWords(s[i:]) == 0 {
					return s, false
				}
				return s[:i], true
			}
			in = false
		} else if !in {
			in = true
			words++
		}
		i += size
	}
	return s, false
}

// splitPieces cuts s into exactly n pieces of nearly equal rune counts whose
// concatenation is s; pieces may be empty when s has fewer than n runes.
func splitPieces(s string, n int) []string {
	pieces := make([]string, n)
	total := utf8.RuneCountInString(s)
	if total == len(s) { // ASCII: byte offsets are rune offsets
		for i := range pieces {
			pieces[i] = s[i*total/n : (i+1)*total/n]
		}
		return pieces
	}
	start, runes, i := 0, 0, 0
	for off := range s {
		for i < n-1 && runes == (i+1)*total/n {
			pieces[i] = s[start:off]
			start = off
			i++
		}
		runes++
	}
	for ; i < n-1; i++ {
		pieces[i] = s[start:start]
	}
	pieces[n-1] = s[start:]
	return pieces
}

const fillerText = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "

// filler returns n bytes of deterministic ASCII words.
func filler(n int) string {
	var b strings.Builder
	b.Grow(n)
	for b.Len() < n {
		b.WriteString(fillerText[:min(len(fillerText), n-b.Len())])
	}
	return b.String()
}

// contentPart is an element of an array-valued message content.
type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// contentText returns the text of a message content that is a string, an
// array of parts (text parts joined by a space) or null.
func contentText(raw json.RawMessage) (string, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case '[':
		var parts []contentPart
		if json.Unmarshal(raw, &parts) != nil {
			return "", false
		}
		var b strings.Builder
		for _, p := range parts {
			if p.Text == "" {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(p.Text)
		}
		return b.String(), true
	}
	return "", false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\n' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
