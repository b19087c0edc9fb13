package sink

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Record is one transcript: an exchange between a client and an upstream,
// copied out of the request so it owns all of its memory.
type Record struct {
	// RequestID is Sluice's own request id, unique per exchange: the
	// deduplication key of the table and the shipped queries.
	RequestID string `json:"request_id"`
	// UpstreamRequestID is the upstream's X-Request-Id, which the client
	// received in place of Sluice's; empty when the upstream sent none.
	UpstreamRequestID string `json:"upstream_request_id"`
	// Start is when the request arrived.
	Start time.Time `json:"start"`
	// FirstToken is when the first byte of the answer was ready to send (the
	// first stream event, or the whole buffered answer); zero when none came.
	FirstToken time.Time `json:"first_token"`
	// End is when the exchange finished.
	End time.Time `json:"end"`
	// KeyID, User, Team and Tier are the caller's principal; empty before
	// identity.
	KeyID string `json:"key_id"`
	User  string `json:"user"`
	Team  string `json:"team"`
	Tier  string `json:"tier"`
	// Endpoint is the route label ("chat_completions", "embeddings", …).
	Endpoint string `json:"endpoint"`
	// ModelRequested is the model the client named; Model the one served
	// after aliases.
	ModelRequested string `json:"model_requested"`
	Model          string `json:"model"`
	// Upstream names the upstream the request went to; empty if none.
	Upstream string `json:"upstream"`
	// Stream reports an SSE answer was asked for.
	Stream bool `json:"stream"`
	// Request is the request's messages (or input / prompt) as JSON text,
	// capped with a truncation marker; empty in metadata-only mode.
	Request string `json:"request"`
	// Response is the answer's text (assembled from the stream's deltas for
	// streams), capped; empty in metadata-only mode.
	Response string `json:"response"`
	// FinishReason is the last finish_reason the answer reported.
	FinishReason string `json:"finish_reason"`
	// PromptTokens, CompletionTokens and TotalTokens are the upstream's usage;
	// 0 when it reported none.
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	// EstimatedTokens is Sluice's prompt estimate made before the call (0
	// when no token limit needed one).
	EstimatedTokens int64 `json:"estimated_tokens"`
	// CostUSD is what the answer cost in US dollars at the policy's prices
	// (its usage times the model's per-token prices); 0 for cache hits,
	// errors and unpriced models.
	CostUSD float64 `json:"cost_usd"`
	// Status is the HTTP status the client got.
	Status int `json:"status"`
	// ErrorType is the OpenAI error type of an error answer.
	ErrorType string `json:"error_type"`
	// LatencyMs is the time from arrival to the end, in milliseconds.
	LatencyMs float64 `json:"latency_ms"`
	// TTFTMs is the time to the first token, in milliseconds; 0 when none.
	TTFTMs float64 `json:"ttft_ms"`
	// QueueWaitMs is how long the request waited before being forwarded, ms.
	QueueWaitMs float64 `json:"queue_wait_ms"`
	// CacheStatus is "", "hit", "miss", "bypass" or "coalesced".
	CacheStatus string `json:"cache_status"`
	// Retries counts repeated upstream calls.
	Retries int `json:"retries"`
	// ClientGone reports the client left before the answer was complete.
	ClientGone bool `json:"client_gone"`
	// UserAgent is the client's User-Agent, capped at 256 bytes.
	UserAgent string `json:"user_agent"`
}

// recordOverhead approximates the bytes of a record's fixed fields, for
// batch and queue byte accounting.
const recordOverhead = 256

// size approximates the bytes a record takes in a batch.
func (r *Record) size() int {
	return recordOverhead + len(r.RequestID) + len(r.UpstreamRequestID) + len(r.KeyID) + len(r.User) + len(r.Team) + len(r.Tier) +
		len(r.ModelRequested) + len(r.Model) + len(r.Upstream) + len(r.Request) + len(r.Response) +
		len(r.FinishReason) + len(r.ErrorType) + len(r.CacheStatus) + len(r.UserAgent)
}

// TruncationMarker starts the note that ends a capped text:
// "…[truncated N bytes]".
const TruncationMarker = "…[truncated "

// Truncate returns s cut to at most max bytes (at a UTF-8 boundary) plus a
// marker saying how many bytes were cut; s itself when it fits. max <= 0
// means no cap.
func Truncate(s string, max int) string {
	if max <= 0 || len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + TruncationMarker + strconv.Itoa(len(s)-cut) + " bytes]"
}

// TruncateBytes is Truncate for a byte slice; it always returns a new
// string that owns its memory.
func TruncateBytes(b []byte, max int) string {
	if max <= 0 || len(b) <= max {
		return string(b)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + TruncationMarker + strconv.Itoa(len(b)-cut) + " bytes]"
}
