package proxy

import (
	"bytes"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"
)

// Sluice asks the upstream for identity answers on the JSON endpoints (it
// reads them: usage, cache, transcripts), but some servers compress anyway
// (a gzip middleware in front of a Python server, a CDN). Such an answer is
// decoded here, so everything after sees the JSON the provider wrote; the
// client gets it in the coding it asked Sluice for.

// decodedAnswerLimit bounds a buffered answer once decoded, in bytes
// (64 MiB): a small body that inflates to gigabytes costs no more.
const decodedAnswerLimit = 64 << 20

// answerCoding is the content coding Sluice decodes named by ce ("gzip",
// "deflate", "br", "zstd"), or "" for identity and codings it does not know
// (those answers are relayed as they came).
func answerCoding(ce []byte) string {
	ce = bytes.TrimSpace(ce)
	for _, c := range [...]string{"gzip", "deflate", "br", "zstd"} {
		if bytes.EqualFold(ce, []byte(c)) {
			return c
		}
	}
	return ""
}

// decodeAnswer decodes resp's body when the upstream compressed it: a
// buffered body at once, a streamed 200 by the relay, for which it returns
// the coding. A streamed error answer is read whole and decoded here, like a
// buffered one: the key scrub and the queued stream's error event read it
// whole. Either way resp no longer says Content-Encoding. A body that does
// not decode is left as it came.
func decodeAnswer(resp *fasthttp.Response) (streamCoding string) {
	coding := answerCoding(resp.Header.ContentEncoding())
	if coding == "" {
		return ""
	}
	if bs := resp.BodyStream(); bs != nil {
		if resp.StatusCode() == fasthttp.StatusOK {
			resp.Header.Del("Content-Encoding")
			return coding
		}
		raw, err := io.ReadAll(io.LimitReader(bs, decodedAnswerLimit))
		resp.SetBody(raw) // closes the stream; its connection is not reused
		if err != nil {
			return ""
		}
	}
	d, err := answerDecoder(coding, bytes.NewReader(resp.Body()))
	if err != nil {
		return ""
	}
	plain, err := io.ReadAll(io.LimitReader(d, decodedAnswerLimit))
	_ = d.Close()
	if err != nil {
		return ""
	}
	resp.Header.Del("Content-Encoding")
	resp.SetBody(plain)
	return ""
}

// answerDecoder reads r decoded from coding (one of answerCoding's).
func answerDecoder(coding string, r io.Reader) (io.ReadCloser, error) {
	switch coding {
	case "gzip":
		return gzip.NewReader(r)
	case "deflate":
		// HTTP's deflate is the zlib format; some servers send raw deflate.
		br := &peekReader{r: r}
		if z, err := zlib.NewReader(br); err == nil {
			br.read, br.done = nil, true
			return z, nil
		}
		return flate.NewReader(br.replay()), nil
	case "br":
		return io.NopCloser(brotli.NewReader(r)), nil
	default: // zstd
		// The window (up to 64 MiB) is the decoder's memory; callers bound
		// the output.
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	}
}

// peekReader keeps what zlib's header check read, so a raw deflate stream
// can be read again from its start; done once the check passed.
type peekReader struct {
	r    io.Reader
	read []byte
	done bool
}

func (p *peekReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if !p.done {
		p.read = append(p.read, b[:n]...)
	}
	return n, err
}

func (p *peekReader) replay() io.Reader { return io.MultiReader(bytes.NewReader(p.read), p.r) }

// decodedBody is a streamed answer decoded as the relay reads it. The
// decoder is made on the first Read, in the relay's goroutine: gzip reads
// its header then.
type decodedBody struct {
	raw    fasthttp.ReadCloserWithError
	coding string
	dec    io.ReadCloser
}

func (d *decodedBody) Read(p []byte) (int, error) {
	if d.dec == nil {
		dec, err := answerDecoder(d.coding, d.raw)
		if err != nil {
			return 0, err
		}
		d.dec = dec
	}
	return d.dec.Read(p)
}

// CloseWithError ends the raw body (the watcher calls it to interrupt a
// read in progress); the decoder is the reader's to close (closeDecoder).
func (d *decodedBody) CloseWithError(err error) error { return d.raw.CloseWithError(err) }

// closeDecoder frees the decoder, once nothing reads any more.
func (d *decodedBody) closeDecoder() {
	if d.dec != nil {
		_ = d.dec.Close()
	}
}
