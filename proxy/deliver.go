package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// deliver answers the client with the upstream's answer resp, which it
// takes over. It returns true when the answer is streamed by a relay that
// finishes the exchange.
func (s *Server) deliver(ctx *fasthttp.RequestCtx, x *exchange, resp *fasthttp.Response) bool {
	var idBuf [40]byte
	ourID := append(idBuf[:0], ctx.Response.Header.Peek("X-Request-Id")...)
	ctx.Response.Header.Del("X-Request-Id")
	copyResponseHeaders(&ctx.Response.Header, &resp.Header)
	if x.adm != nil && resp.StatusCode() != fasthttp.StatusTooManyRequests {
		setRateLimitHeaders(ctx, x.adm)
	}
	if len(resp.Header.Peek("X-Request-Id")) == 0 {
		ctx.Response.Header.SetBytesV("X-Request-Id", ourID)
	}
	if x.queueWait > 0 {
		var b [20]byte
		ctx.Response.Header.SetBytesV("X-Sluice-Queue-Wait-Ms", strconv.AppendInt(b[:0], x.queueWait.Milliseconds(), 10))
	}
	bs := resp.BodyStream()
	if bs == nil {
		ctx.Response.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return false
	}
	r := newRelay(s, x, resp, x.stream && resp.StatusCode() == fasthttp.StatusOK)
	// Nothing reads the request body from here on (x and the transcript
	// hold copies): give it back rather than hold a chat's whole history
	// through the stream.
	ctx.Request.ResetBody()
	r.reqID = append(r.reqID[:0], ctx.Response.Header.Peek("X-Request-Id")...)
	if r.sse {
		ctx.Response.ImmediateHeaderFlush = true
		r.watch(ctx.Conn())
		if len(resp.Header.ContentEncoding()) == 0 {
			if r.enc = negotiate(ctx.Request.Header.Peek("Accept-Encoding")); r.enc != encIdentity {
				ctx.Response.Header.Set("Content-Encoding", encodingNames[r.enc])
				ctx.Response.Header.Add("Vary", "Accept-Encoding")
			}
		}
	}
	size := resp.Header.ContentLength()
	if r.sse || size < 0 || x.decoding != "" { // a decoded body's length is not the upstream's
		size = -1
	}
	ctx.SetBodyStream(r, size)
	return true
}
