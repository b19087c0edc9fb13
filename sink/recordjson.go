package sink

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecordJSON appends r as encoding/json would marshal it (same field
// order, names, number, time and string forms, HTML characters escaped),
// without reflection. It reports false for a value json.Marshal would
// refuse (a time outside years 0–9999, a NaN or infinite float); the caller
// then uses encoding/json, which returns the error. TestRecordJSONMatchesMarshal
// keeps the two equal.
func appendRecordJSON(b []byte, r *Record) ([]byte, bool) {
	w := jsonWriter{b: b, ok: true}
	w.str(`{"request_id":`, r.RequestID)
	w.str(`,"upstream_request_id":`, r.UpstreamRequestID)
	w.time(`,"start":`, r.Start)
	w.time(`,"first_token":`, r.FirstToken)
	w.time(`,"end":`, r.End)
	w.str(`,"key_id":`, r.KeyID)
	w.str(`,"user":`, r.User)
	w.str(`,"team":`, r.Team)
	w.str(`,"tier":`, r.Tier)
	w.str(`,"endpoint":`, r.Endpoint)
	w.str(`,"model_requested":`, r.ModelRequested)
	w.str(`,"model":`, r.Model)
	w.str(`,"upstream":`, r.Upstream)
	w.bool(`,"stream":`, r.Stream)
	w.str(`,"request":`, r.Request)
	w.str(`,"response":`, r.Response)
	w.str(`,"finish_reason":`, r.FinishReason)
	w.int(`,"prompt_tokens":`, r.PromptTokens)
	w.int(`,"completion_tokens":`, r.CompletionTokens)
	w.int(`,"total_tokens":`, r.TotalTokens)
	w.int(`,"estimated_tokens":`, r.EstimatedTokens)
	w.float(`,"cost_usd":`, r.CostUSD)
	w.int(`,"status":`, int64(r.Status))
	w.str(`,"error_type":`, r.ErrorType)
	w.float(`,"latency_ms":`, r.LatencyMs)
	w.float(`,"ttft_ms":`, r.TTFTMs)
	w.float(`,"queue_wait_ms":`, r.QueueWaitMs)
	w.str(`,"cache_status":`, r.CacheStatus)
	w.int(`,"retries":`, int64(r.Retries))
	w.bool(`,"client_gone":`, r.ClientGone)
	w.str(`,"user_agent":`, r.UserAgent)
	return append(w.b, '}'), w.ok
}

// jsonWriter appends one record's fields; ok turns false on a value
// encoding/json would refuse.
type jsonWriter struct {
	b  []byte
	ok bool
}

func (w *jsonWriter) str(name, v string) {
	w.b = appendJSONString(append(w.b, name...), v)
}

func (w *jsonWriter) time(name string, t time.Time) {
	w.b = append(append(w.b, name...), '"')
	b, err := t.AppendText(w.b)
	if err != nil {
		w.ok = false
		return
	}
	w.b = append(b, '"')
}

func (w *jsonWriter) int(name string, v int64) {
	w.b = strconv.AppendInt(append(w.b, name...), v, 10)
}

func (w *jsonWriter) float(name string, f float64) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		w.ok = false
		return
	}
	w.b = appendJSONFloat(append(w.b, name...), f)
}

func (w *jsonWriter) bool(name string, v bool) {
	w.b = strconv.AppendBool(append(w.b, name...), v)
}

// appendJSONFloat formats f as encoding/json does for a float64.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes a JSON string carries unescaped when HTML
// characters are escaped (encoding/json's htmlSafeSet).
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s quoted as encoding/json does with HTML
// escaping: invalid UTF-8 becomes \ufffd, U+2028 and U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
