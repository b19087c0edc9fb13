package fakeai

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"
)

// stream writes server-sent events, one flushed write per event, paced by
// Latency and ChunkInterval and subject to X-Fake-Cut-After / Hang-After.
type stream struct {
	c     *call
	rc    *http.ResponseController
	buf   *bytes.Buffer
	enc   *json.Encoder
	sent  int // events written
	timer *time.Timer
	gone  bool // the client went away
}

var doneEvent = []byte("data: [DONE]\n\n")

// openStream sends the 200 headers of an event stream at once.
func (c *call) openStream() *stream {
	h := c.w.Header()
	h["Content-Type"] = hdrSSE
	h["Cache-Control"] = hdrNoCache
	c.writeHeader(http.StatusOK)
	st := &stream{c: c, rc: http.NewResponseController(c.w), buf: getBuffer()}
	st.enc = json.NewEncoder(st.buf)
	st.enc.SetEscapeHTML(false)
	c.s.streams.Add(1)
	if err := st.rc.Flush(); err != nil {
		st.abort()
	}
	return st
}

// event writes "event: name" (if name is not "") and "data: <v as JSON>".
// It returns false once the stream must stop because the client is gone.
func (st *stream) event(name string, v any) bool {
	if !st.before() {
		return false
	}
	st.buf.Reset()
	if name != "" {
		st.buf.WriteString("event: ")
		st.buf.WriteString(name)
		st.buf.WriteByte('\n')
	}
	st.buf.WriteString("data: ")
	if err := st.enc.Encode(v); err != nil {
		panic("fakeai: encode event: " + err.Error())
	}
	st.buf.WriteByte('\n') // Encode ended the line; a blank line ends the event
	return st.write(st.buf.Bytes())
}

// done writes "data: [DONE]" and ends the stream.
func (st *stream) done() {
	if st.before() && st.end() {
		st.write(doneEvent)
	}
	st.close()
}

// finish ends a stream that has no [DONE] (the Responses API).
func (st *stream) finish() {
	if !st.gone {
		st.end()
	}
	st.close()
}

// end applies X-Fake-Cut-After and X-Fake-Hang-After when the stream has
// fewer events than they name: a stream that was asked to fail never ends
// cleanly.
func (st *stream) end() bool {
	o := &st.c.opts
	if o.cutAfter >= 0 {
		st.close()
		st.c.cut()
	}
	if o.hangAfter >= 0 {
		st.hang()
		return false
	}
	return true
}

func (st *stream) write(b []byte) bool {
	if st.c.opts.trickle > 0 {
		if !st.c.trickle(b) {
			st.abort()
			return false
		}
	} else {
		if _, err := st.c.w.Write(b); err != nil {
			st.abort()
			return false
		}
		if err := st.rc.Flush(); err != nil {
			st.abort()
			return false
		}
	}
	st.sent++
	if st.sent == 1 && st.c.opts.malformed != "" {
		return st.write(malformedEvents[st.c.opts.malformed])
	}
	return true
}

// before runs what is due before the next event: a cut or hang after N
// events, then Latency before the first event or ChunkInterval between events.
func (st *stream) before() bool {
	if st.gone {
		return false
	}
	o := &st.c.opts
	if o.cutAfter >= 0 && st.sent >= o.cutAfter {
		st.close()
		st.c.cut()
	}
	if o.hangAfter >= 0 && st.sent >= o.hangAfter {
		st.hang()
		return false
	}
	d := o.interval
	if st.sent == 0 {
		d = o.latency
	}
	if d <= 0 {
		return true
	}
	if st.timer == nil {
		st.timer = time.NewTimer(d)
	} else {
		st.timer.Reset(d)
	}
	select {
	case <-st.timer.C:
		return true
	case <-st.c.r.Context().Done():
		st.timer.Stop()
		st.abort()
		return false
	}
}

// hang stalls until the client goes away.
func (st *stream) hang() {
	<-st.c.r.Context().Done()
	st.abort()
}

func (st *stream) abort() {
	if !st.gone {
		st.gone = true
		st.c.s.aborted.Add(1)
	}
}

// close releases the stream's resources.
func (st *stream) close() {
	if st.timer != nil {
		st.timer.Stop()
	}
	if st.buf != nil {
		putBuffer(st.buf)
		st.buf = nil
	}
}
