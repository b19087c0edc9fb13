package proxy

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"
)

// Upstream answers can quote the credential they were sent: a provider, a
// proxy in front of one or a self-hosted server that echoes "Incorrect API
// key provided: sk-…" whole, a debugging server that reflects the request,
// a redirect whose Location carries it. Upstream answers otherwise pass
// through unchanged, so before one reaches a client (or the transcript, or
// the cache) every occurrence of the upstream's keys is replaced: in the
// headers of every answer, in the body of every answer read whole, and in
// streamed bodies as the relay passes them on.

// scrubbedKey replaces an upstream key in an answer.
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

// scrubError replaces the upstream's keys in resp, an answer of any status:
//
//   - in every header (copyResponseHeaders relays every end-to-end one: a
//     Location of a 3xx, a proxy's echo);
//   - in the body of an answer read whole (buffered), 2xx and 3xx included,
//     in any content coding (gzip, deflate as zlib or raw, br, zstd,
//     identity): a coded body is decoded to be searched, and when it holds
//     a key it is sent decoded (identity), scrubbed. A body that does not
//     decode is searched as it is (a coding label on plain bytes);
//   - in the body of an error answer (400 and above) that would be
//     streamed: it is read whole first (errors are small), so the caller
//     then holds a buffered answer.
//
// A 2xx or 3xx answer that is streamed (SSE, passthrough downloads) keeps
// its body: the relay scrubs it as it passes it on (see relay.next).
func (u *upstream) scrubError(resp *fasthttp.Response) {
	if len(u.secrets) == 0 {
		return
	}
	u.scrubHeaders(&resp.Header)
	if bs := resp.BodyStream(); bs != nil {
		if resp.StatusCode() < 400 {
			return
		}
		// SetBody closes the stream; fasthttp discards a connection whose
		// body was not read to its end (an error, or a body over the bound).
		data, _ := io.ReadAll(io.LimitReader(bs, maxScrubBody))
		resp.SetBody(data)
	}
	body := resp.Body()
	if len(body) == 0 {
		return
	}
	enc := resp.Header.ContentEncoding()
	if len(enc) == 0 || bytes.EqualFold(enc, identity) {
		if u.holdsSecret(body) {
			resp.SetBody(u.replaceSecrets(bytes.Clone(body)))
		}
		return
	}
	plain, err := decodeBounded(enc, body, maxScrubBody)
	if !u.holdsSecret(plain) {
		if err != nil && u.holdsSecret(body) {
			// Not what its label says: the bytes as they are hold a key.
			resp.SetBody(u.replaceSecrets(bytes.Clone(body)))
		}
		return
	}
	// Decoded (up to a corruption, if any), the body holds a key: it is
	// sent decoded and scrubbed.
	resp.Header.Del("Content-Encoding")
	resp.SetBody(u.replaceSecrets(plain))
}

var identity = []byte("identity")

// scrubHeaders replaces the upstream's keys in every header of h.
func (u *upstream) scrubHeaders(h *fasthttp.ResponseHeader) {
	var echoed [][]byte
	for k, v := range h.All() {
		if u.holdsSecret(v) {
			echoed = append(echoed, bytes.Clone(k))
		}
	}
	for _, k := range echoed {
		h.SetBytesKV(k, u.replaceSecrets(bytes.Clone(h.PeekBytes(k))))
	}
}

// holdsSecret reports whether b contains one of the upstream's keys.
func (u *upstream) holdsSecret(b []byte) bool { return holdsAny(b, u.secrets) }

// replaceSecrets returns b (which the caller owns) with every key replaced.
func (u *upstream) replaceSecrets(b []byte) []byte { return replaceAll(b, u.secrets) }

// holdsAny reports whether b contains one of secrets.
func holdsAny(b []byte, secrets [][]byte) bool {
	for _, k := range secrets {
		if bytes.Contains(b, k) {
			return true
		}
	}
	return false
}

// replaceAll returns b (which the caller owns) with every secret replaced
// by scrubbedKey.
func replaceAll(b []byte, secrets [][]byte) []byte {
	for _, k := range secrets {
		b = bytes.ReplaceAll(b, k, scrubbedKey)
	}
	return b
}

// maskSecrets overwrites, in place, every secret in b with as many '*':
// the length stays, for a body whose Content-Length the client already has.
func maskSecrets(b []byte, secrets [][]byte) {
	for _, k := range secrets {
		for i := 0; ; {
			j := bytes.Index(b[i:], k)
			if j < 0 {
				break
			}
			i += j
			for e := i + len(k); i < e; i++ {
				b[i] = '*'
			}
		}
	}
}

// keyPrefixTail returns the length of the longest tail of b that is a
// proper prefix of one of secrets: the bytes a raw relay holds back, since
// the next read may complete them to a key. Usually 0.
func keyPrefixTail(b []byte, secrets [][]byte) int {
	keep := 0
	for _, k := range secrets {
		i := max(0, len(b)-(len(k)-1)) // a longer tail holds k whole, masked already
		for i < len(b)-keep {
			j := bytes.IndexByte(b[i:len(b)-keep], k[0])
			if j < 0 {
				break
			}
			i += j
			if bytes.HasPrefix(k, b[i:]) {
				keep = len(b) - i
				break
			}
			i++
		}
	}
	return keep
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
	case "deflate":
		// HTTP's deflate is the zlib format; some servers send raw deflate.
		if z, err := zlib.NewReader(src); err == nil {
			r = z
		} else {
			r = flate.NewReader(bytes.NewReader(body))
		}
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
