package proxy

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/policy"
)

// TestRateLimitHeaders: both budgets give their three headers, in OpenAI's
// format; a budget without a limit gives none.
func TestRateLimitHeaders(t *testing.T) {
	var ctx fasthttp.RequestCtx
	setRateLimitHeaders(&ctx, &policy.Admission{
		Requests: policy.Budget{Valid: true, Limit: 600, Remaining: 599, Reset: 100*time.Millisecond + 400*time.Microsecond},
		Tokens:   policy.Budget{Valid: true, Limit: 150000, Remaining: 0, Reset: 61 * time.Second},
	})
	h := &ctx.Response.Header
	for k, want := range map[string]string{
		"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "599", "x-ratelimit-reset-requests": "100ms",
		"x-ratelimit-limit-tokens": "150000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m1s",
	} {
		if got := string(h.Peek(k)); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	ctx.Response.Reset()
	setRateLimitHeaders(&ctx, &policy.Admission{Requests: policy.Budget{Valid: true, Limit: 1, Reset: 1500 * time.Millisecond}})
	if got := string(h.Peek("X-Ratelimit-Reset-Requests")); got != "1.5s" || len(h.Peek("X-Ratelimit-Limit-Tokens")) != 0 {
		t.Errorf("requests only: reset %q, tokens limit %q", got, h.Peek("X-Ratelimit-Limit-Tokens"))
	}
}

func BenchmarkRateLimitHeaders(b *testing.B) {
	var ctx fasthttp.RequestCtx
	ad := &policy.Admission{
		Requests: policy.Budget{Valid: true, Limit: 600, Remaining: 599, Reset: 100 * time.Millisecond},
		Tokens:   policy.Budget{Valid: true, Limit: 150000, Remaining: 149000, Reset: 400 * time.Millisecond},
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx.Response.Header.Reset()
		setRateLimitHeaders(&ctx, ad)
	}
}
