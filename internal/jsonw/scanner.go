// Package jsonw is Sluice's one JSON walker: zero-allocation readers over
// request and answer bodies that find the few fields Sluice needs without
// decoding a body whole.
//
// Scanner validates as it goes. It accepts exactly the JSON text of RFC 8259
// (what encoding/json.Valid accepts) with two limits: strings must be valid
// UTF-8 (encoding/json accepts invalid bytes and decodes them as U+FFFD), and
// arrays and objects nest at most MaxDepth deep. Iter, Skip and Field walk a
// value that a Scanner already accepted: they check only what they must to
// stay in bounds, and stop (Iter.Bad) on anything else.
//
// Nothing here allocates, except AppendUnescaped when dst lacks room and
// Scanner.StrValue for a string with escapes (it returns a copy).
// jsonw imports only the standard library.
package jsonw

import "unicode/utf8"

// MaxDepth bounds the nesting of arrays and objects that Scanner.Value
// accepts: a value passed depth d may hold containers down to MaxDepth.
const MaxDepth = 128

// Kind classifies the value that starts at a byte, by that byte alone.
type Kind byte

// The kinds Scanner.Kind reports.
const (
	Invalid Kind = 0   // no JSON value starts here (or the input ends)
	String  Kind = 's' // a string: '"'
	Object  Kind = 'o' // an object: '{'
	Array   Kind = 'a' // an array: '['
	True    Kind = 't' // 't', presumably true
	False   Kind = 'f' // 'f', presumably false
	Null    Kind = 'n' // 'n', presumably null
	Number  Kind = 'd' // '-' or a digit
)

// Scanner walks a JSON document in B from I. Every method that accepts
// something advances I past it and reports whether the input was well
// formed there; on failure I is left somewhere inside the bad value (where
// the error is, or before it), except where a method says otherwise. The
// zero value scans nothing; set B (and I) directly.
type Scanner struct {
	// B is the document.
	B []byte
	// I is the offset of the next byte to read.
	I int
	// Escaped reports that the last string Str scanned held a backslash
	// escape (so its content differs from its raw bytes).
	Escaped bool
}

// WS skips white space (space, tab, newline, carriage return).
func (s *Scanner) WS() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Byte consumes c if it is the next byte.
func (s *Scanner) Byte(c byte) bool {
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Kind classifies the next value without consuming anything.
func (s *Scanner) Kind() Kind {
	if s.I >= len(s.B) {
		return Invalid
	}
	switch c := s.B[s.I]; {
	case c == '"':
		return String
	case c == '{':
		return Object
	case c == '[':
		return Array
	case c == 't', c == 'f', c == 'n':
		return Kind(c)
	case c == '-' || (c >= '0' && c <= '9'):
		return Number
	}
	return Invalid
}

// Value skips any JSON value found at nesting depth (the document's top
// value is at depth 0 or 1 as the caller counts; containers deeper than
// MaxDepth fail). White space before the value is not skipped.
func (s *Scanner) Value(depth int) bool {
	if depth > MaxDepth {
		return false
	}
	switch s.Kind() {
	case String:
		return s.Str()
	case Number:
		return s.Number()
	case True:
		return s.Literal("true")
	case False:
		return s.Literal("false")
	case Null:
		return s.Literal("null")
	case Object:
		s.I++
		for first := true; ; first = false {
			s.WS()
			if first && s.Byte('}') {
				return true
			}
			if !s.Str() {
				return false
			}
			s.WS()
			if !s.Byte(':') {
				return false
			}
			s.WS()
			if !s.Value(depth + 1) {
				return false
			}
			s.WS()
			if s.Byte(',') {
				continue
			}
			return s.Byte('}')
		}
	case Array:
		s.I++
		for first := true; ; first = false {
			s.WS()
			if first && s.Byte(']') {
				return true
			}
			if !s.Value(depth + 1) {
				return false
			}
			s.WS()
			if s.Byte(',') {
				continue
			}
			return s.Byte(']')
		}
	}
	return false
}

// plainASCII marks the bytes a JSON string holds as they are: printable
// ASCII other than the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Str skips a JSON string, checking its escapes and its UTF-8, and sets
// Escaped.
func (s *Scanner) Str() bool {
	s.Escaped = false
	if !s.Byte('"') {
		return false
	}
	b := s.B
	for i := s.I; i < len(b); {
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
			s.I = i + 1
			return true
		case c == '\\':
			s.Escaped = true
			if i+1 >= len(b) {
				return false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hex4(b[i+2:i+6]) < 0 {
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

// StrValue returns the content of the string that started at start and
// that Str just scanned: a sub-slice of B, or, when the string held
// escapes, an unescaped copy (the one allocation in this package).
func (s *Scanner) StrValue(start int) []byte {
	raw := s.B[start+1 : s.I-1]
	if s.Escaped {
		return AppendUnescaped(make([]byte, 0, len(raw)), raw)
	}
	return raw
}

// Literal consumes lit (true, false or null) if it comes next.
func (s *Scanner) Literal(lit string) bool {
	if len(s.B)-s.I >= len(lit) && string(s.B[s.I:s.I+len(lit)]) == lit {
		s.I += len(lit)
		return true
	}
	return false
}

// Bool consumes true or false.
func (s *Scanner) Bool() (v, ok bool) {
	if s.Literal("true") {
		return true, true
	}
	return false, s.Literal("false")
}

// Number skips a JSON number; on failure I does not move.
func (s *Scanner) Number() bool {
	b, i := s.B, s.I
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
	s.I = i
	return true
}

// Integer scans a number that must be a whole int64. A whole number out of
// int64's range returns false with I past it (callers treat it as out of
// range); any other failure (not a number, a fraction, an exponent) leaves
// I where it was. It decides as strconv.ParseInt does, without its error
// allocation: a number whose digits overflow uint64 is out of range even
// if a fraction follows.
func (s *Scanner) Integer() (int64, bool) {
	start := s.I
	if !s.Number() {
		return 0, false
	}
	digits, neg := s.B[start:s.I], s.B[start] == '-'
	if neg {
		digits = digits[1:]
	}
	const cutoff = (1<<64-1)/10 + 1 // u*10 overflows uint64 from here
	var u uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			s.I = start // a fraction or exponent: so a type error names what was there
			return 0, false
		}
		if u >= cutoff {
			return 0, false // I stays past the number
		}
		u1 := u*10 + uint64(c-'0')
		if u1 < u {
			return 0, false
		}
		u = u1
	}
	switch {
	case neg && u <= 1<<63:
		return -int64(u), true // int64(1<<63) is the lowest int64, its own negation
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}
