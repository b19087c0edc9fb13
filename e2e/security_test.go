package e2e

// Tests for the findings of the security review (issue 18) that Sluice
// fixes: each one replays the review's request through the binary.

import (
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// overflowPolicy limits the demo key to 2 requests a minute and 1000 tokens;
// a store error admits (the review's setting that turned a wrapped
// reservation into unlimited requests).
const overflowPolicy = `
on_store_error: allow
tiers:
  t:
    rpm: 2
    tpm: 1000
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: t
`

// TestSecurityOverflowIsRejected: "max_tokens": 2^62 with "n": 3 wrapped the
// reservation negative, which the bucket store refused as invalid, and
// on_store_error: allow then admitted every such request. Now the absurd
// number is a 400 before any budget is asked, and no store error is counted.
func TestSecurityOverflowIsRejected(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{}), policies: overflowPolicy})
	client := e.s.client(demoKey)
	ctx := testContext(t, 20*time.Second)
	for i := range 5 {
		var resp *http.Response
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     openai.ChatModelGPT4oMini,
			Messages:  userMessages("overflow " + nonce()),
			MaxTokens: openai.Int(4611686018427387904),
			N:         openai.Int(3),
		}, option.WithResponseInto(&resp), option.WithMaxRetries(0))
		apiErr := asAPIError(t, err)
		if apiErr.StatusCode != http.StatusBadRequest || apiErr.Code != "integer_above_max_value" ||
			apiErr.Param != "max_tokens" || apiErr.Type != "invalid_request_error" {
			t.Fatalf("request %d: status %d type %q code %q param %q, want 400 invalid_request_error integer_above_max_value max_tokens (%s)",
				i, apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Param, apiErr.Message)
		}
	}
	if n, _ := e.s.metric(t, "sluice_limiter_store_errors_total"); n != 0 {
		t.Fatalf("sluice_limiter_store_errors_total = %v, want 0", n)
	}
	// The budget is whole: the 2 requests a minute still answer, the third
	// is a 429.
	for i := range 3 {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("fits " + nonce()), MaxTokens: openai.Int(10),
		}, option.WithMaxRetries(0))
		switch {
		case i < 2 && err != nil:
			t.Fatalf("request %d within budget: %v", i, err)
		case i == 2:
			if apiErr := asAPIError(t, err); apiErr.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("third request: status %d, want 429", apiErr.StatusCode)
			}
		}
	}
}
