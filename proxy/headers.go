package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Header rules. fasthttp normalizes header names to canonical case
// ("X-Sluice-User", "Openai-Organization"), so names compare exactly.

// isHopByHop reports the headers that describe one connection, not the
// message, and never cross a proxy (RFC 9110 §7.6.1, plus the legacy ones).
func isHopByHop(k []byte) bool {
	switch string(k) {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// sluiceHeaderPrefix starts the headers that talk to Sluice itself
// (X-Sluice-User, …); they are never forwarded.
var sluiceHeaderPrefix = []byte("X-Sluice-")

// skipRequestHeader reports the client headers not forwarded upstream:
// hop-by-hop ones, those fasthttp sets itself (Host, Content-Length), the
// client's credentials (the gateway key must never reach the provider; the
// upstream's own are set instead), the client's OpenAI-Organization and
// OpenAI-Project (they belong to the gateway's provider account), Sluice's
// own headers, Expect (the server already answered any 100-continue), and, when the proxy must read the answer, Accept-Encoding (so
// the provider answers uncompressed).
func skipRequestHeader(k []byte, dropAcceptEncoding bool) bool {
	if isHopByHop(k) {
		return true
	}
	switch string(k) {
	case "Host", "Content-Length", "Expect", "Authorization", "Api-Key", "Openai-Organization", "Openai-Project":
		return true
	case "Accept-Encoding":
		return dropAcceptEncoding
	}
	return bytes.HasPrefix(k, sluiceHeaderPrefix)
}

// copyRequestHeaders copies the forwardable client headers from src to dst,
// also dropping any header the client's Connection header names.
func copyRequestHeaders(dst, src *fasthttp.RequestHeader, dropAcceptEncoding bool) {
	conn := src.Peek("Connection")
	for k, v := range src.All() {
		if skipRequestHeader(k, dropAcceptEncoding) || (len(conn) > 0 && namedIn(conn, k)) {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// skipResponseHeader reports the upstream headers not relayed to the client:
// hop-by-hop ones and those the server writes itself (Content-Length, Date).
func skipResponseHeader(k []byte) bool {
	if isHopByHop(k) {
		return true
	}
	switch string(k) {
	case "Content-Length", "Date":
		return true
	}
	return false
}

// copyResponseHeaders copies the relayable upstream headers from src to dst.
func copyResponseHeaders(dst, src *fasthttp.ResponseHeader) {
	dst.SetStatusCode(src.StatusCode())
	conn := src.Peek("Connection")
	for k, v := range src.All() {
		if skipResponseHeader(k) || (len(conn) > 0 && namedIn(conn, k)) {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// namedIn reports whether the comma-separated Connection header value lists
// name (case-insensitively).
func namedIn(list, name []byte) bool {
	for len(list) > 0 {
		var tok []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			tok, list = list[:i], list[i+1:]
		} else {
			tok, list = list, nil
		}
		if bytes.EqualFold(bytes.TrimSpace(tok), name) {
			return true
		}
	}
	return false
}
