package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"
)

// accessMethod is the request's method as a constant string (no copy of
// the request buffer, which fasthttp reuses).
func accessMethod(m []byte) string {
	switch string(m) {
	case fasthttp.MethodGet:
		return fasthttp.MethodGet
	case fasthttp.MethodPost:
		return fasthttp.MethodPost
	case fasthttp.MethodDelete:
		return fasthttp.MethodDelete
	case fasthttp.MethodPut:
		return fasthttp.MethodPut
	case fasthttp.MethodPatch:
		return fasthttp.MethodPatch
	case fasthttp.MethodHead:
		return fasthttp.MethodHead
	case fasthttp.MethodOptions:
		return fasthttp.MethodOptions
	}
	return "other"
}

// remoteAddrPort is the client's address and port, without allocating for
// a TCP connection.
func remoteAddrPort(ctx *fasthttp.RequestCtx) netip.AddrPort {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// refusal says why a request was answered 429: the limit of the user, model,
// app or budget the limiter applied ("user:rpm"), the upstream's queue
// (provider_capacity) or the upstream's own 429 (upstream); empty otherwise.
func (x *exchange) refusal() (scope, limit string) {
	switch {
	case x.status != fasthttp.StatusTooManyRequests:
		return "", ""
	case x.limit != "":
		scope = x.limitScope
		if scope == "" {
			scope = "user"
		}
		return scope, x.limit
	case !x.upStart.IsZero():
		return "upstream", ""
	}
	return "provider", "capacity"
}

// accessLog writes the access log line of a finished request: who, what,
// where it went, its size and cost, and why a 429. No key, no content.
func (s *Server) accessLog(reqID []byte, x *exchange, total time.Duration, clientGone bool) {
	upstream := ""
	if x.up != nil {
		upstream = x.up.name
	}
	attrs := [...]slog.Attr{
		slog.String("request_id", string(reqID)),
		slog.String("method", x.method),
		slog.String("route", endpointLabels[x.ep]),
		slog.Int("status", x.status),
		slog.Float64("duration_ms", float64(total.Microseconds())/1000),
		slog.Float64("queue_wait_ms", float64(x.queueWait.Microseconds())/1000),
		slog.String("client", x.peer.String()),
		slog.String("key_id", x.keyID),
		slog.String("user", x.user),
		slog.String("tier", x.tier),
		slog.String("model", x.model),
		slog.String("upstream", upstream),
		slog.Int("bytes_in", len(x.body)),
		slog.Int64("bytes_out", x.bytesOut),
		slog.Int64("prompt_tokens", x.usage.prompt),
		slog.Int64("completion_tokens", x.usage.completion),
		slog.String("cache", x.cacheStatus),
		slog.Bool("client_gone", clientGone),
	}
	n := len(attrs)
	if scope, limit := x.refusal(); scope != "" {
		s.log.LogAttrs(context.Background(), slog.LevelInfo, "request", append(attrs[:n:n], slog.String("limited_by", scope), slog.String("limit", limit))...)
		return
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs[:]...)
}
