package jsonw

import "bytes"

// The trusting walk: for a value a Scanner already accepted (the proxy
// validates every request body before anything else reads it). It finds
// strings with bytes.IndexByte and containers by counting brackets, several
// times faster than validating again; on malformed input it never reads out
// of bounds and reports failure (-1, Iter.Bad) wherever it notices.

// SkipWS returns the index of the first byte at or after i in b that is not
// white space.
func SkipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// SkipString returns the index after the string literal whose opening
// quote is at b[i], or -1 when it does not end.
func SkipString(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	open := i
	for i++; ; i++ {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		k := i - 1 // an odd number of backslashes before it escapes the quote
		for k > open && b[k] == '\\' {
			k--
		}
		if (i-k)%2 == 1 {
			return i + 1
		}
	}
}

// Skip returns the index after the value starting at b[i], or -1. A
// number or literal ends at the next delimiter, unchecked.
func Skip(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = SkipString(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// Iter walks the members of an object or the elements of an array, a
// whole value already validated (see Skip).
type Iter struct {
	b   []byte
	i   int
	end byte // '}' or ']'
	bad bool // malformed input seen
}

// NewIter starts iterating the object or array v (a whole value, no white
// space before it); for anything else it yields nothing.
func NewIter(v []byte) Iter {
	if len(v) < 2 || (v[0] != '{' && v[0] != '[') {
		return Iter{}
	}
	return Iter{b: v, i: 1, end: v[0] + 2} // '{'+2 == '}', '['+2 == ']'
}

// IsObject reports whether the iterator was started on an object.
func (it *Iter) IsObject() bool { return it.end == '}' }

// Bad reports that the iteration stopped at malformed input.
func (it *Iter) Bad() bool { return it.bad }

// Next returns the next member of an object (key is the raw content of its
// quotes, still escaped) or element of an array (key nil), as raw value
// bytes; ok is false at the end or at malformed input.
func (it *Iter) Next() (key, val []byte, ok bool) {
	if it.b == nil {
		return nil, nil, false
	}
	i := SkipWS(it.b, it.i)
	if i < len(it.b) && it.b[i] == ',' {
		i = SkipWS(it.b, i+1)
	}
	if i >= len(it.b) || it.b[i] == it.end {
		it.b = nil
		return nil, nil, false
	}
	if it.end == '}' {
		if it.b[i] != '"' {
			return it.fail()
		}
		k := SkipString(it.b, i)
		if k < 0 {
			return it.fail()
		}
		key = it.b[i+1 : k-1]
		if i = SkipWS(it.b, k); i >= len(it.b) || it.b[i] != ':' {
			return it.fail()
		}
		i = SkipWS(it.b, i+1)
	}
	j := Skip(it.b, i)
	if j < 0 {
		return it.fail()
	}
	it.i = j
	return key, it.b[i:j], true
}

func (it *Iter) fail() ([]byte, []byte, bool) {
	it.b, it.bad = nil, true
	return nil, nil, false
}

// StrBody returns the raw content of the string literal v (between its
// quotes, still escaped), and whether v is a string.
func StrBody(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// Field returns the raw value of the first member key of object v (key
// compared with the member's raw, escaped name), or nil.
func Field(v []byte, key string) []byte {
	it := NewIter(v)
	for k, val, ok := it.Next(); ok; k, val, ok = it.Next() {
		if string(k) == key {
			return val
		}
	}
	return nil
}
