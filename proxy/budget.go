package proxy

import (
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/policy"
)

// writeBudgetRejected answers a request that a spent budget turned down as
// OpenAI answers an exhausted account: 429 insufficient_quota, naming the
// budget, whose it is and when it starts over. Official SDKs retry a 429:
// retry-after is sent when the window ends within a minute (what SDKs
// honour), else x-should-retry: false, so an SDK does not spend its
// retries on a budget that stays spent for hours.
func writeBudgetRejected(ctx *fasthttp.RequestCtx, ad *policy.Admission, p policy.Principal, zone *time.Location) {
	window, resets := "daily", "tomorrow"
	if ad.Limit == policy.LimitBudgetMonthly {
		window, resets = "monthly", "next month"
	}
	owner := "user " + p.User
	switch ad.Scope {
	case "model":
		owner = "user " + p.User + " on this model"
	case "app":
		owner = "all users of key " + p.KeyID
	case "team":
		owner = "team " + p.Team
	}
	limit := usd(float64(ad.LimitValue) / 1e6)
	worst := usd(float64(ad.Worst) / 1e6)
	if ad.Outcome == policy.NeverFits {
		ctx.Response.Header.Set("X-Should-Retry", "false")
		writeError(ctx, errInsufficientQuota, "", "This request could cost up to "+worst+", more than the "+window+
			" budget of "+limit+" for "+owner+" allows. Lower max_tokens or shorten the prompt.")
		return
	}
	if ad.RetryAfter <= time.Minute {
		setRetryAfter(&ctx.Response.Header, ad.RetryAfter)
	} else {
		ctx.Response.Header.Set("X-Should-Retry", "false")
	}
	reset := time.Now().Add(ad.RetryAfter).In(zone)
	spent := usd(float64(ad.Spend.Cap-ad.Spend.Left) / 1e6)
	writeError(ctx, errInsufficientQuota, "", "You exceeded your current quota: the "+window+" budget of "+limit+
		" for "+owner+" is spent ("+spent+" used; this request could cost up to "+worst+"). It starts over "+resets+
		", at "+reset.Format("2006-01-02 15:04 MST")+" (in "+ad.RetryAfter.Round(time.Second).String()+").")
}

// usd writes an amount in dollars with cents, or more digits when it is
// less than a cent: "$5.00", "$0.0031".
func usd(v float64) string {
	if v != 0 && v < 0.01 {
		return "$" + strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
	}
	return "$" + strconv.FormatFloat(v, 'f', 2, 64)
}
