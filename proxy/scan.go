package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"sluice/policy"
)

// reqFields is what the proxy reads from a JSON request body. The body is
// scanned once, validated as JSON on the way, and never decoded whole.
type reqFields struct {
	// model is the "model" value, unescaped; nil when absent. It may alias
	// the body.
	model []byte
	// modelStart and modelEnd delimit the model value in the body, quotes
	// included, so an alias can be rewritten in place.
	modelStart, modelEnd int
	// user is the "user" value, unescaped; nil when absent or null.
	user []byte
	// stream is the "stream" value; false when absent or null.
	stream bool
	// hasStreamOptions reports a non-null "stream_options" object.
	hasStreamOptions bool
	// includeUsage is stream_options.include_usage.
	includeUsage bool
	// optsStart and optsEnd delimit the stream_options value; usageStart
	// and usageEnd its include_usage value (all 0 when absent), so Sluice
	// can ask for usage on the client's behalf.
	optsStart, optsEnd, usageStart, usageEnd int
	// maxTokens is max_tokens, max_completion_tokens or max_output_tokens
	// (the last one present wins); -1 when none is.
	maxTokens int64
	// n is the number of choices asked for; 1 when absent or null.
	n int64
	// contentStart and contentEnd delimit the value of the first of
	// "messages", "input" and "prompt" (what the transcript keeps); both 0
	// when none is present.
	contentStart, contentEnd int
}

// content is the messages, input or prompt value of body (the body f was
// scanned from), or nil.
func (f *reqFields) content(body []byte) []byte {
	if f.contentEnd == 0 || f.contentEnd > len(body) {
		return nil
	}
	return body[f.contentStart:f.contentEnd]
}

func (f *reqFields) reset() {
	*f = reqFields{maxTokens: -1, n: 1}
}

// scanError is a client error found while scanning: a 400 with param.
type scanError struct {
	// kind is the error's row in the status table; the zero value is
	// errInvalidRequest.
	kind  errKind
	param string
	msg   string
}

func (e *scanError) Error() string { return e.msg }

// maxJSONDepth bounds nesting of the request body; deeper bodies are a 400.
const maxJSONDepth = 128

// scanRequest validates body as one JSON object and fills f with the fields
// the proxy needs. It returns nil or a *scanError.
func scanRequest(body []byte, f *reqFields) *scanError {
	f.reset()
	s := scanner{b: body}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		if s.i >= len(s.b) {
			return &scanError{msg: "We could not parse the JSON body of your request: the body is empty. The API expects a JSON object."}
		}
		return &scanError{msg: "We could not parse the JSON body of your request: the body must be a JSON object."}
	}
	s.i++
	for first := true; ; first = false {
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' && first {
			s.i++
			break
		}
		keyStart := s.i
		if !s.string() {
			return s.syntaxError()
		}
		key := s.b[keyStart+1 : s.i-1]
		if s.escaped {
			key = unescape(s.b[keyStart:s.i])
		}
		s.ws()
		if !s.byte(':') {
			return s.syntaxError()
		}
		s.ws()
		if err := s.field(key, f); err != nil {
			return err
		}
		s.ws()
		if s.byte(',') {
			continue
		}
		if s.byte('}') {
			break
		}
		return s.syntaxError()
	}
	s.ws()
	if s.i != len(s.b) {
		return s.syntaxError()
	}
	return nil
}

// field scans the value of one top-level key.
func (s *scanner) field(key []byte, f *reqFields) *scanError {
	switch string(key) {
	case "model":
		start := s.i
		switch s.kind() {
		case 's':
			if !s.string() {
				return s.syntaxError()
			}
			f.modelStart, f.modelEnd = start, s.i
			f.model = s.strValue(start)
			return nil
		}
		return s.typeError("model", "a string")
	case "user":
		start := s.i
		switch s.kind() {
		case 's':
			if !s.string() {
				return s.syntaxError()
			}
			f.user = s.strValue(start)
			return nil
		case 'n':
			return s.null()
		}
		return s.typeError("user", "a string")
	case "stream":
		switch s.kind() {
		case 't', 'f':
			v, ok := s.bool()
			if !ok {
				return s.syntaxError()
			}
			f.stream = v
			return nil
		case 'n':
			return s.null()
		}
		return s.typeError("stream", "a boolean")
	case "stream_options":
		f.optsStart = s.i
		switch s.kind() {
		case 'o':
			f.hasStreamOptions = true
			err := s.streamOptions(f)
			f.optsEnd = s.i
			return err
		case 'n':
			err := s.null()
			f.optsEnd = s.i
			return err
		}
		return s.typeError("stream_options", "an object")
	case "max_tokens", "max_completion_tokens", "max_output_tokens", "n":
		switch s.kind() {
		case 'd':
			start := s.i
			v, ok := s.integer()
			if !ok {
				if s.i != start {
					// A whole number beyond int64: past any bound.
					v = maxInt64
					if s.b[start] == '-' {
						v = -maxInt64 - 1
					}
				} else {
					return s.typeError(string(key), "an integer")
				}
			}
			if string(key) == "n" {
				if err := intRange(key, v, 1, MaxChoices); err != nil {
					return err
				}
				f.n = v
			} else {
				if err := intRange(key, v, 0, MaxCompletionTokens); err != nil {
					return err
				}
				f.maxTokens = v
			}
			return nil
		case 'n':
			return s.null()
		}
		return s.typeError(string(key), "an integer")
	}
	start := s.i
	if !s.value(1) {
		return s.syntaxError()
	}
	if f.contentEnd == 0 {
		switch string(key) {
		case "messages", "input", "prompt":
			f.contentStart, f.contentEnd = start, s.i
		}
	}
	return nil
}

func (s *scanner) streamOptions(f *reqFields) *scanError {
	s.i++ // '{'
	for first := true; ; first = false {
		s.ws()
		if first && s.byte('}') {
			return nil
		}
		keyStart := s.i
		if !s.string() {
			return s.syntaxError()
		}
		key := s.b[keyStart+1 : s.i-1]
		if s.escaped {
			key = unescape(s.b[keyStart:s.i])
		}
		s.ws()
		if !s.byte(':') {
			return s.syntaxError()
		}
		s.ws()
		if string(key) == "include_usage" {
			f.usageStart = s.i
			switch s.kind() {
			case 't', 'f':
				v, ok := s.bool()
				if !ok {
					return s.syntaxError()
				}
				f.includeUsage = v
			case 'n':
				if err := s.null(); err != nil {
					return err
				}
			default:
				return s.typeError("stream_options.include_usage", "a boolean")
			}
			f.usageEnd = s.i
		} else if !s.value(2) {
			return s.syntaxError()
		}
		s.ws()
		if s.byte(',') {
			continue
		}
		if s.byte('}') {
			return nil
		}
		return s.syntaxError()
	}
}

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

// plainASCII marks the bytes a JSON string holds as they are: printable
// ASCII other than the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

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

func (s *scanner) null() *scanError {
	if s.literal("null") {
		return nil
	}
	return s.syntaxError()
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

const maxInt64 = 1<<63 - 1

// The ceilings of the numbers a client sends that Sluice computes with, so
// a reservation (max tokens × n, plus the prompt) can never overflow int64:
// 2^31-1 × 128 is below 2^38.
const (
	// MaxChoices is the largest n (choices per request), OpenAI's own.
	MaxChoices = 128
	// MaxCompletionTokens is the largest max_tokens, max_completion_tokens
	// or max_output_tokens Sluice forwards: 2^31-1, far above any model's
	// output window.
	MaxCompletionTokens = 1<<31 - 1
)

// intRange returns a 400 for a value of param outside [lo, hi], in OpenAI's
// words and codes.
func intRange(key []byte, v, lo, hi int64) *scanError {
	if v >= lo && v <= hi {
		return nil
	}
	param := string(key)
	switch {
	case v < lo:
		return &scanError{kind: errIntegerBelowMin, param: param, msg: "Invalid '" + param +
			"': integer below minimum value. Expected a value >= " + strconv.FormatInt(lo, 10) +
			", but got " + strconv.FormatInt(v, 10) + " instead."}
	case v > hi:
		got := strconv.FormatInt(v, 10)
		if v == maxInt64 {
			got = "a larger number" // the client's digits did not fit int64
		}
		return &scanError{kind: errIntegerAboveMax, param: param, msg: "Invalid '" + param +
			"': integer above maximum value. Expected a value <= " + strconv.FormatInt(hi, 10) +
			", but got " + got + " instead."}
	}
	return nil
}

func (s *scanner) syntaxError() *scanError {
	return &scanError{msg: "We could not parse the JSON body of your request: invalid JSON at byte " +
		strconv.Itoa(s.i) + ". The API expects a JSON object."}
}

func (s *scanner) typeError(param, want string) *scanError {
	got := ""
	switch s.kind() {
	case 0:
		// No JSON value starts here (the body ends, or a stray byte): the
		// body is malformed, whatever the field.
		return s.syntaxError()
	case 's':
		got = "a string"
	case 'o':
		got = "an object"
	case 'a':
		got = "an array"
	case 't', 'f':
		got = "a boolean"
	case 'n':
		got = "null"
	case 'd':
		got = "a number"
	}
	return &scanError{param: param, msg: "Invalid type for '" + param + "': expected " + want + ", but got " + got + " instead."}
}

// withIncludeUsage returns body asking the upstream for
// stream_options.include_usage, rewriting as little as possible: the body
// itself when the client already asked, else a copy with the flag set,
// added to stream_options, or stream_options added.
func withIncludeUsage(body []byte, f *reqFields) []byte {
	var at, end int
	var insert string
	switch {
	case f.includeUsage:
		return body
	case f.usageEnd > f.usageStart: // "include_usage": false or null
		at, end, insert = f.usageStart, f.usageEnd, "true"
	case f.hasStreamOptions: // an object without include_usage
		at = f.optsStart + 1
		end = at
		insert = `"include_usage":true,`
		s := scanner{b: body, i: at}
		s.ws()
		if s.i < len(body) && body[s.i] == '}' {
			insert = `"include_usage":true`
		}
	case f.optsEnd > f.optsStart: // "stream_options": null
		at, end, insert = f.optsStart, f.optsEnd, `{"include_usage":true}`
	default:
		at = bytes.IndexByte(body, '{') + 1
		end = at
		insert = `"stream_options":{"include_usage":true},`
	}
	out := make([]byte, 0, len(body)+len(insert))
	out = append(out, body[:at]...)
	out = append(out, insert...)
	return append(out, body[end:]...)
}

// satAdd is a+b for non-negative a and b, saturating at
// policy.MaxReservation instead of wrapping.
func satAdd(a, b int64) int64 {
	if a > policy.MaxReservation-b {
		return policy.MaxReservation
	}
	return a + b
}

// satMul is a*b for non-negative a and b, saturating at
// policy.MaxReservation instead of wrapping.
func satMul(a, b int64) int64 {
	if a != 0 && b > policy.MaxReservation/a {
		return policy.MaxReservation
	}
	return a * b
}
