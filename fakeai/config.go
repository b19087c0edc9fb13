package fakeai

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Config sets how the fake behaves. The zero value is usable: no key, no
// latency, 5 chunks per stream, no rate limits.
type Config struct {
	// APIKey is the bearer key a request must carry (Authorization: Bearer KEY).
	// Default "": any key, or none, is accepted.
	APIKey string
	// Latency is the delay before the response headers of a non-stream answer
	// (errors included), or before the first event of a stream (whose headers
	// go out at once). Default 0: no delay (and no timer).
	Latency time.Duration
	// Chunks is the number of content chunks a stream splits the answer into.
	// Default 0 means DefaultChunks (5).
	Chunks int
	// ChunkInterval is the pause between two stream events. Default 0: none.
	ChunkInterval time.Duration
	// RPM is the number of requests per minute the fake accepts before it
	// answers 429. Default 0: unlimited.
	RPM int
	// TPM is the number of tokens (prompt + completion, counted as words) per
	// minute the fake accepts before it answers 429. Default 0: unlimited.
	TPM int
}

// Defaults and limits.
const (
	// DefaultChunks is the number of content chunks per stream when
	// Config.Chunks is 0.
	DefaultChunks = 5
	// DefaultEmbeddingDimensions is the length of an embedding vector when the
	// request has no "dimensions".
	DefaultEmbeddingDimensions = 8
	// MaxEmbeddingDimensions is the largest "dimensions" accepted.
	MaxEmbeddingDimensions = 65536
	// MaxBodyBytes is the largest request body accepted, in bytes (256 MiB);
	// larger bodies get a 413.
	MaxBodyBytes = 256 << 20
	// SpeechLength is the length of every /v1/audio/speech answer, in bytes.
	SpeechLength = 4096
)

// Request headers that inject faults or override Config for one request.
const (
	// HeaderStatus makes the request fail with this HTTP status (400-599).
	HeaderStatus = "X-Fake-Status"
	// HeaderRetryAfterMs sets retry-after-ms (milliseconds) on injected 429
	// and 503 answers; retry-after is its value rounded up to seconds.
	// Default: retry-after 2, retry-after-ms 1500.
	HeaderRetryAfterMs = "X-Fake-Retry-After-Ms"
	// HeaderHang ("1" or "true") makes the server never answer; the handler
	// returns when the client goes away.
	HeaderHang = "X-Fake-Hang"
	// HeaderHangAfter makes a stream stall after N events until the client
	// goes away.
	HeaderHangAfter = "X-Fake-Hang-After"
	// HeaderCutAfter makes a stream drop the connection after N events
	// (without [DONE]); a non-stream answer is cut after N body bytes.
	HeaderCutAfter = "X-Fake-Cut-After"
	// HeaderLatency overrides Config.Latency (a Go duration, e.g. "200ms").
	HeaderLatency = "X-Fake-Latency"
	// HeaderChunks overrides Config.Chunks (>= 1).
	HeaderChunks = "X-Fake-Chunks"
	// HeaderChunkInterval overrides Config.ChunkInterval (a Go duration).
	HeaderChunkInterval = "X-Fake-Chunk-Interval"
	// HeaderChunkSize makes every content delta N bytes of filler text, and
	// the whole answer Chunks*N bytes (max_tokens is then ignored).
	HeaderChunkSize = "X-Fake-Chunk-Size"
	// HeaderTrickle (a Go duration, e.g. "10ms") sends the answer's body one
	// byte per flushed write with this pause between bytes, after the
	// headers: a non-stream body, or each event of a stream.
	HeaderTrickle = "X-Fake-Trickle"
	// HeaderMalformedSSE makes a stream send one malformed event right after
	// its first event, then go on normally: "json" (a data line that is not
	// complete JSON), "nodata" (an event with event: and id: lines and no
	// data line) or "garbage" (lines that are no SSE field, a comment and a
	// bad retry: line).
	HeaderMalformedSSE = "X-Fake-Malformed-SSE"
	// HeaderBody makes the answer a body that is not JSON, with the status of
	// X-Fake-Status (200 without it), as a broken load balancer or proxy in
	// front of a provider sends: "html" (text/html) or "text" (text/plain).
	// Stream requests get the same non-SSE answer.
	HeaderBody = "X-Fake-Body"
)

// options is the effective behaviour for one request: Config plus overrides.
type options struct {
	latency      time.Duration
	interval     time.Duration
	chunks       int
	chunkSize    int // bytes per content delta; 0 = derived from the answer
	status       int // injected status; 0 = none
	retryAfterMs int // -1 = default
	hang         bool
	hangAfter    int           // events before stalling; -1 = never
	cutAfter     int           // events (or bytes) before cutting; -1 = never
	trickle      time.Duration // pause between body bytes; 0 = none
	malformed    string        // malformed SSE event kind; "" = none
	body         string        // non-JSON body kind; "" = none
}

// defaultOptions is the behaviour of a request without X-Fake-* headers.
func (s *Server) defaultOptions() options {
	return options{
		latency:      s.cfg.Latency,
		interval:     s.cfg.ChunkInterval,
		chunks:       s.chunks,
		retryAfterMs: -1,
		hangAfter:    -1,
		cutAfter:     -1,
	}
}

// parseOptions applies the X-Fake-* headers of h to the server defaults. On
// error the returned options are the defaults.
func (s *Server) parseOptions(h http.Header) (options, error) {
	o, err := s.parseHeaders(h)
	if err != nil {
		return s.defaultOptions(), err
	}
	return o, nil
}

func (s *Server) parseHeaders(h http.Header) (options, error) {
	o := s.defaultOptions()
	var err error
	if v := h.Get(HeaderStatus); v != "" {
		if o.status, err = strconv.Atoi(v); err != nil || o.status < 400 || o.status > 599 {
			return o, fmt.Errorf("%s must be a status between 400 and 599, got %q", HeaderStatus, v)
		}
	}
	if v := h.Get(HeaderRetryAfterMs); v != "" {
		if o.retryAfterMs, err = strconv.Atoi(v); err != nil || o.retryAfterMs < 0 {
			return o, fmt.Errorf("%s must be a non-negative integer, got %q", HeaderRetryAfterMs, v)
		}
	}
	if v := h.Get(HeaderHang); v != "" {
		if o.hang, err = strconv.ParseBool(v); err != nil {
			return o, fmt.Errorf("%s must be 1 or 0, got %q", HeaderHang, v)
		}
	}
	if v := h.Get(HeaderHangAfter); v != "" {
		if o.hangAfter, err = strconv.Atoi(v); err != nil || o.hangAfter < 0 {
			return o, fmt.Errorf("%s must be a non-negative integer, got %q", HeaderHangAfter, v)
		}
	}
	if v := h.Get(HeaderCutAfter); v != "" {
		if o.cutAfter, err = strconv.Atoi(v); err != nil || o.cutAfter < 0 {
			return o, fmt.Errorf("%s must be a non-negative integer, got %q", HeaderCutAfter, v)
		}
	}
	if v := h.Get(HeaderLatency); v != "" {
		if o.latency, err = time.ParseDuration(v); err != nil || o.latency < 0 {
			return o, fmt.Errorf("%s must be a non-negative duration such as 200ms, got %q", HeaderLatency, v)
		}
	}
	if v := h.Get(HeaderChunks); v != "" {
		if o.chunks, err = strconv.Atoi(v); err != nil || o.chunks < 1 {
			return o, fmt.Errorf("%s must be a positive integer, got %q", HeaderChunks, v)
		}
	}
	if v := h.Get(HeaderChunkInterval); v != "" {
		if o.interval, err = time.ParseDuration(v); err != nil || o.interval < 0 {
			return o, fmt.Errorf("%s must be a non-negative duration such as 50ms, got %q", HeaderChunkInterval, v)
		}
	}
	if v := h.Get(HeaderChunkSize); v != "" {
		if o.chunkSize, err = strconv.Atoi(v); err != nil || o.chunkSize < 1 || o.chunkSize > MaxBodyBytes {
			return o, fmt.Errorf("%s must be a positive integer up to %d, got %q", HeaderChunkSize, MaxBodyBytes, v)
		}
		if int64(o.chunkSize)*int64(o.chunks) > MaxBodyBytes {
			return o, fmt.Errorf("%s times chunks must stay within %d bytes", HeaderChunkSize, MaxBodyBytes)
		}
	}
	if v := h.Get(HeaderTrickle); v != "" {
		if o.trickle, err = time.ParseDuration(v); err != nil || o.trickle <= 0 {
			return o, fmt.Errorf("%s must be a positive duration such as 10ms, got %q", HeaderTrickle, v)
		}
	}
	if v := h.Get(HeaderMalformedSSE); v != "" {
		if _, ok := malformedEvents[v]; !ok {
			return o, fmt.Errorf("%s must be json, nodata or garbage, got %q", HeaderMalformedSSE, v)
		}
		o.malformed = v
	}
	if v := h.Get(HeaderBody); v != "" {
		if v != "html" && v != "text" {
			return o, fmt.Errorf("%s must be html or text, got %q", HeaderBody, v)
		}
		o.body = v
	}
	return o, nil
}
