package fakeai

import (
	"net/http"
	"strconv"
	"time"
)

// malformedEvents are the events X-Fake-Malformed-SSE inserts after a
// stream's first event.
var malformedEvents = map[string][]byte{
	// A data line cut in the middle of its JSON object.
	"json": []byte(`data: {"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lost` + "\n\n"),
	// Fields but no data line.
	"nodata": []byte("event: ping\nid: 7\n\n"),
	// A line that is no field, a comment and a retry: that is no number.
	"garbage": []byte("this line is no SSE field\n: a comment\nretry: soon\n\n"),
}

// Content types of the non-JSON answers of X-Fake-Body.
var (
	hdrHTML = []string{"text/html; charset=utf-8"}
	hdrText = []string{"text/plain; charset=utf-8"}
)

// nonJSON answers X-Fake-Body: status (200 when 0) with an HTML page or a
// line of plain text, as a load balancer or proxy in front of a provider
// sends when it fails.
func (c *call) nonJSON(status int) {
	if status == 0 {
		status = http.StatusOK
	}
	if status >= 400 {
		c.s.errs.Add(1)
	}
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	if c.opts.body == "html" {
		c.writeBody(status, hdrHTML, []byte("<html>\r\n<head><title>"+text+"</title></head>\r\n<body>\r\n<center><h1>"+
			text+"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"))
		return
	}
	c.writeBody(status, hdrText, []byte("upstream connect error or disconnect/reset before headers. "+
		"reset reason: connection termination ("+text+")\n"))
}

// trickle writes b one byte per flushed write, pausing opts.trickle before
// every byte but the first. It returns false when the client went away or
// a write failed (the caller counts the abort).
func (c *call) trickle(b []byte) bool {
	rc := http.NewResponseController(c.w)
	t := time.NewTimer(c.opts.trickle)
	defer t.Stop()
	for i := range b {
		if i > 0 {
			t.Reset(c.opts.trickle)
			select {
			case <-t.C:
			case <-c.r.Context().Done():
				return false
			}
		}
		if _, err := c.w.Write(b[i : i+1]); err != nil {
			return false
		}
		if err := rc.Flush(); err != nil {
			return false
		}
	}
	return true
}
