package tokens

import "sluice/internal/jsonw"

// The walk over request bodies is jsonw's trusting walk (the proxy has
// validated every body before it is priced): it never allocates, and
// malformed input makes an iterator stop with Bad set. These names keep
// the pricing code short.

// iter walks the members of an object or the elements of an array.
type iter struct{ jsonw.Iter }

// newIter starts iterating the object or array v (a whole value); for
// anything else it yields nothing.
func newIter(v []byte) iter { return iter{jsonw.NewIter(v)} }

// next returns the next member (key is the raw inside of its quotes) or
// element (key nil) as raw value bytes.
func (it *iter) next() (key, val []byte, ok bool) { return it.Next() }

// skipWS returns the index of the first non-space byte at or after i.
func skipWS(b []byte, i int) int { return jsonw.SkipWS(b, i) }

// strBody returns the raw inside of the string literal v, and whether v is one.
func strBody(v []byte) ([]byte, bool) { return jsonw.StrBody(v) }

// field returns the value of the member key of object v, or nil.
func field(v []byte, key string) []byte { return jsonw.Field(v, key) }

// appendUnescaped appends the decoded text of the raw string body s.
func appendUnescaped(dst, s []byte) []byte { return jsonw.AppendUnescaped(dst, s) }

// unescape decodes the JSON escape at the start of s (s[0] == '\\') and
// returns the rune and the bytes consumed; a surrogate pair is one rune.
// Malformed escapes decode as U+FFFD.
func unescape(s []byte) (rune, int) { return jsonw.Unescape(s) }
