package proxy

import (
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// The scanner: a zero-allocation JSON reader over a request or answer body
// (values, strings, numbers), used by the request scan (scan.go), the usage
// reader (usage.go) and the cache checks.

// scanner walks a JSON document. Every method advances i past what it
// accepted and reports whether the input was well formed.
type scanner struct {
	b []byte
	i int
	// escaped reports that the last string scanned held a backslash escape.
	escaped bool
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) byte(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// kind classifies the next value: 's' string, 'o' object, 'a' array,
// 't'/'f' booleans, 'n' null, 'd' number, 0 anything else.
func (s *scanner) kind() byte {
	if s.i >= len(s.b) {
		return 0
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return 's'
	case c == '{':
		return 'o'
	case c == '[':
		return 'a'
	case c == 't', c == 'f', c == 'n':
		return c
	case c == '-' || (c >= '0' && c <= '9'):
		return 'd'
	}
	return 0
}

// value skips any JSON value at nesting depth.
func (s *scanner) value(depth int) bool {
	if depth > maxJSONDepth {
		return false
	}
	switch s.kind() {
	case 's':
		return s.string()
	case 'd':
		return s.number()
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	case 'o':
		s.i++
		for first := true; ; first = false {
			s.ws()
			if first && s.byte('}') {
				return true
			}
			if !s.string() {
				return false
			}
			s.ws()
			if !s.byte(':') {
				return false
			}
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.byte(',') {
				continue
			}
			return s.byte('}')
		}
	case 'a':
		s.i++
		for first := true; ; first = false {
			s.ws()
			if first && s.byte(']') {
				return true
			}
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.byte(',') {
				continue
			}
			return s.byte(']')
		}
	}
	return false
}

// string skips a JSON string, checking escapes and UTF-8.
func (s *scanner) string() bool {
	s.escaped = false
	if !s.byte('"') {
		return false
	}
	b := s.b
	for i := s.i; i < len(b); {
		// Fast path: a run of plain ASCII characters.
		for i < len(b) && plainASCII[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return true
		case c == '\\':
			s.escaped = true
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
					return false
				}
				i += 6
			default:
				return false
			}
		case c < 0x20:
			return false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return false
			}
			i += size
		}
	}
	return false
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// strValue returns the content of the string that started at start and was
// just scanned: a sub-slice of the body, or an unescaped copy.
func (s *scanner) strValue(start int) []byte {
	if s.escaped {
		return unescape(s.b[start:s.i])
	}
	return s.b[start+1 : s.i-1]
}

// unescape decodes a JSON string literal (quotes included) that has escapes.
// The literal was already validated, so decoding cannot fail.
func unescape(lit []byte) []byte {
	var v string
	if err := json.Unmarshal(lit, &v); err != nil {
		return nil
	}
	return []byte(v)
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i >= len(lit) && string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return true
	}
	return false
}

func (s *scanner) bool() (v, ok bool) {
	if s.literal("true") {
		return true, true
	}
	return false, s.literal("false")
}

// number skips a JSON number.
func (s *scanner) number() bool {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	s.i = i
	return true
}

// integer scans a number that must be a whole int64. A whole number out of
// int64's range returns false with the scanner past it (the caller treats it
// as out of range); any other failure leaves the scanner where it was.
func (s *scanner) integer() (int64, bool) {
	start := s.i
	if !s.number() {
		return 0, false
	}
	v, err := strconv.ParseInt(string(s.b[start:s.i]), 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, false // s.i stays past the digits
		}
		s.i = start // so the type error names what was there
		return 0, false
	}
	return v, true
}
