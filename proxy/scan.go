package proxy

import (
	"bytes"
	"strconv"

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

// plainASCII marks the bytes a JSON string holds as they are: printable
// ASCII other than the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (s *scanner) null() *scanError {
	if s.literal("null") {
		return nil
	}
	return s.syntaxError()
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
