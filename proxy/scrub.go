package proxy

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"
)

// Upstream error answers can quote the credential they were sent: a
// provider, a proxy in front of one or a self-hosted server that echoes
// "Incorrect API key provided: sk-…" whole. Upstream errors otherwise pass
// through unchanged, so before one reaches a client (or the transcript, or
// the cache) every occurrence of the upstream's keys in its body is replaced.

// scrubbedKey replaces an upstream key in an error answer.
var scrubbedKey = []byte("[REDACTED:upstream_key]")

// minScrubbedKey is the shortest key scrubbed: shorter "keys" (a vLLM's
// "EMPTY", a placeholder) would mangle ordinary text and protect nothing.
const minScrubbedKey = 8

// maxScrubBody bounds the error answer read whole to be scrubbed; a longer
// one is cut there (provider errors are a few hundred bytes).
const maxScrubBody = 1 << 20

// secretsOf returns the raw keys of an upstream's credential values
// ("Bearer KEY" or "KEY"), those long enough to scrub.
func secretsOf(values ...[]byte) [][]byte {
	var out [][]byte
	for _, v := range values {
		v = bytes.TrimPrefix(v, bearerPrefix)
		if len(v) >= minScrubbedKey {
			out = append(out, bytes.Clone(v))
		}
	}
	return out
}

// scrubError replaces the upstream's keys in resp's body when resp is an
// error answer (status 400 and above). A streamed error body is read whole
// first (it is small), so the caller then holds a buffered answer. A body
// in a content coding is decoded to be searched; when it holds a key it is
// sent decoded (identity), scrubbed.
func (u *upstream) scrubError(resp *fasthttp.Response) {
	if len(u.secrets) == 0 || resp.StatusCode() < 400 {
		return
	}
	// Headers too: a proxy in front of a provider may echo the credential
	// in one (copyResponseHeaders relays every end-to-end header).
	var echoed [][]byte
	for k, v := range resp.Header.All() {
		for _, key := range u.secrets {
			if bytes.Contains(v, key) {
				echoed = append(echoed, bytes.Clone(k))
				break
			}
		}
	}
	for _, k := range echoed {
		v := resp.Header.PeekBytes(k)
		for _, key := range u.secrets {
			v = bytes.ReplaceAll(v, key, scrubbedKey)
		}
		resp.Header.SetBytesKV(k, v)
	}
	if bs := resp.BodyStream(); bs != nil {
		// SetBody closes the stream; fasthttp discards a connection whose
		// body was not read to its end (an error, or a body over the bound).
		data, _ := io.ReadAll(io.LimitReader(bs, maxScrubBody))
		resp.SetBody(data)
	}
	body := resp.Body()
	plain, decoded := body, false
	if enc := resp.Header.ContentEncoding(); len(enc) > 0 && !bytes.EqualFold(enc, []byte("identity")) {
		var err error
		if plain, err = decodeBounded(enc, body, maxScrubBody); err != nil {
			return
		}
		decoded = true
	}
	found := false
	for _, k := range u.secrets {
		if bytes.Contains(plain, k) {
			if !found && !decoded {
				plain = bytes.Clone(plain) // body belongs to resp
			}
			found = true
			plain = bytes.ReplaceAll(plain, k, scrubbedKey)
		}
	}
	if !found {
		return
	}
	if decoded {
		resp.Header.Del("Content-Encoding")
	}
	resp.SetBody(plain)
}

// decodeBounded decodes body in the content coding enc, keeping at most
// limit bytes of the result: a small error answer that decompresses to
// gigabytes costs limit bytes, not an outage. An unknown coding is an error.
func decodeBounded(enc, body []byte, limit int64) ([]byte, error) {
	src := bytes.NewReader(body)
	var r io.Reader
	switch string(bytes.ToLower(enc)) {
	case "gzip":
		g, err := gzip.NewReader(src)
		if err != nil {
			return nil, err
		}
		r = g
	case "deflate": // HTTP's deflate is the zlib format
		z, err := zlib.NewReader(src)
		if err != nil {
			return nil, err
		}
		r = z
	case "br":
		r = brotli.NewReader(src)
	case "zstd":
		// The window (up to 64 MiB) is the decoder's memory; the output is
		// bounded by the LimitReader below.
		z, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
		if err != nil {
			return nil, err
		}
		defer z.Close()
		r = z
	default:
		return nil, errors.New("unknown content coding")
	}
	return io.ReadAll(io.LimitReader(r, limit))
}

// fasthttp's own messages (logged at debug level) quote the raw bytes of a
// request it could not parse ("…, buffer size=129, contents: \"POST …
// Authorization: Bearer sk-…\""), and a malformed header line whole. Before
// such a message reaches the log the quoted request is dropped and any
// credential left is masked.

// authHeader matches an Authorization header's whole value (up to a quote,
// a backslash of an escaped line end, or the line end); credential a bearer
// token or an api-key value up to the next space, quote, backslash or comma.
var (
	authHeader = regexp.MustCompile(`(?i)(authorization:\s*)[^"\\\r\n]+`)
	credential = regexp.MustCompile(`(?i)(bearer\s+|api-key:\s*)[^\s"\\,]+`)
)

// quoted matches a %q-quoted string in a message.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// scrubLogMessage returns msg without the request bytes fasthttp quotes
// (the buffer's contents, a request line with its query string, several
// lines) and with credentials masked.
func scrubLogMessage(msg string) string {
	if i := strings.Index(msg, "contents: "); i >= 0 {
		msg = msg[:i] + "contents: [not logged: may hold credentials]"
	}
	msg = quoted.ReplaceAllStringFunc(msg, func(q string) string {
		if strings.Contains(q, `\r`) || strings.Contains(q, `\n`) || strings.Contains(q, " HTTP/") || strings.Contains(q, "?") {
			return `"[request bytes not logged]"`
		}
		return q
	})
	msg = authHeader.ReplaceAllString(msg, "${1}[REDACTED]")
	return credential.ReplaceAllString(msg, "${1}[REDACTED]")
}
