package proxy

import (
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// errKind is one row of the status table: every error Sluice itself answers
// with is one of these. Upstream errors are not: they pass through unchanged.
type errKind uint8

const (
	errInvalidRequest      errKind = iota // malformed JSON, wrong field types, missing fields
	errInvalidKey                         // missing or unknown API key
	errNotFound                           // unknown /v1 path outside the proxied set
	errModelNotFound                      // no route for the model
	errMethodNotAllowed                   // wrong method for a known endpoint
	errBodyTooLarge                       // request body over server.max_body_bytes
	errUnsupportedEncoding                // a request Content-Encoding other than gzip, zstd, identity
	errHeaderTooLarge                     // request headers over server.max_header_bytes
	errUpstreamUnreachable                // dial failed, connection reset, pool exhausted
	errUpstreamTimeout                    // first byte, idle or total timeout
	errUpstreamUnavailable                // every upstream of the route has its breaker open
	errShuttingDown                       // the server is draining
	errClientClosed                       // the client hung up while its request waited (logged, never read)
	errProviderBusy                       // the upstream's queue cannot take the request within its max wait
	errRateLimitRequests                  // a request-count budget (rpm, concurrent) is used up
	errRateLimitTokens                    // a token budget (tpm, tpd) is used up
	errLimiterUnavailable                 // the bucket store failed and the policy denies
	errInternal                           // a bug; details go to the log only
	errCacheNamespace                     // X-Sluice-Cache-Namespace names a namespace the key may not use
	errIntegerBelowMin                    // a number in the request below its minimum (n < 1, max_tokens < 0)
	errIntegerAboveMax                    // a number in the request above its ceiling (n > 128, max_tokens > 2^31-1)
	errInvalidPath                        // a path with dot segments, encoded dots, double encoding or control bytes
	errStoredObjects                      // a stored-object endpoint for a key that shares its provider project
	errEndpointForbidden                  // a path outside the key's endpoints allow-list
	errModelNotPriced                     // a model without a price while the policy refuses unpriced models
	errObjectNotFound                     // a stored object another team owns, or none Sluice recorded (owners.go)
	errInsufficientQuota                  // a spend budget is used up (budget.go)
	errKindCount
)

// errRow is the status, OpenAI error type and code of an errKind.
type errRow struct {
	status int
	typ    string
	code   string // "" is written as null
}

// statusTable is the one mapping from error kinds to what clients see. Types
// and codes follow the OpenAI API so official SDKs raise their usual errors.
var statusTable = [errKindCount]errRow{
	errInvalidRequest:      {fasthttp.StatusBadRequest, "invalid_request_error", ""},
	errInvalidKey:          {fasthttp.StatusUnauthorized, "invalid_request_error", "invalid_api_key"},
	errNotFound:            {fasthttp.StatusNotFound, "invalid_request_error", "unknown_url"},
	errModelNotFound:       {fasthttp.StatusNotFound, "invalid_request_error", "model_not_found"},
	errMethodNotAllowed:    {fasthttp.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed"},
	errBodyTooLarge:        {fasthttp.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large"},
	errUnsupportedEncoding: {fasthttp.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_content_encoding"},
	errHeaderTooLarge:      {fasthttp.StatusRequestHeaderFieldsTooLarge, "invalid_request_error", "headers_too_large"},
	errUpstreamUnreachable: {fasthttp.StatusBadGateway, "server_error", "upstream_unreachable"},
	errUpstreamTimeout:     {fasthttp.StatusGatewayTimeout, "server_error", "upstream_timeout"},
	errUpstreamUnavailable: {fasthttp.StatusServiceUnavailable, "server_error", "upstream_unavailable"},
	errShuttingDown:        {fasthttp.StatusServiceUnavailable, "server_error", "shutting_down"},
	errClientClosed:        {499, "invalid_request_error", "client_closed_request"},
	errProviderBusy:        {fasthttp.StatusTooManyRequests, "requests", "provider_capacity"},
	errRateLimitRequests:   {fasthttp.StatusTooManyRequests, "requests", "rate_limit_exceeded"},
	errRateLimitTokens:     {fasthttp.StatusTooManyRequests, "tokens", "rate_limit_exceeded"},
	errLimiterUnavailable:  {fasthttp.StatusServiceUnavailable, "server_error", "limiter_unavailable"},
	errInternal:            {fasthttp.StatusInternalServerError, "server_error", "internal_error"},
	errCacheNamespace:      {fasthttp.StatusForbidden, "invalid_request_error", "cache_namespace_forbidden"},
	errIntegerBelowMin:     {fasthttp.StatusBadRequest, "invalid_request_error", "integer_below_min_value"},
	errIntegerAboveMax:     {fasthttp.StatusBadRequest, "invalid_request_error", "integer_above_max_value"},
	errInvalidPath:         {fasthttp.StatusBadRequest, "invalid_request_error", "invalid_path"},
	errStoredObjects:       {fasthttp.StatusForbidden, "invalid_request_error", "stored_objects_forbidden"},
	errEndpointForbidden:   {fasthttp.StatusForbidden, "invalid_request_error", "endpoint_forbidden"},
	errModelNotPriced:      {fasthttp.StatusForbidden, "invalid_request_error", "model_not_priced"},
	errObjectNotFound:      {fasthttp.StatusNotFound, "invalid_request_error", ""},
	errInsufficientQuota:   {fasthttp.StatusTooManyRequests, "insufficient_quota", "insufficient_quota"},
}

// writeError answers with an OpenAI-shaped error:
// {"error":{"message":…,"type":…,"param":…,"code":…}}. param "" is written as
// null. msg must not carry internal detail (log that with the request id).
func writeError(ctx *fasthttp.RequestCtx, kind errKind, param, msg string) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(statusTable[kind].status)
	ctx.SetContentType("application/json")
	b := appendError(ctx.Response.Body()[:0], kind, param, msg)
	ctx.Response.SetBodyRaw(append(b, '\n'))
}

// appendError appends the OpenAI-shaped error object of kind to b.
func appendError(b []byte, kind errKind, param, msg string) []byte {
	row := &statusTable[kind]
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, row.typ)
	b = append(b, `,"param":`...)
	b = appendJSONStringOrNull(b, param)
	b = append(b, `,"code":`...)
	b = appendJSONStringOrNull(b, row.code)
	return append(b, "}}"...)
}

func appendJSONStringOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// so the output is always valid JSON whatever a client sent.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
