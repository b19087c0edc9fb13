package proxy

import (
	"context"
	"sluice/policy"
	"sluice/policy/tokens"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// claimFor sets what x asks of its upstream's queue for principal p (its
// user, the tier's weight and priority, the deadline of the tier's max
// wait or the client's shorter X-Sluice-Max-Wait) and returns that wait;
// false when the header was unusable (answered 400).
func (s *Server) claimFor(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, p policy.Principal) (time.Duration, bool) {
	tier := pol.Tiers[p.Tier]
	wait, ok := maxWait(ctx, tier)
	if !ok {
		return 0, false
	}
	x.claim = claim{flow: p.User, weight: 1, deadline: x.start.Add(wait)}
	if tier != nil {
		x.claim.weight, x.claim.priority = tier.Queue.Weight, tier.Queue.Priority
	}
	return wait, true
}

// reservation is a request's token reservation: the prompt's estimate plus
// the completion allowance (max tokens, or the tier's default, times n).
func (s *Server) reservation(x *exchange, f *reqFields, tier *policy.Tier) int64 {
	prompt := s.tokens.Estimate(tokenKinds[x.ep], x.body)
	x.promptEst = prompt
	return satAdd(prompt, completionAllowance(x.ep, f, tier))
}

// completionAllowance is the completion tokens a request reserves: its max
// tokens (or the tier's default) times n, saturating at MaxReservation (the
// scan bounds both numbers; a tier's default is the admin's).
func completionAllowance(ep endpoint, f *reqFields, tier *policy.Tier) int64 {
	if ep == epEmbeddings {
		return 0
	}
	c := f.maxTokens
	if c < 0 {
		c = policy.DefaultMaxTokens
		if tier != nil {
			c = tier.DefaultMaxTokens
		}
	}
	return satMul(max(c, 0), max(f.n, 1))
}

// admit reserves the request's budgets (step 5), answering 429 (or 503)
// when they are used up. On success x holds the admission, settled by
// finish, and the upstream's queue claim its tokens. The JSON endpoints
// reserve tokens (the prompt's estimate plus the completion allowance; a
// stream metered in tokens asks the upstream for its usage, x.body
// rewritten); the model and passthrough endpoints are one request each:
// they cost no tokens Sluice can count, but each holds an upstream
// connection while it runs.
func (s *Server) admit(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key, p policy.Principal,
	f *reqFields, wait time.Duration) bool {
	upTokens := x.ep.parsesBody() && s.upstreams[x.route.Upstream].sched.CountsTokens()
	if s.limiter == nil {
		if upTokens {
			x.claim.tokens = s.reservation(x, f, pol.Tiers[p.Tier])
		}
		return true
	}
	plan := pol.Plan(p, key, x.model)
	x.claim.flow = plan.UserScope
	if !plan.Limited() {
		if upTokens {
			x.claim.tokens = s.reservation(x, f, plan.Tier)
		}
		return true
	}
	// An answer from the cache may count requests only (cachecall.go).
	countTokens := x.ep.parsesBody() && plan.CountsTokens() && !x.cacheFree
	if x.stream && x.ep != epResponses && !f.includeUsage && (countTokens || upTokens) {
		// Ask for usage to settle the reservation; the relay removes the
		// usage chunk again since the client did not ask for it.
		x.body = withIncludeUsage(x.body, f)
		x.stripUsage = true
	}
	kind := tokenKinds[x.ep]
	var prompt, completion int64
	if countTokens || upTokens {
		est, allowance := s.tokens.Estimate(kind, x.body), completionAllowance(x.ep, f, plan.Tier)
		x.claim.tokens = est + allowance
		if countTokens {
			prompt, completion = est, allowance
		}
	}
	model, body := x.model, x.body
	ask := policy.Ask{
		Plan:       plan,
		RequestID:  x.requestID(),
		Tokens:     prompt + completion,
		MaxWait:    wait,
		Completion: completion,
		Price:      x.price,
	}
	var exact func() int64
	if countTokens {
		exact = func() int64 {
			n, err := s.tokens.Count(kind, model, body)
			if err != nil {
				return prompt + completion
			}
			return n + completion
		}
	}
	ad := s.limiter.AdmitCounting(context.Background(), pol, &ask, exact)
	if ad.Outcome != policy.Admitted {
		x.limit, x.limitScope = ad.Limit, ad.Scope
		writeRejected(ctx, ad, p, pol.Zone)
		s.limiter.Finish(context.Background(), ad, -1, 0)
		return false
	}
	x.adm, x.promptEst = ad, prompt
	if x.showCost && ad.Spend.Valid {
		var b [32]byte
		ctx.Response.Header.SetBytesV(hdrBudgetRemaining, strconv.AppendFloat(b[:0], ad.Spend.RemainingUSD(), 'f', -1, 64))
	}
	return true
}

// hdrBudgetRemaining is what is left of the request's tightest spend budget
// after its reservation, in USD, for keys with show_cost.
const hdrBudgetRemaining = "X-Sluice-Budget-Remaining-Usd"

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
// failed and the policy denies. A spent budget answers as OpenAI does for
// an exhausted account (writeBudgetRejected).
func writeRejected(ctx *fasthttp.RequestCtx, ad *policy.Admission, p policy.Principal, zone *time.Location) {
	setRateLimitHeaders(ctx, ad)
	if ad.Outcome == policy.Unavailable {
		writeError(ctx, errLimiterUnavailable, "", "Rate limits cannot be checked right now; retry the request.")
		return
	}
	if ad.Limit == policy.LimitBudgetDaily || ad.Limit == policy.LimitBudgetMonthly {
		writeBudgetRejected(ctx, ad, p, zone)
		return
	}
	user := p.User
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
	case "team":
		owner = "team " + p.Team
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
