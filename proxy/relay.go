package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// relay hands an upstream answer to fasthttp as the client's body stream.
// In SSE mode it passes whole events, one write (one flushed HTTP chunk)
// each, with lines of any length; otherwise it copies bytes as they come.
// It owns the upstream response until fasthttp closes it.
type relay struct {
	s     *Server
	x     exchange
	resp  *fasthttp.Response
	body  fasthttp.ReadCloserWithError
	br    *bufio.Reader
	sse   bool
	reqID []byte
	// enc compresses the client's stream (SSE only), each event flushed.
	enc encoding

	// ev holds the event being assembled; pending is the part of the last
	// event or read not yet handed to Read's caller.
	ev, pending []byte
	// eof reports that the upstream body was read to its end, so its
	// connection can go back to the pool.
	eof bool
	// sentFirst reports that the first event reached the writer; sentAll
	// that every byte of the upstream's answer did (only the framing, or a
	// compressor's trailer, may be missing).
	sentFirst, sentAll bool
	// readErr is the upstream read error that ended the relay, if any.
	readErr error
	// usage is the last usage an event reported; generated counts the bytes
	// of text relayed, to estimate a cut stream's completion.
	usage     usage
	generated int64
	// errBody keeps the start of an error answer relayed as bytes (a stream
	// request the upstream refused), for the transcript's error type.
	errBody []byte
	// tail keeps the last usageTail bytes of a metered JSON passthrough
	// answer (images, transcriptions), whose usage object comes last: its
	// tokens are charged when the answer ends. nil for other answers.
	tail []byte

	// secrets are the upstream's keys, scrubbed from the body as it passes
	// (nil: nothing to scrub). An SSE event holding one has it replaced by
	// scrubbedKey (the stream is chunked: its length is nobody's promise).
	// A raw body's length may be declared (Content-Length), so there a key
	// is masked with as many '*'; the tail of a read that may be the start
	// of a key, ev[held:heldEnd], is held back and sent with the next read.
	secrets       [][]byte
	held, heldEnd int
	maxSecret     int

	// gone is set by the watcher when the client socket closed.
	gone atomic.Bool
	// watchMu guards watched: the watcher checks the client socket only
	// while it is set, and CloseWithError clears it.
	watchMu sync.Mutex
	watched bool
	// raw is the client socket the watcher polls; watchIdx is the relay's
	// place in the server's watch set.
	raw      syscall.RawConn
	watchIdx int
}

// errClientGone interrupts the upstream read when the client went away.
var errClientGone = errors.New("client went away")

// maxErrBody bounds the error answer a relay keeps for the transcript.
const maxErrBody = 4 << 10

// usageTail is how much of the end of a streamed JSON passthrough answer
// is kept to find its usage object, in bytes (2 KiB: an images answer's
// usage, with its details, is about 200).
const usageTail = 2 << 10

// relayBufSize is the buffer a raw (not SSE) answer is copied through.
const relayBufSize = 16 << 10

// lineBufSize is the line reader's buffer, held by every stream for as long
// as it lasts. An SSE event is a few hundred bytes and longer lines are
// assembled across reads, so a small buffer costs no extra reads for usual
// events; a raw copy reads past it into its own buffer. 16 KiB here was a
// third of a held stream's heap.
const lineBufSize = 1 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, lineBufSize) }}

func newRelay(s *Server, x *exchange, resp *fasthttp.Response, sse bool) *relay {
	r := &relay{s: s, x: *x, resp: resp, sse: sse}
	if x.up != nil {
		r.setSecrets(x.up.secrets)
	}
	x.line = nil            // the relay gives it back
	r.x.upEnd = time.Time{} // set when the upstream body ends
	bs := resp.BodyStream()
	if r.x.line != nil {
		r.body = r.x.line.stream(resp) // closing it with an error closes the connection
	} else if rc, ok := bs.(fasthttp.ReadCloserWithError); ok {
		r.body = rc
	} else {
		r.body = nopCloser{bs}
	}
	if x.decoding != "" {
		r.body = &decodedBody{raw: r.body, coding: x.decoding}
	}
	r.br = readerPool.Get().(*bufio.Reader)
	r.br.Reset(r.body)
	if !sse && x.ep == epPassthrough && (x.adm != nil || x.ticket != nil) && resp.StatusCode() == fasthttp.StatusOK &&
		isJSONType(resp.Header.ContentType()) {
		// Priced per unit at the provider, but some report tokens (images,
		// transcriptions): those are charged to the token budgets.
		r.tail = make([]byte, 0, usageTail)
	}
	return r
}

// setSecrets makes r scrub secrets from the body it relays.
func (r *relay) setSecrets(secrets [][]byte) {
	r.secrets, r.maxSecret = secrets, 0
	for _, k := range secrets {
		r.maxSecret = max(r.maxSecret, len(k))
	}
}

type nopCloser struct{ io.Reader }

func (nopCloser) CloseWithError(error) error { return nil }

// SupportsBodyWriteTo tells fasthttp that WriteTo may replace Read.
func (r *relay) SupportsBodyWriteTo() bool { return true }

// WriteTo relays the answer to w, one write per event (SSE) or per read.
func (r *relay) WriteTo(w io.Writer) (int64, error) {
	var total int64
	out := w
	var ze streamEncoder
	cw := countingWriter{w: w}
	if r.enc != encIdentity {
		ze = newStreamEncoder(r.enc, &cw)
		out = ze
	}
	defer func() {
		if ze != nil {
			putStreamEncoder(ze)
		}
		if r.sse && r.x.ep.compressible() {
			r.s.m.answerBytes[r.x.ep].Add(float64(total))
			if ze == nil {
				cw.n = total
			}
			r.s.m.wireBytes[r.x.ep][r.enc].Add(float64(cw.n))
		}
		r.x.bytesOut = max(cw.n, total)
	}()
	for {
		chunk, err := r.next()
		if len(chunk) > 0 {
			r.markFirst()
			n, werr := out.Write(chunk)
			total += int64(n)
			if werr == nil && ze != nil {
				werr = ze.Flush() // one event, one flushed chunk: no added latency
			}
			if werr != nil {
				return total, werr
			}
		}
		if err != nil {
			if err == io.EOF {
				r.sentAll = true
				if ze != nil {
					if cerr := ze.Close(); cerr != nil {
						return total, cerr
					}
				}
				return total, nil
			}
			return total, err
		}
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Read implements io.Reader for fasthttp's fixed-size body path.
func (r *relay) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		chunk, err := r.next()
		if len(chunk) > 0 {
			r.markFirst()
			r.pending = chunk
			break
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// next returns the next event (SSE) or the next bytes read (raw). The slice
// is valid until the following call.
func (r *relay) next() ([]byte, error) {
	if !r.sse {
		return r.nextRaw()
	}
	r.ev = r.ev[:0]
	lineStart := 0 // where the line being read starts in r.ev
	for {
		line, err := r.br.ReadSlice('\n')
		r.ev = append(r.ev, line...)
		switch {
		case err == bufio.ErrBufferFull:
			continue // a long line: keep assembling
		case err != nil:
			r.scrubEvent()
			return r.ev, r.noteErr(err)
		}
		// A blank line ends an event. The whole line is checked, not the
		// last read: a line of a multiple of relayBufSize bytes ends with a
		// read of "\n" alone, and is no event boundary.
		line = r.ev[lineStart:]
		lineStart = len(r.ev)
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			r.scrubEvent() // before the cache, the transcript and the client see it
			if r.x.cache != nil {
				r.x.cache.event(r.ev) // cache: tee to followers, keep to store (cachecall.go)
				if isDoneEvent(r.ev) && r.resp.StatusCode() == fasthttp.StatusOK {
					// The answer is whole: store it before the client reads
					// its end, so the client's next identical request hits.
					r.x.cache.streamEnd(true)
				}
			}
			r.x.tr.event(r.x.ep, r.ev)
			if r.x.own.mode == ownCreate {
				r.s.ownedEvent(&r.x, r.ev) // a stored response's id (owners.go)
			}
			if r.x.adm == nil && r.x.ticket == nil && !r.x.stripUsage {
				return r.ev, nil
			}
			if bytes.Contains(r.ev, usageKey) {
				if u := findUsage(r.ev); u.ok {
					r.usage = u
				}
				if r.x.stripUsage && isUsageOnlyEvent(r.ev) {
					r.ev, lineStart = r.ev[:0], 0 // asked on the client's behalf: not relayed
					continue
				}
			}
			r.generated += generatedBytes(r.ev)
			return r.ev, nil
		}
	}
}

// scrubEvent replaces the upstream's keys in the event in r.ev: one scan
// per key and event, and no allocation unless a key is found.
func (r *relay) scrubEvent() {
	if len(r.secrets) > 0 && holdsAny(r.ev, r.secrets) {
		r.ev = replaceAll(r.ev, r.secrets)
	}
}

// nextRaw returns the next bytes read of a raw answer, the upstream's keys
// masked in place. A key cut by a read boundary is caught: a tail that may
// be a key's start waits in r.ev for the next read (to the end, on EOF or
// an error).
func (r *relay) nextRaw() ([]byte, error) {
	if r.ev == nil {
		r.ev = make([]byte, relayBufSize+max(r.maxSecret-1, 0))
	}
	carried := copy(r.ev, r.ev[r.held:r.heldEnd])
	r.held, r.heldEnd = 0, 0
	n, err := r.br.Read(r.ev[carried : carried+relayBufSize])
	end := carried + n
	if len(r.secrets) > 0 && end > 0 {
		maskSecrets(r.ev[:end], r.secrets)
		if err == nil {
			if keep := keyPrefixTail(r.ev[:end], r.secrets); keep > 0 {
				r.held, r.heldEnd = end-keep, end
				end -= keep
			}
		}
	}
	if r.tail != nil && end > 0 {
		r.keepTail(r.ev[:end])
	}
	if r.tail != nil && err == io.EOF {
		r.usage = findUsage(r.tail)
	}
	if r.x.tr != nil && end > 0 && len(r.errBody) < maxErrBody && r.resp.StatusCode() >= 400 {
		r.errBody = append(r.errBody, r.ev[:min(end, maxErrBody-len(r.errBody))]...)
	}
	return r.ev[:end], r.noteErr(err)
}

// keepTail appends b to r.tail, keeping its last usageTail bytes.
func (r *relay) keepTail(b []byte) {
	if len(b) >= usageTail {
		r.tail = append(r.tail[:0], b[len(b)-usageTail:]...)
		return
	}
	if drop := len(r.tail) + len(b) - usageTail; drop > 0 {
		r.tail = r.tail[:copy(r.tail, r.tail[drop:])]
	}
	r.tail = append(r.tail, b...)
}

func (r *relay) noteErr(err error) error {
	if err != nil {
		r.x.upEnd = time.Now()
	}
	if err == io.EOF {
		r.eof = true
	} else if err != nil && r.readErr == nil {
		r.readErr = err
	}
	return err
}

func (r *relay) markFirst() {
	if r.sentFirst {
		return
	}
	r.sentFirst = true
	now := time.Now()
	if r.sse {
		r.s.m.firstByte[r.x.ep].Observe(now.Sub(r.x.start).Seconds())
	}
	// Sluice's share: all the time to the first byte sent, less the time the
	// upstream took to its first byte.
	upstream := r.x.upFirst.Sub(r.x.upStart)
	r.s.m.overhead[r.x.ep].Observe((now.Sub(r.x.start) - upstream - r.x.queueWait).Seconds())
}

// CloseWithError is called by fasthttp once the body is written or the
// write failed (err != nil: the client is gone). It ends the upstream read,
// returning its connection to the pool only when the body was read to EOF,
// and finishes the exchange.
func (r *relay) CloseWithError(err error) error {
	r.unwatch()
	if r.x.cache != nil {
		r.x.cache.drain(r) // cache: the client left, others follow: read on for them
	}
	if r.eof {
		_ = r.body.CloseWithError(nil)
	} else {
		_ = r.body.CloseWithError(errClientGone)
	}
	if d, ok := r.body.(*decodedBody); ok {
		d.closeDecoder()
	}
	// A decoded answer may end before its raw body does: its connection
	// is not reused.
	r.x.releaseLine(r.eof && r.x.decoding == "")
	// A client that closed after the whole answer reached it (an SDK stops
	// reading at [DONE], before a compressor's trailer or the last chunk's
	// framing) did not leave early.
	clientGone := !r.sentAll && (r.gone.Load() || (err != nil && r.readErr == nil))
	if r.readErr != nil && !r.gone.Load() {
		r.s.log.Warn("upstream stream failed", "request_id", string(r.reqID), "upstream", r.x.up.name,
			"route", endpointLabels[r.x.ep], "error", r.readErr)
		r.x.up.classify(r.readErr)
	}
	r.x.status = r.resp.StatusCode()
	if r.x.upEnd.IsZero() {
		r.x.upEnd = time.Now() // the client left before the answer ended
	}
	if !r.sentFirst {
		r.s.m.overhead[r.x.ep].Observe((time.Since(r.x.start) - r.x.upFirst.Sub(r.x.upStart) - r.x.queueWait).Seconds())
	}
	actual := int64(-1)
	if r.x.adm != nil || r.x.ticket != nil {
		actual = r.streamUsage()
	}
	if r.usage.ok {
		r.x.usage = r.usage
	} else if r.sse && r.x.status == fasthttp.StatusOK && r.generated > 0 {
		// Cut before its usage chunk: the provider bills what it sent.
		r.x.cutUsage = usage{prompt: r.x.promptEst, completion: (r.generated + bytesPerToken - 1) / bytesPerToken, ok: true}
	}
	if r.x.tr != nil {
		if r.x.status >= 400 {
			r.x.tr.answer(r.x.ep, r.x.status, r.errBody)
		} else if r.readErr != nil && !clientGone && r.x.tr.errType == "" {
			// The upstream cut or stalled the answer after its 200: the
			// client saw an error, so does the record.
			r.x.tr.errType = statusTable[errUpstreamUnreachable].typ
		}
	}
	if r.sse && r.s.m.streamDuration[r.x.ep] != nil {
		r.s.m.streamDuration[r.x.ep].Observe(time.Since(r.x.start).Seconds())
	}
	if r.x.cache != nil {
		// cache: store the answer of a complete stream, end the flight.
		r.x.cache.streamEnd(r.sse && r.eof && r.readErr == nil && r.x.status == fasthttp.StatusOK)
	}
	r.s.finish(r.reqID, &r.x, time.Now(), clientGone, actual)
	r.br.Reset(nil)
	readerPool.Put(r.br)
	fasthttp.ReleaseResponse(r.resp)
	r.resp, r.br = nil, nil
	return nil
}

// bytesPerToken converts relayed text to tokens when a stream ended before
// its usage: 3 bytes per token overestimates English (about 4) a little.
const bytesPerToken = 3

// streamUsage is the tokens a streamed answer used: its reported usage, else
// for a cut stream the prompt estimate plus the relayed text's estimate.
func (r *relay) streamUsage() int64 {
	if r.usage.ok {
		return r.usage.total()
	}
	if r.resp.StatusCode() >= 400 {
		return 0
	}
	return r.x.promptEst + (r.generated+bytesPerToken-1)/bytesPerToken
}

// watch checks the client socket every watchInterval and interrupts the
// upstream read when the client has gone, so a silent stream (a model
// thinking) does not hold its upstream connection for nothing.
func (r *relay) watch(c net.Conn) {
	raw := rawConn(c)
	if raw == nil {
		return
	}
	r.raw, r.watched = raw, true
	r.s.watch.add(r)
}

// unwatch stops watching r's client. Once it returns the watcher no longer
// touches r.
func (r *relay) unwatch() {
	if r.raw == nil {
		return
	}
	r.s.watch.remove(r)
	r.watchMu.Lock()
	r.watched = false
	r.watchMu.Unlock()
}

func (r *relay) watchSlot() *int { return &r.watchIdx }

// check polls r's client socket; when the client has gone it marks the
// relay and ends the upstream read.
func (r *relay) check() {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	if !r.watched || !peerClosed(r.raw) {
		return
	}
	r.watched = false
	r.gone.Store(true)
	if r.x.cache == nil || !r.x.cache.shared() { // cache: others follow this stream
		_ = r.body.CloseWithError(errClientGone)
	}
}
