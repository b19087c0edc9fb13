package fakeai

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// call is one request in flight.
type call struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	start time.Time
	body  []byte
	opts  options
	rl    rlState // rate-limit headers decided for this request, if set
}

// Header values shared by all responses (read-only).
var (
	hdrVersion = []string{"2020-10-01"}
	hdrOrg     = []string{"user-fakeai"}
	hdrJSON    = []string{"application/json"}
	hdrSSE     = []string{"text/event-stream; charset=utf-8"}
	hdrNoCache = []string{"no-cache"}
)

// setCommonHeaders sets the headers the real API puts on every answer.
func (c *call) setCommonHeaders() {
	h := c.w.Header()
	h["X-Request-Id"] = []string{newRequestID()}
	h["Openai-Version"] = hdrVersion
	h["Openai-Organization"] = hdrOrg
}

// writeHeader sets the late headers (processing time, rate limits) and sends
// the status line.
func (c *call) writeHeader(status int) {
	h := c.w.Header()
	h["Openai-Processing-Ms"] = []string{strconv.FormatInt(time.Since(c.start).Milliseconds(), 10)}
	if c.s.limits != nil {
		if !c.rl.set {
			c.rl = c.s.limits.peek(time.Now())
		}
		c.rl.setHeaders(h)
	}
	c.w.WriteHeader(status)
}

// writeJSON sends v as a JSON answer with status.
func (c *call) writeJSON(status int, v any) {
	buf := getBuffer()
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Our own types always encode; this is a bug.
		panic("fakeai: encode answer: " + err.Error())
	}
	c.writeBody(status, hdrJSON, buf.Bytes())
	putBuffer(buf)
}

// writeBody sends a complete non-stream answer after Latency, honouring
// X-Fake-Cut-After (cut after that many body bytes).
func (c *call) writeBody(status int, contentType []string, body []byte) {
	if !c.sleep(c.opts.latency) {
		return
	}
	h := c.w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	c.writeHeader(status)
	if c.opts.cutAfter >= 0 {
		part := body[:min(c.opts.cutAfter, len(body))]
		if c.opts.trickle > 0 {
			if !c.trickle(part) {
				c.s.aborted.Add(1)
				return
			}
		} else {
			_, _ = c.w.Write(part)
			_ = http.NewResponseController(c.w).Flush()
		}
		c.cut()
	}
	if c.opts.trickle > 0 {
		_ = http.NewResponseController(c.w).Flush() // the headers, before the first pause
		if !c.trickle(body) {
			c.s.aborted.Add(1)
		}
		return
	}
	_, _ = c.w.Write(body)
}

// cut drops the connection without finishing the answer.
func (c *call) cut() {
	c.s.aborted.Add(1)
	panic(http.ErrAbortHandler)
}

// sleep waits d, or until the client goes away (then it counts the request
// as aborted and returns false). A zero d costs nothing.
func (c *call) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
		return true
	case <-c.r.Context().Done():
		t.Stop()
		c.s.aborted.Add(1)
		return false
	}
}

// settle adds an answer's usage to the stats.
func (c *call) settle(prompt, completion int) {
	c.s.promptTokens.Add(int64(prompt))
	c.s.completionTokens.Add(int64(completion))
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 { // do not keep huge buffers alive
		return
	}
	b.Reset()
	bufPool.Put(b)
}

const (
	hexDigits = "0123456789abcdef"
	alnum     = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
)

// newRequestID returns "req_" and 32 random hex digits.
func newRequestID() string {
	var b [36]byte
	copy(b[:], "req_")
	for i := 0; i < 2; i++ {
		x := rand.Uint64()
		for j := 0; j < 16; j++ {
			b[4+i*16+j] = hexDigits[x&15]
			x >>= 4
		}
	}
	return string(b[:])
}

// newID returns prefix followed by n random letters and digits.
func newID(prefix string, n int) string {
	b := make([]byte, len(prefix)+n)
	copy(b, prefix)
	var x uint64
	for i := len(prefix); i < len(b); i++ {
		if (i-len(prefix))%10 == 0 {
			x = rand.Uint64()
		}
		b[i] = alnum[(x&63)%62]
		x >>= 6
	}
	return string(b)
}
