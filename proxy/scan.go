package proxy

import (
	"bytes"
	"strconv"

	"sluice/internal/jsonw"
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
const maxJSONDepth = jsonw.MaxDepth

// reqScanner is the request scan: the JSON walker, and the 400s it
// reports in OpenAI's words.
type reqScanner struct{ jsonw.Scanner }

// scanRequest validates body as one JSON object and fills f with the fields
// the proxy needs. It returns nil or a *scanError.
func scanRequest(body []byte, f *reqFields) *scanError {
	f.reset()
	s := reqScanner{jsonw.Scanner{B: body}}
	s.WS()
	if s.I >= len(s.B) || s.B[s.I] != '{' {
		if s.I >= len(s.B) {
			return &scanError{msg: "We could not parse the JSON body of your request: the body is empty. The API expects a JSON object."}
		}
		return &scanError{msg: "We could not parse the JSON body of your request: the body must be a JSON object."}
	}
	s.I++
	for first := true; ; first = false {
		s.WS()
		if s.I < len(s.B) && s.B[s.I] == '}' && first {
			s.I++
			break
		}
		keyStart := s.I
		if !s.Str() {
			return s.syntaxError()
		}
		key := s.StrValue(keyStart)
		s.WS()
		if !s.Byte(':') {
			return s.syntaxError()
		}
		s.WS()
		if err := s.field(key, f); err != nil {
			return err
		}
		s.WS()
		if s.Byte(',') {
			continue
		}
		if s.Byte('}') {
			break
		}
		return s.syntaxError()
	}
	s.WS()
	if s.I != len(s.B) {
		return s.syntaxError()
	}
	return nil
}

// field scans the value of one top-level key.
func (s *reqScanner) field(key []byte, f *reqFields) *scanError {
	switch string(key) {
	case "model":
		start := s.I
		switch s.Kind() {
		case jsonw.String:
			if !s.Str() {
				return s.syntaxError()
			}
			f.modelStart, f.modelEnd = start, s.I
			f.model = s.StrValue(start)
			return nil
		}
		return s.typeError("model", "a string")
	case "user":
		start := s.I
		switch s.Kind() {
		case jsonw.String:
			if !s.Str() {
				return s.syntaxError()
			}
			f.user = s.StrValue(start)
			return nil
		case jsonw.Null:
			return s.null()
		}
		return s.typeError("user", "a string")
	case "stream":
		switch s.Kind() {
		case jsonw.True, jsonw.False:
			v, ok := s.Bool()
			if !ok {
				return s.syntaxError()
			}
			f.stream = v
			return nil
		case jsonw.Null:
			return s.null()
		}
		return s.typeError("stream", "a boolean")
	case "stream_options":
		f.optsStart = s.I
		switch s.Kind() {
		case jsonw.Object:
			f.hasStreamOptions = true
			err := s.streamOptions(f)
			f.optsEnd = s.I
			return err
		case jsonw.Null:
			err := s.null()
			f.optsEnd = s.I
			return err
		}
		return s.typeError("stream_options", "an object")
	case "max_tokens", "max_completion_tokens", "max_output_tokens", "n":
		switch s.Kind() {
		case jsonw.Number:
			start := s.I
			v, ok := s.Integer()
			if !ok {
				if s.I != start {
					// A whole number beyond int64: past any bound.
					v = maxInt64
					if s.B[start] == '-' {
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
		case jsonw.Null:
			return s.null()
		}
		return s.typeError(string(key), "an integer")
	}
	start := s.I
	if !s.Value(1) {
		return s.syntaxError()
	}
	if f.contentEnd == 0 {
		switch string(key) {
		case "messages", "input", "prompt":
			f.contentStart, f.contentEnd = start, s.I
		}
	}
	return nil
}

func (s *reqScanner) streamOptions(f *reqFields) *scanError {
	s.I++ // '{'
	for first := true; ; first = false {
		s.WS()
		if first && s.Byte('}') {
			return nil
		}
		keyStart := s.I
		if !s.Str() {
			return s.syntaxError()
		}
		key := s.StrValue(keyStart)
		s.WS()
		if !s.Byte(':') {
			return s.syntaxError()
		}
		s.WS()
		if string(key) == "include_usage" {
			f.usageStart = s.I
			switch s.Kind() {
			case jsonw.True, jsonw.False:
				v, ok := s.Bool()
				if !ok {
					return s.syntaxError()
				}
				f.includeUsage = v
			case jsonw.Null:
				if err := s.null(); err != nil {
					return err
				}
			default:
				return s.typeError("stream_options.include_usage", "a boolean")
			}
			f.usageEnd = s.I
		} else if !s.Value(2) {
			return s.syntaxError()
		}
		s.WS()
		if s.Byte(',') {
			continue
		}
		if s.Byte('}') {
			return nil
		}
		return s.syntaxError()
	}
}

func (s *reqScanner) null() *scanError {
	if s.Literal("null") {
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

func (s *reqScanner) syntaxError() *scanError {
	return &scanError{msg: "We could not parse the JSON body of your request: invalid JSON at byte " +
		strconv.Itoa(s.I) + ". The API expects a JSON object."}
}

func (s *reqScanner) typeError(param, want string) *scanError {
	got := ""
	switch s.Kind() {
	case jsonw.Invalid:
		// No JSON value starts here (the body ends, or a stray byte): the
		// body is malformed, whatever the field.
		return s.syntaxError()
	case jsonw.String:
		got = "a string"
	case jsonw.Object:
		got = "an object"
	case jsonw.Array:
		got = "an array"
	case jsonw.True, jsonw.False:
		got = "a boolean"
	case jsonw.Null:
		got = "null"
	case jsonw.Number:
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
		s := jsonw.Scanner{B: body, I: at}
		s.WS()
		if s.I < len(body) && body[s.I] == '}' {
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
