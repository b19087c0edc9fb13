package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// endpoint is what a request path names.
type endpoint uint8

const (
	epChat        endpoint = iota // POST /v1/chat/completions
	epCompletions                 // POST /v1/completions
	epEmbeddings                  // POST /v1/embeddings
	epResponses                   // POST /v1/responses
	epModels                      // GET /v1/models
	epModel                       // GET /v1/models/{id}
	epPassthrough                 // any other /v1/* path, forwarded byte for byte
	epUnknown                     // outside /v1
	epCount
)

// endpointLabels are the values of the "route" metric label.
var endpointLabels = [epCount]string{
	epChat:        "chat_completions",
	epCompletions: "completions",
	epEmbeddings:  "embeddings",
	epResponses:   "responses",
	epModels:      "models",
	epModel:       "model",
	epPassthrough: "passthrough",
	epUnknown:     "unknown",
}

var (
	prefixV1     = []byte("/v1/")
	prefixModels = []byte("/v1/models/")
)

// classify maps a request path to its endpoint. Trailing slashes do not
// count ("/v1/chat/completions/" is the chat endpoint, with its method and
// its limits: see cleanPath, which removes them before forwarding).
func classify(path []byte) endpoint {
	for len(path) > len(prefixV1) && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	switch string(path) {
	case "/v1/chat/completions":
		return epChat
	case "/v1/completions":
		return epCompletions
	case "/v1/embeddings":
		return epEmbeddings
	case "/v1/responses":
		return epResponses
	case "/v1/models":
		return epModels
	}
	if bytes.HasPrefix(path, prefixModels) && len(path) > len(prefixModels) {
		return epModel
	}
	if bytes.HasPrefix(path, prefixV1) {
		return epPassthrough
	}
	return epUnknown
}

// storedObjectPrefixes are the /v1 paths of objects stored at the provider
// under the project's key: whoever shares the project may list, read and
// delete them.
var storedObjectPrefixes = [][]byte{
	[]byte("/v1/files"), []byte("/v1/uploads"), []byte("/v1/batches"), []byte("/v1/vector_stores"),
	[]byte("/v1/fine_tuning"), []byte("/v1/assistants"), []byte("/v1/threads"), []byte("/v1/containers"),
	[]byte("/v1/conversations"), []byte("/v1/evals"), []byte("/v1/responses/"), []byte("/v1/chat/completions/"),
}

// storedObjectPath reports whether a passthrough path (trailing slashes
// removed) reaches objects stored at the provider.
func storedObjectPath(path []byte) bool {
	for _, p := range storedObjectPrefixes {
		if bytes.HasPrefix(path, p) && (len(path) == len(p) || p[len(p)-1] == '/' || path[len(p)] == '/') {
			return true
		}
	}
	return false
}

// parsesBody reports the endpoints whose JSON body the proxy reads and
// whose answer it may read too.
func (e endpoint) parsesBody() bool { return e <= epResponses }

// streams reports the endpoints that may answer with an SSE stream.
func (e endpoint) streams() bool { return e == epChat || e == epCompletions || e == epResponses }

// compressible reports the endpoints whose answers Sluice compresses for
// the client itself (it reads them uncompressed from the upstream).
func (e endpoint) compressible() bool { return e.parsesBody() }

// pathProblem returns why a request's path is refused, or "" when it is
// fine. raw is the request target as the client sent it (query included;
// absolute form allowed) and path is fasthttp's decoded, normalized path.
//
// Sluice forwards the decoded path, so an encoded byte that decoding turns
// into syntax would reach the upstream as that syntax: a double-encoded dot
// segment ("%252e%252e") arrives as "%2e%2e", which an upstream that decodes
// again resolves outside /v1; "%3F", "%23" and "%00" would arrive raw in
// the request line. So the raw path may not hold dot segments, encoded dots,
// encoded "%" (double encoding), "?", "#" or "\", backslashes, control
// bytes raw or encoded, or a malformed escape. "%2F" stays allowed: model
// ids such as "org/model" are sent that way.
func pathProblem(raw, path []byte) string {
	if i := bytes.Index(raw, schemeSep); i >= 0 && i < bytes.IndexByte(raw, '/')+1 {
		// absolute form: http://host/path?query
		raw = raw[i+len(schemeSep):]
		if j := bytes.IndexByte(raw, '/'); j >= 0 {
			raw = raw[j:]
		} else {
			raw = nil
		}
	}
	if q := bytes.IndexByte(raw, '?'); q >= 0 {
		raw = raw[:q]
	}
	dots := 0 // the dots, raw or encoded, that the current segment holds so far; -1 once it holds anything else
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) || unhex(raw[i+1]) < 0 || unhex(raw[i+2]) < 0 {
				return "a malformed percent-escape"
			}
			c = byte(unhex(raw[i+1])<<4 | unhex(raw[i+2]))
			i += 2
			switch {
			case c == '.':
				return "an encoded dot (%2E)"
			case c == '%':
				return "a double-encoded byte (%25)"
			case c == '?' || c == '#' || c == '\\':
				return "an encoded '?', '#' or '\\'"
			case c < 0x20 || c == 0x7f:
				return "an encoded control character"
			}
			dots = -1
			continue
		}
		switch {
		case c < 0x20 || c == 0x7f:
			return "a control character"
		case c == '#' || c == '\\':
			return "a '#' or '\\'"
		case c == '/':
			if dots == 1 || dots == 2 {
				return "a dot segment"
			}
			dots = 0
		case c == '.':
			if dots >= 0 {
				dots++
			}
		default:
			dots = -1
		}
	}
	if dots == 1 || dots == 2 {
		return "a dot segment"
	}
	for _, c := range path {
		if c < 0x20 || c == 0x7f || c == '%' || c == '?' || c == '#' || c == '\\' {
			return "a byte that is not allowed in a path"
		}
	}
	return ""
}

var schemeSep = []byte("://")

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// trimSlashes returns path without trailing slashes ("/v1/" stays).
func trimSlashes(path []byte) []byte {
	for len(path) > len(prefixV1) && path[len(path)-1] == '/' {
		path = path[:len(path)-1]
	}
	return path
}

// cleanPath refuses a request whose path pathProblem finds fault with (400,
// code invalid_path) and removes trailing slashes from the path it forwards,
// so "/v1/chat/completions/" is the chat endpoint in every respect.
func cleanPath(ctx *fasthttp.RequestCtx) bool {
	path := ctx.Path()
	if why := pathProblem(ctx.Request.Header.RequestURI(), path); why != "" {
		writeError(ctx, errInvalidPath, "", "The request path holds "+why+"; Sluice does not forward such paths.")
		return false
	}
	if t := trimSlashes(path); len(t) < len(path) {
		ctx.URI().SetPathBytes(t)
	}
	return true
}
