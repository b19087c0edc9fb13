package e2e

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// checkSluiceError checks an error Sluice answered itself: status, type,
// code, param, and an x-request-id.
func checkSluiceError(t *testing.T, err error, status int, typ, code, param string) *openai.Error {
	t.Helper()
	e := asAPIError(t, err)
	if e.StatusCode != status || e.Type != typ || e.Code != code || e.Param != param {
		t.Fatalf("got %d type %q code %q param %q (%s), want %d type %q code %q param %q",
			e.StatusCode, e.Type, e.Code, e.Param, e.RawJSON(), status, typ, code, param)
	}
	if e.Message == "" {
		t.Fatalf("error without a message: %s", e.RawJSON())
	}
	if id := e.Response.Header.Get("X-Request-Id"); !strings.HasPrefix(id, "req_") {
		t.Fatalf("error response has x-request-id %q, want req_…", id)
	}
	return e
}

// TestClientErrors checks the errors Sluice answers itself, as the SDK
// parses them, and that none of those requests reached the upstream.
func TestClientErrors(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{
		maxBodyBytes: 4096,
		routes:       []string{"gpt-*", "text-*"},
	})})
	base := e.s.resources(t)
	client := e.s.client(demoKey)
	chat := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages("hi")}

	t.Run("malformed_json", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, chat, option.WithRequestBody("application/json", []byte("{bad")))
		checkSluiceError(t, err, 400, "invalid_request_error", "", "")
	})
	t.Run("wrong_type", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":"yes"}`)
		_, err := client.Chat.Completions.New(ctx, chat, option.WithRequestBody("application/json", body))
		checkSluiceError(t, err, 400, "invalid_request_error", "", "stream")
	})
	t.Run("missing_model", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		body := []byte(`{"messages":[{"role":"user","content":"hi"}]}`)
		_, err := client.Chat.Completions.New(ctx, chat, option.WithRequestBody("application/json", body))
		checkSluiceError(t, err, 400, "invalid_request_error", "", "model")
	})
	t.Run("missing_key", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, chat, option.WithHeaderDel("Authorization"))
		ae := checkSluiceError(t, err, 401, "invalid_request_error", "invalid_api_key", "")
		if !strings.Contains(ae.Message, "didn't provide an API key") {
			t.Fatalf("message %q does not say the key is missing", ae.Message)
		}
	})
	t.Run("unknown_key", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := e.s.client("sk-not-a-sluice-key").Chat.Completions.New(ctx, chat)
		checkSluiceError(t, err, 401, "invalid_request_error", "invalid_api_key", "")
	})
	t.Run("upstream_key_rejected", func(t *testing.T) {
		// The provider's own key is no Sluice key.
		ctx := testContext(t, 10*time.Second)
		_, err := e.s.client(upstreamKey).Chat.Completions.New(ctx, chat)
		checkSluiceError(t, err, 401, "invalid_request_error", "invalid_api_key", "")
	})
	t.Run("unroutable_model", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "claude-3-opus", Messages: userMessages("hi"),
		})
		ae := checkSluiceError(t, err, 404, "invalid_request_error", "model_not_found", "model")
		if !strings.Contains(ae.Message, "claude-3-opus") {
			t.Fatalf("message %q does not name the model", ae.Message)
		}
	})
	t.Run("unroutable_model_get", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Models.Get(ctx, "claude-3-opus")
		checkSluiceError(t, err, 404, "invalid_request_error", "model_not_found", "model")
	})
	t.Run("body_too_large", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages(strings.Repeat("word ", 2000)),
		})
		checkSluiceError(t, err, 413, "invalid_request_error", "request_too_large", "")
	})
	t.Run("method_not_allowed", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		var out map[string]any
		err := client.Get(ctx, "chat/completions", nil, &out)
		ae := checkSluiceError(t, err, 405, "invalid_request_error", "method_not_allowed", "")
		if ae.Response.Header.Get("Allow") != http.MethodPost {
			t.Fatalf("Allow = %q, want POST", ae.Response.Header.Get("Allow"))
		}
	})
	// Still served after all of those.
	t.Run("routable_after_errors", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		c, err := client.Chat.Completions.New(ctx, chat)
		if err != nil || c.Choices[0].Message.Content != "echo: hi" {
			t.Fatalf("chat: %v %+v", err, c)
		}
	})
	if st := e.fake.Stats(); st.Requests != 1 {
		t.Fatalf("the upstream saw %d requests (%v), want only the last, valid one", st.Requests, st.ByPath)
	}
	e.s.checkSettled(t, base)
}

// TestAlias checks that an alias rewrites the model the upstream sees.
func TestAlias(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{
		routes:  []string{"gpt-*"},
		aliases: map[string]string{"fast": "gpt-4o-mini"},
	})})
	ctx := testContext(t, 10*time.Second)
	c, err := e.s.client(demoKey).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "fast", Messages: userMessages("aliased"),
	})
	if err != nil {
		t.Fatalf("chat with alias: %v", err)
	}
	if c.Model != "gpt-4o-mini" || c.Choices[0].Message.Content != "echo: aliased" {
		t.Fatalf("answer model %q content %q", c.Model, c.Choices[0].Message.Content)
	}
	body := e.fake.LastRequest().Body
	if !bytes.Contains(body, []byte(`"model":"gpt-4o-mini"`)) || bytes.Contains(body, []byte(`"fast"`)) {
		t.Fatalf("upstream body %s, want the model rewritten to gpt-4o-mini", body)
	}
}

// TestUpstreamErrorsPassThrough checks that upstream error answers reach
// the client unchanged: status, body, retry and rate-limit headers.
func TestUpstreamErrorsPassThrough(t *testing.T) {
	// Rate limits make the fake send both x-ratelimit trios.
	e := newEnv(t, envOptions{fake: fakeai.Config{RPM: 3, TPM: 100000}})
	client := e.s.client(demoKey)
	chat := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages("hi")}

	compare := func(t *testing.T, err error, status int, needed ...string) *openai.Error {
		t.Helper()
		ae := asAPIError(t, err)
		fStatus, fHeader, fBody := e.fake.LastResponse()
		if fStatus != status || ae.StatusCode != status {
			t.Fatalf("fake answered %d, client got %d, want %d", fStatus, ae.StatusCode, status)
		}
		if got := errorBody(t, ae); !bytes.Equal(got, fBody) {
			t.Fatalf("body changed:\n got %s\nwant %s", got, fBody)
		}
		for _, h := range needed {
			if fHeader.Get(h) == "" {
				t.Fatalf("control: the fake sent no %s (headers %v)", h, fHeader)
			}
		}
		n := 0
		for k, vs := range fHeader {
			lk := strings.ToLower(k)
			if !strings.HasPrefix(lk, "retry-after") && !strings.HasPrefix(lk, "x-ratelimit-") &&
				!strings.HasPrefix(lk, "openai-") && lk != "x-request-id" && lk != "content-type" {
				continue
			}
			n++
			if got := ae.Response.Header.Values(k); strings.Join(got, ",") != strings.Join(vs, ",") {
				t.Fatalf("header %s: client got %q, the fake sent %q", k, got, vs)
			}
		}
		if n < len(needed) {
			t.Fatalf("compared %d headers, want at least %d", n, len(needed))
		}
		return ae
	}

	rateHeaders := []string{"Retry-After", "Retry-After-Ms",
		"X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests", "X-Ratelimit-Reset-Requests",
		"X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens", "X-Request-Id"}

	t.Run("injected_429", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, chat,
			option.WithHeader("X-Fake-Status", "429"), option.WithHeader("X-Fake-Retry-After-Ms", "2500"))
		ae := compare(t, err, 429, rateHeaders...)
		if ae.Code != "rate_limit_exceeded" || ae.Type != "requests" {
			t.Fatalf("code %q type %q", ae.Code, ae.Type)
		}
		if ae.Response.Header.Get("Retry-After") != "3" || ae.Response.Header.Get("Retry-After-Ms") != "2500" {
			t.Fatalf("retry-after %q / %q, want 3 / 2500", ae.Response.Header.Get("Retry-After"), ae.Response.Header.Get("Retry-After-Ms"))
		}
	})
	t.Run("injected_500", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, chat, option.WithHeader("X-Fake-Status", "500"))
		ae := compare(t, err, 500, "X-Request-Id", "Openai-Organization")
		if ae.Type != "server_error" {
			t.Fatalf("type %q", ae.Type)
		}
	})
	t.Run("injected_503", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		_, err := client.Chat.Completions.New(ctx, chat, option.WithHeader("X-Fake-Status", "503"))
		compare(t, err, 503, "Retry-After", "Retry-After-Ms")
	})
	t.Run("rate_limited", func(t *testing.T) {
		// RPM 3: the fourth request within a minute is refused by the
		// fake's bucket, with live values in its headers.
		ctx := testContext(t, 10*time.Second)
		var err error
		for i := 0; i < 4 && err == nil; i++ {
			_, err = client.Chat.Completions.New(ctx, chat)
		}
		ae := compare(t, err, 429, rateHeaders...)
		if ae.Code != "rate_limit_exceeded" || e.fake.Stats().RateLimited != 1 {
			t.Fatalf("code %q, fake rate-limited %d requests", ae.Code, e.fake.Stats().RateLimited)
		}
	})
}

// TestUpstreamTimeouts checks first_byte (504) and idle (stream cut) timeouts.
func TestUpstreamTimeouts(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{firstByte: "500ms", idle: "500ms"})})
	client := e.s.client(demoKey)
	base := e.s.resources(t)
	// Nothing the two timeouts cut outlives them (the fault suite's check).
	defer func() {
		if !t.Failed() {
			http.DefaultClient.CloseIdleConnections()
			e.s.checkSettled(t, base)
		}
	}()

	t.Run("first_byte", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		start := time.Now()
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("hang"),
		}, option.WithHeader("X-Fake-Hang", "1"))
		took := time.Since(start)
		checkSluiceError(t, err, 504, "server_error", "upstream_timeout", "")
		if took < 400*time.Millisecond || took > 3*time.Second {
			t.Fatalf("504 after %v, want about the 500ms first_byte timeout", took)
		}
		// Sluice dropped the upstream connection: the fake's handler ended.
		if !waitFor(time.Second, func() bool { return e.fake.Stats().Aborted >= 1 }) {
			t.Fatalf("the hanging upstream request was not released (stats %+v)", e.fake.Stats())
		}
		if v, _ := e.s.metric(t, "sluice_upstream_errors_total", `reason="timeout"`); v < 1 {
			t.Fatalf("sluice_upstream_errors_total{reason=\"timeout\"} = %v, want >= 1", v)
		}
	})

	t.Run("idle_mid_stream", func(t *testing.T) {
		ctx := testContext(t, 10*time.Second)
		before := e.fake.Stats().Aborted
		start := time.Now()
		r := readChatStream(start, client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("stall after two"),
		}, option.WithHeader("X-Fake-Hang-After", "2")))
		if r.chunks != 2 {
			t.Fatalf("got %d chunks, want the 2 sent before the stall", r.chunks)
		}
		// A cut stream must not look complete to the client.
		if r.err == nil {
			t.Fatalf("a stream cut by the idle timeout ended cleanly for the client; it must end with an error")
		}
		if r.total > 3*time.Second {
			t.Fatalf("idle cut after %v, want about 500ms", r.total)
		}
		if !waitFor(time.Second, func() bool { return e.fake.Stats().Aborted > before }) {
			t.Fatalf("the stalled upstream stream was not released")
		}
	})
}
