package jsonw

import (
	"bytes"
	"unicode/utf8"
)

// AppendUnescaped appends the decoded text of s, the raw content of a JSON
// string (between its quotes), to dst. For a string Scanner.Str accepts
// the result is what encoding/json decodes; malformed escapes decode as in
// Unescape, and other bytes are copied as they are.
func AppendUnescaped(dst, s []byte) []byte {
	for len(s) > 0 {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		r, n := Unescape(s[i:])
		dst = utf8.AppendRune(dst, r)
		s = s[i+n:]
	}
	return dst
}

// Unescape decodes the JSON escape at the start of s (s[0] == '\\') and
// returns the rune and the bytes consumed. A surrogate pair (\uD83D\uDE00)
// is one rune; a lone surrogate decodes as U+FFFD, as encoding/json
// decodes it. A malformed \u escape decodes as U+FFFD and consumes two
// bytes; another escaped byte decodes as itself.
func Unescape(s []byte) (rune, int) {
	if len(s) < 2 {
		return utf8.RuneError, len(s)
	}
	switch s[1] {
	case 'n':
		return '\n', 2
	case 't':
		return '\t', 2
	case 'r':
		return '\r', 2
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'u':
		r := hex4(s[2:])
		if r < 0 {
			return utf8.RuneError, 2
		}
		if r >= 0xD800 && r < 0xDC00 && len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
			if lo := hex4(s[8:]); lo >= 0xDC00 && lo < 0xE000 {
				return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), 12
			}
		}
		if r >= 0xD800 && r < 0xE000 {
			return utf8.RuneError, 6
		}
		return r, 6
	default: // \" \\ \/
		return rune(s[1]), 2
	}
}

// Hex4 parses the four hex digits at the start of s, or returns -1 (also
// when s is shorter).
func Hex4(s []byte) rune { return hex4(s) }

func hex4(s []byte) rune {
	if len(s) < 4 {
		return -1
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}
