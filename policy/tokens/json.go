package tokens

import (
	"bytes"
	"unicode/utf8"
)

// A minimal JSON walker over bodies the proxy has already validated. It
// never allocates; malformed input makes an iterator stop with bad set.

// skipWS returns the index of the first non-space byte at or after i.
func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index after the string literal whose opening
// quote is at b[i], or -1.
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		k := i - 1 // an odd number of backslashes before it escapes the quote
		for b[k] == '\\' {
			k--
		}
		if (i-k)%2 == 1 {
			return i + 1
		}
	}
}

// skipValue returns the index after the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
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

// iter walks the members of an object or the elements of an array.
type iter struct {
	b   []byte
	i   int
	end byte // '}' or ']'
	bad bool // malformed input seen
}

// newIter starts iterating the object or array v (a whole value); for
// anything else it yields nothing.
func newIter(v []byte) iter {
	if len(v) < 2 || (v[0] != '{' && v[0] != '[') {
		return iter{}
	}
	return iter{b: v, i: 1, end: v[0] + 2} // '{'+2 == '}', '['+2 == ']'
}

// next returns the next member (key is the raw inside of its quotes) or
// element (key nil) as raw value bytes.
func (it *iter) next() (key, val []byte, ok bool) {
	if it.b == nil {
		return nil, nil, false
	}
	i := skipWS(it.b, it.i)
	if i < len(it.b) && it.b[i] == ',' {
		i = skipWS(it.b, i+1)
	}
	if i >= len(it.b) || it.b[i] == it.end {
		it.b = nil
		return nil, nil, false
	}
	if it.end == '}' {
		k := skipString(it.b, i)
		if it.b[i] != '"' || k < 0 {
			return it.fail()
		}
		key = it.b[i+1 : k-1]
		if i = skipWS(it.b, k); i >= len(it.b) || it.b[i] != ':' {
			return it.fail()
		}
		i = skipWS(it.b, i+1)
	}
	j := skipValue(it.b, i)
	if j < 0 {
		return it.fail()
	}
	it.i = j
	return key, it.b[i:j], true
}

func (it *iter) fail() ([]byte, []byte, bool) {
	it.b, it.bad = nil, true
	return nil, nil, false
}

// strBody returns the raw inside of the string literal v, and whether v is one.
func strBody(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// field returns the value of the member key of object v, or nil.
func field(v []byte, key string) []byte {
	it := newIter(v)
	for k, val, ok := it.next(); ok; k, val, ok = it.next() {
		if string(k) == key {
			return val
		}
	}
	return nil
}

// appendUnescaped appends the decoded text of the raw string body s.
func appendUnescaped(dst, s []byte) []byte {
	for len(s) > 0 {
		i := bytes.IndexByte(s, '\\')
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i]...)
		r, n := unescape(s[i:])
		dst = utf8.AppendRune(dst, r)
		s = s[i+n:]
	}
	return dst
}
