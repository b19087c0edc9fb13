package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/policy"
	"sluice/policy/tokens"
)

// limitNames spell out a limit kind in a 429's message.
var limitNames = map[string]string{
	policy.LimitRPM:        "requests per minute (rpm)",
	policy.LimitTPM:        "tokens per minute (tpm)",
	policy.LimitTPD:        "tokens per day (tpd)",
	policy.LimitConcurrent: "concurrent requests",
}

// writeRejected answers a request admission turned down: a 429 with exact
// retry-after (seconds, rounded up) and retry-after-ms, or, for a request
// that can never fit, a 429 without them, or a 503 when the bucket store
// failed and the policy denies.
func writeRejected(ctx *fasthttp.RequestCtx, ad *policy.Admission, user string) {
	setRateLimitHeaders(ctx, ad)
	if ad.Outcome == policy.Unavailable {
		writeError(ctx, errLimiterUnavailable, "", "Rate limits cannot be checked right now; retry the request.")
		return
	}
	kind := errRateLimitRequests
	if ad.Limit == policy.LimitTPM || ad.Limit == policy.LimitTPD {
		kind = errRateLimitTokens
	}
	owner := "user " + user
	switch ad.Scope {
	case "model":
		owner = "user " + user + " on this model"
	case "app":
		owner = "all users of this key"
	}
	name := limitNames[ad.Limit]
	limit := strconv.FormatInt(ad.LimitValue, 10)
	if ad.Outcome == policy.NeverFits {
		writeError(ctx, kind, "", "Request too large for "+name+" of "+owner+": it needs "+
			strconv.FormatInt(ad.Reserved, 10)+" tokens, more than the limit of "+limit+" allows at once. Lower max_tokens or shorten the prompt.")
		return
	}
	setRetryAfter(&ctx.Response.Header, ad.RetryAfter)
	writeError(ctx, kind, "", "Rate limit reached for "+name+" of "+owner+": limit "+limit+
		". Please try again in "+ad.RetryAfter.Round(time.Millisecond).String()+".")
}

// setRetryAfter writes retry-after (whole seconds, rounded up) and
// retry-after-ms (rounded up) for a wait of d.
func setRetryAfter(h *fasthttp.ResponseHeader, d time.Duration) {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	secs := (d + time.Second - 1) / time.Second
	var b [20]byte
	h.SetBytesV("Retry-After", strconv.AppendInt(b[:0], int64(secs), 10))
	h.SetBytesV("Retry-After-Ms", strconv.AppendInt(b[:0], int64(ms), 10))
}

// setRateLimitHeaders writes OpenAI's x-ratelimit-* headers for the user's
// request and token budgets, replacing the provider's (which describe the
// gateway's account, not the user).
func setRateLimitHeaders(ctx *fasthttp.RequestCtx, ad *policy.Admission) {
	h := &ctx.Response.Header
	for i, b := range [2]*policy.Budget{&ad.Requests, &ad.Tokens} {
		if !b.Valid {
			continue
		}
		names := &rateLimitHeaders[i]
		var buf [32]byte
		h.SetCanonical(names[0], strconv.AppendInt(buf[:0], b.Limit, 10))
		h.SetCanonical(names[1], strconv.AppendInt(buf[:0], b.Remaining, 10))
		h.SetCanonical(names[2], append(buf[:0], b.Reset.Round(time.Millisecond).String()...))
	}
}

// rateLimitHeaders are the x-ratelimit-* names, canonical (set without
// normalizing): limit, remaining and reset, for requests then tokens.
var rateLimitHeaders = [2][3][]byte{
	{[]byte("X-Ratelimit-Limit-Requests"), []byte("X-Ratelimit-Remaining-Requests"), []byte("X-Ratelimit-Reset-Requests")},
	{[]byte("X-Ratelimit-Limit-Tokens"), []byte("X-Ratelimit-Remaining-Tokens"), []byte("X-Ratelimit-Reset-Tokens")},
}

// tokenKinds maps the parsed endpoints to the token counter's request kinds.
var tokenKinds = [epCount]tokens.Kind{
	epChat:        tokens.Chat,
	epCompletions: tokens.Completions,
	epEmbeddings:  tokens.Embeddings,
	epResponses:   tokens.Responses,
}
