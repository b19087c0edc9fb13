package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"sluice/internal/jsonw"
)

// Key identifies one cached answer: the SHA-256 of a canonical form of the
// request (see NewKey).
type Key [sha256.Size]byte

// String returns the key in hex, as it appears in Redis.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// KeyInfo is what computing a key learned about the request on the way.
type KeyInfo struct {
	// Deterministic reports a request whose answer should repeat: a
	// temperature of 0 or a seed.
	Deterministic bool
}

// keyVersion starts every canonical form; change it when the form changes,
// so old entries are never read under a new meaning.
const keyVersion = 1

// ignoredFields are top-level request fields that do not change the answer:
// who asks (user, safety_identifier), how it is delivered (stream,
// stream_options), bookkeeping (metadata, store, prompt_cache_key), and the
// model, which the caller passes after resolving aliases.
var ignoredFields = map[string]bool{
	"model": true, "user": true, "stream": true, "stream_options": true, "metadata": true,
	"store": true, "safety_identifier": true, "prompt_cache_key": true,
}

// maxDepth bounds nesting; deeper bodies have no key.
const maxDepth = 128

// Errors of NewKey.
var (
	// ErrNotObject means the body is not one JSON object.
	ErrNotObject = errors.New("cache: request body is not a JSON object")
	// ErrSyntax means the body is not valid JSON.
	ErrSyntax = errors.New("cache: request body is not valid JSON")
)

// NewKey returns the key of a request: a hash of the namespace, the
// endpoint ("chat", "completions", "embeddings"), the resolved model and the
// body's canonical form. Field order, whitespace, string escapes and number
// spelling (1, 1.0, 1e0) do not matter; top-level nulls count as absent;
// ignoredFields are left out. Everything else is part of the key, so any
// parameter that can change the answer changes the key.
func NewKey(namespace, endpoint, model string, body []byte) (Key, KeyInfo, error) {
	c := canonPool.Get().(*canon)
	defer canonPool.Put(c)
	c.reset(body)
	c.out = append(c.out, keyVersion)
	c.str(namespace)
	c.str(endpoint)
	c.str(model)
	info, err := c.top()
	if err != nil {
		return Key{}, KeyInfo{}, err
	}
	return sha256.Sum256(c.out), info, nil
}

var canonPool = sync.Pool{New: func() any { return &canon{} }}

// member is one object member found while canonicalising: its key
// (offsets into canon.keys) and its canonical value (offsets into
// canon.out).
type member struct {
	k0, k1 int
	v0, v1 int
}

// canon writes a canonical binary form of JSON in one pass: each value is a
// tag byte, and strings and numbers carry their length, so no escaping is
// needed and no two different values share a form. Objects list their
// members sorted by key: each member's value is written as it is read, then
// the object's members are copied out in key order.
type canon struct {
	b    []byte
	i    int
	out  []byte
	keys []byte
	mem  []member
	tmp  []byte
}

func (c *canon) reset(body []byte) {
	c.b, c.i = body, 0
	c.out, c.keys, c.mem, c.tmp = c.out[:0], c.keys[:0], c.mem[:0], c.tmp[:0]
}

func (c *canon) str(s string) {
	c.out = append(c.out, 's')
	c.out = binaryLen(c.out, len(s))
	c.out = append(c.out, s...)
}

func binaryLen(b []byte, n int) []byte {
	return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func (c *canon) ws() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// top canonicalises the top-level object, leaving out ignored fields and
// nulls, and reports the fields that make a request deterministic.
func (c *canon) top() (KeyInfo, error) {
	var info KeyInfo
	c.ws()
	if c.i >= len(c.b) || c.b[c.i] != '{' {
		return info, ErrNotObject
	}
	if err := c.object(1, &info); err != nil {
		return info, err
	}
	c.ws()
	if c.i != len(c.b) {
		return info, ErrSyntax
	}
	return info, nil
}

// object writes the object at c.i. At the top level (info != nil) ignored
// fields and nulls are dropped, and the deterministic fields noted.
func (c *canon) object(depth int, info *KeyInfo) error {
	c.i++ // '{'
	base, kbase, start := len(c.mem), len(c.keys), len(c.out)
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
		c.out = append(c.out, 'o', 0, 0, 0, 0)
		return nil
	}
	for {
		c.ws()
		k0 := len(c.keys)
		var err error
		if c.keys, err = c.readString(c.keys); err != nil {
			return err
		}
		c.ws()
		if c.i >= len(c.b) || c.b[c.i] != ':' {
			return ErrSyntax
		}
		c.i++
		c.ws()
		at := c.i
		v0 := len(c.out)
		if err := c.value(depth + 1); err != nil {
			return err
		}
		keep := true
		if info != nil {
			key := c.keys[k0:]
			switch {
			case ignoredFields[string(key)] || c.out[v0] == 'z':
				keep = false
			case string(key) == "seed":
				info.Deterministic = true
			case string(key) == "temperature":
				if v, ok := c.number(at); ok && v == 0 {
					info.Deterministic = true
				}
			}
		}
		if keep {
			c.mem = append(c.mem, member{k0: k0, k1: len(c.keys), v0: v0, v1: len(c.out)})
		} else {
			c.out = c.out[:v0]
			c.keys = c.keys[:k0]
		}
		c.ws()
		if c.i >= len(c.b) {
			return ErrSyntax
		}
		if c.b[c.i] == ',' {
			c.i++
			continue
		}
		if c.b[c.i] == '}' {
			c.i++
			break
		}
		return ErrSyntax
	}
	// Copy the members out in key order.
	ms := c.mem[base:]
	keys := c.keys
	slices.SortFunc(ms, func(a, b member) int { return compareBytes(keys[a.k0:a.k1], keys[b.k0:b.k1]) })
	c.tmp = append(c.tmp[:0], 'o')
	c.tmp = binaryLen(c.tmp, len(ms))
	for j, m := range ms {
		if j > 0 && compareBytes(keys[ms[j-1].k0:ms[j-1].k1], keys[m.k0:m.k1]) == 0 {
			return ErrSyntax // duplicate keys: which one wins is up to the provider
		}
		c.tmp = append(c.tmp, 's')
		c.tmp = binaryLen(c.tmp, m.k1-m.k0)
		c.tmp = append(c.tmp, keys[m.k0:m.k1]...)
		c.tmp = append(c.tmp, c.out[m.v0:m.v1]...)
	}
	c.out = append(c.out[:start], c.tmp...)
	c.mem, c.keys = c.mem[:base], c.keys[:kbase]
	return nil
}

func (c *canon) number(at int) (float64, bool) {
	end := at
	for end < len(c.b) && isNumByte(c.b[end]) {
		end++
	}
	v, err := strconv.ParseFloat(string(c.b[at:end]), 64)
	return v, err == nil && end > at
}

func isNumByte(b byte) bool {
	return b >= '0' && b <= '9' || b == '-' || b == '+' || b == '.' || b == 'e' || b == 'E'
}

func compareBytes(x, y []byte) int {
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] != y[i] {
			if x[i] < y[i] {
				return -1
			}
			return 1
		}
	}
	return len(x) - len(y)
}

// value writes the canonical form of the value at c.i.
func (c *canon) value(depth int) error {
	if depth > maxDepth {
		return ErrSyntax
	}
	c.ws()
	if c.i >= len(c.b) {
		return ErrSyntax
	}
	switch ch := c.b[c.i]; {
	case ch == '{':
		return c.object(depth, nil)
	case ch == '[':
		c.i++
		at := len(c.out)
		c.out = append(c.out, 'a', 0, 0, 0, 0)
		n := 0
		c.ws()
		if c.i < len(c.b) && c.b[c.i] == ']' {
			c.i++
			return nil
		}
		for {
			if err := c.value(depth + 1); err != nil {
				return err
			}
			n++
			c.ws()
			if c.i >= len(c.b) {
				return ErrSyntax
			}
			if c.b[c.i] == ',' {
				c.i++
				continue
			}
			if c.b[c.i] == ']' {
				c.i++
				binaryLen(c.out[:at+1], n)
				return nil
			}
			return ErrSyntax
		}
	case ch == '"':
		at := len(c.out)
		c.out = append(c.out, 's', 0, 0, 0, 0)
		var err error
		if c.out, err = c.readString(c.out); err != nil {
			return err
		}
		binaryLen(c.out[:at+1], len(c.out)-at-5)
		return nil
	case ch == 't':
		return c.literal("true", 't')
	case ch == 'f':
		return c.literal("false", 'f')
	case ch == 'n':
		return c.literal("null", 'z')
	case ch == '-' || ch >= '0' && ch <= '9':
		return c.writeNumber()
	}
	return ErrSyntax
}

func (c *canon) literal(word string, tag byte) error {
	if c.i+len(word) > len(c.b) || string(c.b[c.i:c.i+len(word)]) != word {
		return ErrSyntax
	}
	c.i += len(word)
	c.out = append(c.out, tag)
	return nil
}

// maxExactInt is the largest integer a float64 holds exactly (2^53).
const maxExactInt = 1 << 53

// writeNumber writes a number canonically: an integer literal as written
// (so large seeds keep every digit; -0 becomes 0), any other spelling as the
// shortest form of its float64 value, written as an integer when it is one.
func (c *canon) writeNumber() error {
	start := c.i
	if c.b[c.i] == '-' {
		c.i++
	}
	digits := c.i
	for c.i < len(c.b) && c.b[c.i] >= '0' && c.b[c.i] <= '9' {
		c.i++
	}
	if c.i == digits || (c.b[digits] == '0' && c.i-digits > 1) {
		return ErrSyntax
	}
	integer := true
	if c.i < len(c.b) && c.b[c.i] == '.' {
		integer = false
		c.i++
		d := c.i
		for c.i < len(c.b) && c.b[c.i] >= '0' && c.b[c.i] <= '9' {
			c.i++
		}
		if c.i == d {
			return ErrSyntax
		}
	}
	if c.i < len(c.b) && (c.b[c.i] == 'e' || c.b[c.i] == 'E') {
		integer = false
		c.i++
		if c.i < len(c.b) && (c.b[c.i] == '+' || c.b[c.i] == '-') {
			c.i++
		}
		d := c.i
		for c.i < len(c.b) && c.b[c.i] >= '0' && c.b[c.i] <= '9' {
			c.i++
		}
		if c.i == d {
			return ErrSyntax
		}
	}
	lit := c.b[start:c.i]
	at := len(c.out)
	c.out = append(c.out, 'n', 0, 0, 0, 0)
	switch {
	case integer && string(lit) == "-0":
		c.out = append(c.out, '0')
	case integer:
		c.out = append(c.out, lit...)
	default:
		v, err := strconv.ParseFloat(string(lit), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return ErrSyntax
		}
		if v == math.Trunc(v) && math.Abs(v) < maxExactInt {
			c.out = strconv.AppendInt(c.out, int64(v), 10)
		} else {
			c.out = strconv.AppendFloat(c.out, v, 'g', -1, 64)
		}
	}
	binaryLen(c.out[:at+1], len(c.out)-at-5)
	return nil
}

// plain marks the bytes a JSON string holds as they are: not a quote, a
// backslash or a control character.
var plain = func() (t [256]bool) {
	for i := range t {
		t[i] = i >= 0x20 && i != '"' && i != '\\'
	}
	return t
}()

// readString reads the string at c.i and appends its unescaped bytes to dst.
func (c *canon) readString(dst []byte) ([]byte, error) {
	if c.i >= len(c.b) || c.b[c.i] != '"' {
		return dst, ErrSyntax
	}
	c.i++
	for {
		start := c.i
		for c.i < len(c.b) && plain[c.b[c.i]] {
			c.i++
		}
		dst = append(dst, c.b[start:c.i]...)
		if c.i >= len(c.b) || c.b[c.i] < 0x20 {
			return dst, ErrSyntax
		}
		if c.b[c.i] == '"' {
			c.i++
			return dst, nil
		}
		// An escape: checked here, decoded by jsonw (a surrogate pair is
		// one rune, a lone surrogate U+FFFD, as encoding/json decodes them).
		if c.i+1 >= len(c.b) {
			return dst, ErrSyntax
		}
		switch c.b[c.i+1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		case 'u':
			if jsonw.Hex4(c.b[c.i+2:]) < 0 {
				return dst, ErrSyntax
			}
		default:
			return dst, ErrSyntax
		}
		r, n := jsonw.Unescape(c.b[c.i:])
		c.i += n
		dst = utf8.AppendRune(dst, r)
	}
}
