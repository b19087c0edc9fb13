package proxy

import (
	"bytes"

	"sluice/internal/jsonw"
)

// usage is what an answer reports it cost, in tokens.
type usage struct {
	// prompt is prompt_tokens (chat, completions, embeddings) or
	// input_tokens (responses).
	prompt int64
	// completion is completion_tokens or output_tokens.
	completion int64
	// cached is the prompt tokens the provider served from its prompt
	// cache (prompt_tokens_details.cached_tokens, or input_tokens_details'
	// for responses), part of prompt.
	cached int64
	// ok reports that a usage object was found.
	ok bool
}

func (u usage) total() int64 { return u.prompt + u.completion }

var usageKey = []byte(`"usage":`)

// findUsage returns the usage object of a JSON answer or SSE event: the last
// `"usage":{…}` at any depth (inside a JSON string every quote is escaped, so
// the raw bytes cannot occur there). Chat and completions put it at the top
// level; the Responses API inside "response".
func findUsage(b []byte) usage {
	for end := len(b); end > 0; {
		i := bytes.LastIndex(b[:end], usageKey)
		if i < 0 {
			return usage{}
		}
		j := i + len(usageKey)
		for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n' || b[j] == '\r') {
			j++
		}
		if j < len(b) && b[j] == '{' {
			if u, ok := parseUsage(b[j:]); ok {
				return u
			}
		}
		end = i
	}
	return usage{}
}

// parseUsage reads the token counts of the usage object at the start of b.
func parseUsage(b []byte) (usage, bool) {
	s := jsonw.Scanner{B: b, I: 1}
	var u usage
	for first := true; ; first = false {
		s.WS()
		if first && s.Byte('}') {
			return u, true
		}
		keyStart := s.I
		if !s.Str() {
			return usage{}, false
		}
		key := s.B[keyStart+1 : s.I-1]
		s.WS()
		if !s.Byte(':') {
			return usage{}, false
		}
		s.WS()
		switch string(key) {
		case "prompt_tokens", "input_tokens", "completion_tokens", "output_tokens":
			v, ok := s.Integer()
			if !ok {
				return usage{}, false
			}
			if key[0] == 'p' || key[0] == 'i' {
				u.prompt = v
			} else {
				u.completion = v
			}
			u.ok = true
		case "prompt_tokens_details", "input_tokens_details":
			if !parseCached(&s, &u) {
				return usage{}, false
			}
		default:
			if !s.Value(2) {
				return usage{}, false
			}
		}
		s.WS()
		if s.Byte(',') {
			continue
		}
		if s.Byte('}') {
			return u, true
		}
		return usage{}, false
	}
}

// parseCached reads a usage details value at s (an object, or null) into
// u.cached: its cached_tokens.
func parseCached(s *jsonw.Scanner, u *usage) bool {
	if s.I >= len(s.B) || s.B[s.I] != '{' {
		return s.Value(2) // null, or a shape Sluice does not read
	}
	s.I++
	for first := true; ; first = false {
		s.WS()
		if first && s.Byte('}') {
			return true
		}
		keyStart := s.I
		if !s.Str() {
			return false
		}
		key := s.B[keyStart+1 : s.I-1]
		s.WS()
		if !s.Byte(':') {
			return false
		}
		s.WS()
		if string(key) == "cached_tokens" {
			v, ok := s.Integer()
			if !ok {
				return false
			}
			u.cached = v
		} else if !s.Value(3) {
			return false
		}
		s.WS()
		if s.Byte(',') {
			continue
		}
		return s.Byte('}')
	}
}

var (
	emptyChoices = []byte(`"choices":[]`)
	dataPrefix   = []byte("data:")
	doneData     = []byte("[DONE]")
)

// eventData returns the data of an SSE event from its first "data:" line
// on: an event may begin with "event:", "id:" or comment lines (vLLM,
// Anthropic's and Google's OpenAI-compatible endpoints send them). nil when
// the event has no data line.
func eventData(ev []byte) []byte {
	for !bytes.HasPrefix(ev, dataPrefix) {
		i := bytes.IndexByte(ev, '\n')
		if i < 0 {
			return nil
		}
		ev = ev[i+1:]
	}
	return ev
}

// isUsageOnlyEvent reports the extra chunk an upstream sends when asked for
// stream_options.include_usage: no choices, only usage. Sluice removes it
// when it asked on the client's behalf.
func isUsageOnlyEvent(ev []byte) bool {
	ev = eventData(ev)
	return ev != nil && bytes.Contains(ev, emptyChoices) && bytes.Contains(ev, usageKey) &&
		!bytes.Contains(ev, []byte(`"usage":null`))
}

// isDoneEvent reports the event that ends an OpenAI stream, "data: [DONE]".
func isDoneEvent(ev []byte) bool {
	ev = eventData(ev)
	if len(ev) > 32 || ev == nil {
		return false
	}
	return bytes.Equal(bytes.TrimSpace(ev[len(dataPrefix):]), doneData)
}

// textKeys name the string fields that carry generated text in stream
// events: chat deltas, tool-call arguments, legacy completions, Responses
// deltas.
var textKeys = [][]byte{[]byte(`"content":"`), []byte(`"arguments":"`), []byte(`"text":"`), []byte(`"delta":"`)}

// generatedBytes counts the bytes of generated text in one stream event, to
// estimate completion tokens when a stream ends without usage. Escapes count
// as written, which only overestimates.
func generatedBytes(ev []byte) int64 {
	var n int64
	for _, k := range textKeys {
		rest := ev
		for {
			i := bytes.Index(rest, k)
			if i < 0 {
				break
			}
			rest = rest[i+len(k):]
			// Find the closing quote of the string value.
			j := 0
			for j < len(rest) && rest[j] != '"' {
				if rest[j] == '\\' {
					j++
				}
				j++
			}
			n += int64(min(j, len(rest)))
			if j >= len(rest) {
				break
			}
			rest = rest[j:]
		}
	}
	return n
}
