package proxy

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"
)

// Compression toward clients. The JSON endpoints' answers are read
// uncompressed from the upstream (their Accept-Encoding is not forwarded:
// Sluice reads usage and transcripts from them), so Sluice compresses them
// itself for a client that accepts gzip or zstd: a buffered answer of at
// least compressMinBytes, and an SSE stream event by event, each event
// flushed so that nothing waits in a compressor. Passthrough answers (files,
// audio) keep the upstream's own encoding, untouched. No br: the official
// clients ask for gzip, and brotli costs far more CPU at useful levels.
//
// From clients, a JSON body sent with Content-Encoding gzip or zstd is
// decompressed before it is read, bounded by server.max_body_bytes after
// decompression (a zip bomb is a 413).

// encoding is a content coding Sluice produces or reads.
type encoding uint8

const (
	encIdentity encoding = iota
	encGzip
	encZstd
	encCount
)

var encodingNames = [encCount]string{"identity", "gzip", "zstd"}

// compressMinBytes is the smallest buffered answer compressed, in bytes:
// below it, the coding's framing eats most of the gain.
const compressMinBytes = 1024

// gzipLevel trades ratio for CPU: level 1 compresses JSON about 5× at a
// fraction of the default level's cost.
const gzipLevel = gzip.BestSpeed

// negotiate picks the answer's coding from an Accept-Encoding value: zstd,
// else gzip (or "*"), else identity; a q of 0 refuses a coding.
func negotiate(accept []byte) encoding {
	best := encIdentity
	for len(accept) > 0 {
		var tok []byte
		if i := bytes.IndexByte(accept, ','); i >= 0 {
			tok, accept = accept[:i], accept[i+1:]
		} else {
			tok, accept = accept, nil
		}
		name, params, _ := bytes.Cut(tok, []byte(";"))
		name = bytes.TrimSpace(name)
		if q, ok := bytes.CutPrefix(bytes.TrimSpace(params), []byte("q=")); ok {
			if v, err := strconv.ParseFloat(string(bytes.TrimSpace(q)), 64); err == nil && v == 0 {
				continue
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("zstd")):
			return encZstd
		case bytes.EqualFold(name, []byte("gzip")), bytes.Equal(name, []byte("*")):
			best = encGzip
		}
	}
	return best
}

var (
	gzipPool = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzipLevel)
		return w
	}}
	zstdPool = sync.Pool{New: func() any {
		w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithLowerEncoderMem(true))
		return w
	}}
)

// streamEncoder compresses an SSE stream; Flush after each event.
type streamEncoder interface {
	io.Writer
	Flush() error
	Close() error
}

// newStreamEncoder returns a pooled encoder of enc writing to w; give it
// back with putStreamEncoder after Close.
func newStreamEncoder(enc encoding, w io.Writer) streamEncoder {
	if enc == encZstd {
		z := zstdPool.Get().(*zstd.Encoder)
		z.Reset(w)
		return z
	}
	g := gzipPool.Get().(*gzip.Writer)
	g.Reset(w)
	return g
}

func putStreamEncoder(e streamEncoder) {
	switch e := e.(type) {
	case *zstd.Encoder:
		e.Reset(nil)
		zstdPool.Put(e)
	case *gzip.Writer:
		e.Reset(nil)
		gzipPool.Put(e)
	}
}

// compressBody appends body, compressed with enc, to dst.
func compressBody(dst []byte, enc encoding, body []byte) []byte {
	if enc == encZstd {
		z := zstdPool.Get().(*zstd.Encoder)
		dst = z.EncodeAll(body, dst)
		zstdPool.Put(z)
		return dst
	}
	buf := bytes.NewBuffer(dst)
	g := gzipPool.Get().(*gzip.Writer)
	g.Reset(buf)
	_, _ = g.Write(body)
	_ = g.Close()
	g.Reset(nil)
	gzipPool.Put(g)
	return buf.Bytes()
}

// compressAnswer compresses a buffered JSON answer in place when the client
// accepts a coding and the answer is worth it, and counts its bytes.
func (s *Server) compressAnswer(ctx *fasthttp.RequestCtx, x *exchange) {
	if x.ep >= epCount || !x.ep.compressible() || ctx.Response.IsBodyStream() {
		return
	}
	body := ctx.Response.Body()
	enc := encIdentity
	if len(body) >= compressMinBytes && len(ctx.Response.Header.ContentEncoding()) == 0 {
		enc = negotiate(ctx.Request.Header.Peek("Accept-Encoding"))
	}
	s.m.answerBytes[x.ep].Add(float64(len(body)))
	if enc == encIdentity {
		s.m.wireBytes[x.ep][encIdentity].Add(float64(len(body)))
		return
	}
	out := compressBody(nil, enc, body)
	ctx.Response.SetBodyRaw(out)
	ctx.Response.Header.Set("Content-Encoding", encodingNames[enc])
	ctx.Response.Header.Add("Vary", "Accept-Encoding")
	s.m.wireBytes[x.ep][enc].Add(float64(len(out)))
}

// errBodyTooLarge marks a request body over the limit once decompressed.
var errDecodedTooLarge = errors.New("decompressed body over the limit")

// decodeRequestBody replaces a gzip or zstd request body with its
// decompressed bytes, at most limit of them. It answers 415 for another
// coding, 400 for a corrupt body and 413 past the limit, and reports
// whether the request goes on. It counts the body's bytes.
func (s *Server) decodeRequestBody(ctx *fasthttp.RequestCtx, ep endpoint, limit int) bool {
	ce := bytes.TrimSpace(ctx.Request.Header.ContentEncoding())
	wire := len(ctx.Request.Body())
	if len(ce) == 0 || bytes.EqualFold(ce, []byte("identity")) {
		s.m.requestWire[ep][encIdentity].Add(float64(wire))
		s.m.requestBytes[ep].Add(float64(wire))
		return true
	}
	var r io.Reader
	src := bytes.NewReader(ctx.Request.Body())
	switch {
	case bytes.EqualFold(ce, []byte("gzip")):
		g, err := gzip.NewReader(src)
		if err != nil {
			writeError(ctx, errInvalidRequest, "", "The request body is not valid gzip.")
			return false
		}
		defer g.Close()
		r = g
	case bytes.EqualFold(ce, []byte("zstd")):
		z, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)+1))
		if err != nil {
			writeError(ctx, errInvalidRequest, "", "The request body is not valid zstd.")
			return false
		}
		defer z.Close()
		r = z
	default:
		writeError(ctx, errUnsupportedEncoding, "", "Content-Encoding "+strconv.Quote(string(ce))+" is not supported; send gzip, zstd or identity.")
		return false
	}
	out, err := readLimited(r, limit)
	switch {
	case errors.Is(err, errDecodedTooLarge):
		ctx.SetConnectionClose()
		writeError(ctx, errBodyTooLarge, "", "The request body, decompressed, is larger than the limit of "+strconv.Itoa(limit)+" bytes.")
		return false
	case err != nil:
		writeError(ctx, errInvalidRequest, "", "The request body could not be decompressed ("+encodingNameOf(ce)+").")
		return false
	}
	ctx.Request.SetBodyRaw(out)
	ctx.Request.Header.Del("Content-Encoding")
	enc := encGzip
	if encodingNameOf(ce) == "zstd" {
		enc = encZstd
	}
	s.m.requestWire[ep][enc].Add(float64(wire))
	s.m.requestBytes[ep].Add(float64(len(out)))
	return true
}

func encodingNameOf(ce []byte) string {
	if bytes.EqualFold(ce, []byte("zstd")) {
		return "zstd"
	}
	return "gzip"
}

// readLimited reads r to its end, failing with errDecodedTooLarge once more
// than limit bytes came: memory stays bounded by the limit.
func readLimited(r io.Reader, limit int) ([]byte, error) {
	out := make([]byte, 0, min(limit+1, 64<<10))
	for {
		if len(out) == cap(out) {
			// Double, but never past limit+1: one byte over is enough to know.
			grown := make([]byte, len(out), min(2*cap(out), limit+1))
			copy(grown, out)
			out = grown
		}
		n, err := r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			return nil, errDecodedTooLarge
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
