package fakeai

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the fake OpenAI API. It implements http.Handler and is safe for
// concurrent use. Create it with New or Start.
type Server struct {
	cfg    Config
	chunks int      // effective Config.Chunks
	limits *limiter // nil when RPM and TPM are both 0

	faultOn     atomic.Bool // fast path: a server-wide fault is set
	faultMu     sync.Mutex
	faultStatus int
	faultLeft   int // requests still to fail; -1 = until cleared

	requests, streams, rateLimited, errs, aborted atomic.Int64
	promptTokens, completionTokens                atomic.Int64

	pathMu sync.Mutex
	byPath map[string]int64

	lastMu sync.Mutex
	last   RecordedRequest

	// objs are the stored files, batches and fine-tuning jobs (objects.go).
	objs objects
}

// Stats counts what the server has served since New.
type Stats struct {
	// Requests is the number of requests received, whatever their outcome.
	Requests int64
	// Streams is the number of answers sent as server-sent events.
	Streams int64
	// RateLimited is the number of 429s caused by Config.RPM or Config.TPM
	// (injected 429s count as Errors instead).
	RateLimited int64
	// Errors is the number of error answers (status >= 400) other than
	// RateLimited ones: bad requests, 401, 404, injected faults.
	Errors int64
	// Aborted is the number of requests that ended without a complete answer:
	// client gone during latency, a hang or a stream, or a cut connection.
	Aborted int64
	// PromptTokens is the sum of prompt (input) tokens reported in usage.
	PromptTokens int64
	// CompletionTokens is the sum of completion (output) tokens reported in usage.
	CompletionTokens int64
	// ByPath counts requests by URL path, e.g. "/v1/chat/completions".
	ByPath map[string]int64
}

// RecordedRequest is a copy of a request as the server received it.
type RecordedRequest struct {
	// Method is the HTTP method, e.g. "POST".
	Method string
	// Path is the URL path, e.g. "/v1/chat/completions".
	Path string
	// RawQuery is the URL query without "?", "" if none.
	RawQuery string
	// Host is the Host header (net/http removes it from Header).
	Host string
	// Header is a clone of the request headers as net/http parsed them:
	// hop-by-hop headers such as Connection stay in; Host and
	// Transfer-Encoding are moved out to their own fields.
	Header http.Header
	// ContentLength is the declared body length in bytes, -1 if unknown
	// (a chunked body).
	ContentLength int64
	// TransferEncoding lists the transfer codings, e.g. ["chunked"]; nil if none.
	TransferEncoding []string
	// Body is the request body as received (nil for none).
	Body []byte
}

// New returns a server with cfg.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, chunks: cfg.Chunks, byPath: make(map[string]int64)}
	if s.chunks <= 0 {
		s.chunks = DefaultChunks
	}
	if cfg.RPM > 0 || cfg.TPM > 0 {
		s.limits = newLimiter(cfg.RPM, cfg.TPM, time.Now())
	}
	return s
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:         s.requests.Load(),
		Streams:          s.streams.Load(),
		RateLimited:      s.rateLimited.Load(),
		Errors:           s.errs.Load(),
		Aborted:          s.aborted.Load(),
		PromptTokens:     s.promptTokens.Load(),
		CompletionTokens: s.completionTokens.Load(),
	}
	s.pathMu.Lock()
	st.ByPath = make(map[string]int64, len(s.byPath))
	for k, v := range s.byPath {
		st.ByPath[k] = v
	}
	s.pathMu.Unlock()
	return st
}

// LastRequest returns a copy of the most recent request (zero value before
// the first one).
func (s *Server) LastRequest() RecordedRequest {
	s.lastMu.Lock()
	r := s.last
	s.lastMu.Unlock()
	r.Header = r.Header.Clone()
	r.Body = bytes.Clone(r.Body)
	r.TransferEncoding = append([]string(nil), r.TransferEncoding...)
	return r
}

// SetFault makes every following request fail with status (400-599), as if
// it carried X-Fake-Status, until SetFault(0) clears it. A request's own
// X-Fake-Status header wins.
func (s *Server) SetFault(status int) { s.SetFaultCount(status, -1) }

// SetFaultCount makes the next n requests fail with status (400-599); n < 0
// means until cleared. Status 0 (or n == 0) clears the fault. Useful to test
// retries: SetFaultCount(503, 1) fails one attempt only.
func (s *Server) SetFaultCount(status, n int) {
	if status < 400 || status > 599 {
		status = 0
	}
	s.faultMu.Lock()
	s.faultStatus, s.faultLeft = status, n
	s.faultOn.Store(status != 0 && n != 0)
	s.faultMu.Unlock()
}

// takeFault returns the server-wide fault status for this request, 0 if none.
func (s *Server) takeFault() int {
	if !s.faultOn.Load() {
		return 0
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.faultStatus == 0 || s.faultLeft == 0 {
		return 0
	}
	if s.faultLeft > 0 {
		s.faultLeft--
		if s.faultLeft == 0 {
			s.faultOn.Store(false)
		}
	}
	return s.faultStatus
}

// ServeHTTP answers one request like the OpenAI API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{s: s, w: w, r: r, start: time.Now(), opts: s.defaultOptions()}
	s.requests.Add(1)
	s.countPath(r.URL.Path)
	c.setCommonHeaders()

	body, err := readBody(r)
	s.record(r, body)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			c.fail(http.StatusRequestEntityTooLarge, typeInvalidRequest, "request_too_large", "",
				"Request body too large: the limit is 256 MiB.")
		} else {
			c.invalid("", "", "Could not read the request body: "+err.Error())
		}
		return
	}
	c.body = body

	if !c.authorize() {
		return
	}
	if c.opts, err = s.parseOptions(r.Header); err != nil {
		c.invalid("", "invalid_fake_header", "fakeai: "+err.Error())
		return
	}
	status := c.opts.status
	if status == 0 {
		status = s.takeFault()
	}
	if c.opts.body != "" {
		c.nonJSON(status)
		return
	}
	if status != 0 {
		c.injected(status)
		return
	}
	if c.opts.hang {
		<-r.Context().Done()
		s.aborted.Add(1)
		return
	}
	s.route(c)
}

// route dispatches to the endpoint handlers.
func (s *Server) route(c *call) {
	method, path := c.r.Method, c.r.URL.Path
	post, get := method == http.MethodPost, method == http.MethodGet
	switch {
	case post && path == "/v1/chat/completions":
		c.chatCompletions()
	case post && path == "/v1/completions":
		c.completions()
	case post && path == "/v1/embeddings":
		c.embeddings()
	case post && path == "/v1/responses":
		c.responses()
	case post && path == "/v1/files":
		c.files()
	case post && path == "/v1/audio/speech":
		c.speech()
	case get && path == "/v1/models":
		c.listModels()
	case get && strings.HasPrefix(path, "/v1/models/") && len(path) > len("/v1/models/"):
		c.getModel(path[len("/v1/models/"):])
	case method == http.MethodDelete && strings.HasPrefix(path, "/v1/models/") && len(path) > len("/v1/models/"):
		c.deleteModel(path[len("/v1/models/"):])
	case c.fileRoutes(method, path), c.batchRoutes(method, path), c.jobRoutes(method, path):
	default:
		c.unknownURL()
	}
}

func (s *Server) countPath(p string) {
	s.pathMu.Lock()
	s.byPath[p]++
	s.pathMu.Unlock()
}

func (s *Server) record(r *http.Request, body []byte) {
	rec := RecordedRequest{
		Method:           r.Method,
		Path:             r.URL.Path,
		RawQuery:         r.URL.RawQuery,
		Host:             r.Host,
		Header:           r.Header.Clone(),
		ContentLength:    r.ContentLength,
		TransferEncoding: r.TransferEncoding,
		Body:             body,
	}
	s.lastMu.Lock()
	s.last = rec
	s.lastMu.Unlock()
}

var errBodyTooLarge = errors.New("request body too large")

// readBody reads the whole request body, at most MaxBodyBytes.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > MaxBodyBytes {
		return nil, errBodyTooLarge
	}
	if r.ContentLength > 0 {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBodyBytes {
		return nil, errBodyTooLarge
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}
