package proxy

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestStatusTable(t *testing.T) {
	want := map[errKind]struct {
		status    int
		typ, code string
	}{
		errInvalidRequest:      {400, "invalid_request_error", ""},
		errInvalidKey:          {401, "invalid_request_error", "invalid_api_key"},
		errNotFound:            {404, "invalid_request_error", "unknown_url"},
		errModelNotFound:       {404, "invalid_request_error", "model_not_found"},
		errMethodNotAllowed:    {405, "invalid_request_error", "method_not_allowed"},
		errBodyTooLarge:        {413, "invalid_request_error", "request_too_large"},
		errHeaderTooLarge:      {431, "invalid_request_error", "headers_too_large"},
		errUpstreamUnreachable: {502, "server_error", "upstream_unreachable"},
		errUpstreamTimeout:     {504, "server_error", "upstream_timeout"},
		errShuttingDown:        {503, "server_error", "shutting_down"},
		errUnsupportedEncoding: {415, "invalid_request_error", "unsupported_content_encoding"},
		errUpstreamUnavailable: {503, "server_error", "upstream_unavailable"},
		errClientClosed:        {499, "invalid_request_error", "client_closed_request"},
		errProviderBusy:        {429, "requests", "provider_capacity"},
		errRateLimitRequests:   {429, "requests", "rate_limit_exceeded"},
		errRateLimitTokens:     {429, "tokens", "rate_limit_exceeded"},
		errLimiterUnavailable:  {503, "server_error", "limiter_unavailable"},
		errInternal:            {500, "server_error", "internal_error"},
		errCacheNamespace:      {403, "invalid_request_error", "cache_namespace_forbidden"},
		errIntegerBelowMin:     {400, "invalid_request_error", "integer_below_min_value"},
		errIntegerAboveMax:     {400, "invalid_request_error", "integer_above_max_value"},
		errInvalidPath:         {400, "invalid_request_error", "invalid_path"},
		errStoredObjects:       {403, "invalid_request_error", "stored_objects_forbidden"},
		errEndpointForbidden:   {403, "invalid_request_error", "endpoint_forbidden"},
		errModelNotPriced:      {403, "invalid_request_error", "model_not_priced"},
		errObjectNotFound:      {404, "invalid_request_error", ""},
		errInsufficientQuota:   {429, "insufficient_quota", "insufficient_quota"},
	}
	if len(want) != int(errKindCount) {
		t.Fatalf("test covers %d kinds; the table has %d", len(want), errKindCount)
	}
	for kind, w := range want {
		var ctx fasthttp.RequestCtx
		writeError(&ctx, kind, "model", "bad <thing> \"quoted\" \xff")
		if ctx.Response.StatusCode() != w.status {
			t.Errorf("kind %d: status %d; want %d", kind, ctx.Response.StatusCode(), w.status)
		}
		if ct := string(ctx.Response.Header.ContentType()); ct != "application/json" {
			t.Errorf("kind %d: content type %q", kind, ct)
		}
		var body struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   *string `json:"param"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(ctx.Response.Body(), &body); err != nil {
			t.Fatalf("kind %d: body %q is not JSON: %v", kind, ctx.Response.Body(), err)
		}
		e := body.Error
		if e.Type != w.typ || e.Message != "bad <thing> \"quoted\" \ufffd" || e.Param == nil || *e.Param != "model" {
			t.Errorf("kind %d: got %+v", kind, e)
		}
		if (w.code == "" && e.Code != nil) || (w.code != "" && (e.Code == nil || *e.Code != w.code)) {
			t.Errorf("kind %d: code %v; want %q", kind, e.Code, w.code)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	f := func(in string) {
		t.Helper()
		var out string
		b := appendJSONString(nil, in)
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: not JSON: %v", in, b, err)
		}
		if out != in {
			t.Fatalf("round trip of %q gave %q", in, out)
		}
	}
	f("")
	f("plain")
	f("tab\tnew\nline\r\"q\"\\ \x00 \x1f")
	f("é 日本 \u2028 \u2029 <>&")
}
