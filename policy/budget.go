package policy

import (
	"fmt"
	"math"
	"strconv"
	"time"

	_ "time/tzdata" // budget_timezone resolves on machines without a zoneinfo database

	"github.com/prometheus/client_golang/prometheus"

	"sluice/policy/limit"
)

// Budgets: spend limits in USD per calendar day and per calendar month, on
// a tier's users (tiers, users, end_users, keys' limits), on one model
// pattern inside a tier, on a key's users together (app_limits) and on a
// team (teams). A budget is a window counter in the limiter's store
// (limit.Rule with Until): admission reserves the request's worst case
// (prompt estimate at the input price plus the completion allowance at the
// output price), settlement replaces it with the answer's cost, in the same
// store steps as the token budgets. Amounts are counted in µUSD (1e-6 USD).
//
// Windows are calendar days and months in the policy's budget_timezone
// (default UTC), not rolling: a bill is monthly, and "the daily budget
// starts over at midnight" is what an admin can tell a user. While the
// policy has prices, every admitted request's cost is also counted for its
// user, key and team whether or not they have a budget, so /admin/usage can
// say what each spent today and this month.

// SpendBudget caps spend in USD per calendar day and per calendar month. 0
// is no cap. In an override, a zero field keeps the inherited value.
type SpendBudget struct {
	DailyUSD   float64 `yaml:"daily_usd" json:"daily_usd"`
	MonthlyUSD float64 `yaml:"monthly_usd" json:"monthly_usd"`
}

// Budget limit kinds, the values of the "limit" metric label.
const (
	LimitBudgetDaily   = "budget_daily"
	LimitBudgetMonthly = "budget_monthly"
)

// maxBudgetUSD bounds a budget: its µUSD must stay within limit.MaxSpan.
const maxBudgetUSD = 1e9

// unlimitedMicros is the size of a counter that only counts spend.
const unlimitedMicros = limit.MaxSpan

func (b SpendBudget) override(o SpendBudget) SpendBudget {
	if o.DailyUSD != 0 {
		b.DailyUSD = o.DailyUSD
	}
	if o.MonthlyUSD != 0 {
		b.MonthlyUSD = o.MonthlyUSD
	}
	return b
}

func (b SpendBudget) validate(path string, add func(path, format string, args ...any)) {
	for _, f := range []struct {
		name string
		v    float64
	}{{"daily_usd", b.DailyUSD}, {"monthly_usd", b.MonthlyUSD}} {
		if math.IsNaN(f.v) || f.v < 0 || f.v > maxBudgetUSD {
			add(path+"budget."+f.name, "must be an amount in USD from 0 to %g", float64(maxBudgetUSD))
		}
	}
}

// String writes a budget for diffs: "daily $5, monthly $100", "-" for none.
func (b SpendBudget) String() string {
	if b == (SpendBudget{}) {
		return "-"
	}
	return fmt.Sprintf("daily %s, monthly %s", usdText(b.DailyUSD), usdText(b.MonthlyUSD))
}

func usdText(v float64) string {
	if v == 0 {
		return "-"
	}
	return "$" + strconv.FormatFloat(v, 'f', -1, 64)
}

// Micros converts USD to whole µUSD, rounded to the nearest and bounded to
// [0, limit.MaxSpan].
func Micros(usd float64) int64 {
	return clampMicros(math.Round(usd * 1e6))
}

// worstMicros is a reservation in µUSD, rounded up.
func worstMicros(usd float64) int64 { return clampMicros(math.Ceil(usd * 1e6)) }

func clampMicros(m float64) int64 {
	switch {
	case !(m > 0): // NaN too
		return 0
	case m >= limit.MaxSpan:
		return limit.MaxSpan
	}
	return int64(m)
}

// TeamSpec is one team's limits in policies.yaml (teams:), shared by every
// user of every key with that team: rpm, tpm, tpd, concurrent and budget.
type TeamSpec struct {
	Limits `yaml:",inline"`
}

// window is the current calendar day and month in one time zone.
type window struct {
	zone             *time.Location
	dayStart, dayEnd int64  // µs since the epoch
	monthEnd         int64  // µs
	day, month       string // "20261204", "202612": part of the counters' keys
}

// windowAt returns the calendar day and month around now in zone.
func windowAt(now time.Time, zone *time.Location) *window {
	t := now.In(zone)
	y, m, d := t.Date()
	start := time.Date(y, m, d, 0, 0, 0, 0, zone)
	return &window{
		zone:     zone,
		dayStart: start.UnixMicro(),
		dayEnd:   time.Date(y, m, d+1, 0, 0, 0, 0, zone).UnixMicro(),
		monthEnd: time.Date(y, m+1, 1, 0, 0, 0, 0, zone).UnixMicro(),
		day:      start.Format("20060102"),
		month:    start.Format("200601"),
	}
}

// window returns the current window in zone, built once per day.
func (l *Limiter) window(zone *time.Location) *window {
	now := time.Now()
	us := now.UnixMicro()
	if w := l.win.Load(); w != nil && w.zone == zone && us >= w.dayStart && us < w.dayEnd {
		return w
	}
	w := windowAt(now, zone)
	l.win.Store(w)
	return w
}

// spendKeys are one scope's counters for one day and month.
type spendKeys struct{ day, dayKey, monthKey string }

// spendKeysFor returns the counter keys of a scope (and model pattern) in
// window w: "u:alice:usd:d20261204", "u:alice:usd:m202612". Built once per
// scope and day and cached like keysFor's, so a known user allocates
// nothing.
func (l *Limiter) spendKeysFor(scope, model string, w *window) *spendKeys {
	var buf [128]byte
	id := append(append(append(buf[:0], scope...), 0), model...)
	if v, ok := l.spendKeys.Load(string(id)); ok {
		if k := v.(*spendKeys); k.day == w.day {
			return k
		}
	}
	base := scope
	if model != "" {
		base = scope + ":m:" + model
	}
	k := &spendKeys{day: w.day, dayKey: base + ":usd:d" + w.day, monthKey: base + ":usd:m" + w.month}
	if l.spendN.Add(1) > maxCachedScopes {
		l.spendKeys.Clear()
		l.spendN.Store(1)
	}
	l.spendKeys.Store(string(id), k)
	return k
}

// addSpend adds a scope's day and month counters: a budget reserves the
// request's worst case (µUSD) against its cap (divided by div in local
// fallback mode); a counter without a cap only counts, so it stays out of
// the reservation (ad.track) and is charged at settlement: spend counting
// costs the store nothing at admission.
func (l *Limiter) addSpend(ad *Admission, scope string, keys *spendKeys, b SpendBudget, worst, div int64, w *window) {
	for _, c := range [2]struct {
		kind  string
		key   string
		usd   float64
		until int64
	}{{LimitBudgetDaily, keys.dayKey, b.DailyUSD, w.dayEnd}, {LimitBudgetMonthly, keys.monthKey, b.MonthlyUSD, w.monthEnd}} {
		r := limit.Rule{Key: c.key, Interval: 1, Burst: unlimitedMicros, Until: c.until}
		info := ruleInfo{kind: c.kind, scope: scope, usd: true}
		if c.usd <= 0 {
			ad.track, ad.trackKinds = append(ad.track, r), append(ad.trackKinds, info)
			continue
		}
		info.limit = Micros(c.usd)
		r.Burst, r.Cost = max(info.limit/div, 1), worst
		ad.req.Rules = append(ad.req.Rules, r)
		ad.kinds = append(ad.kinds, info)
	}
}

// buildSpend adds the plan's spend counters when the policy prices models.
func (l *Limiter) buildSpend(ad *Admission, pl *Plan, worst, div int64) {
	if !pl.Spend {
		return
	}
	w := l.window(pl.Zone)
	l.addSpend(ad, "user", l.spendKeysFor(pl.UserScope, "", w), pl.User.Budget, worst, div, w)
	if pl.Model != nil && pl.Model.Limits.Budget != (SpendBudget{}) {
		l.addSpend(ad, "model", l.spendKeysFor(pl.UserScope, pl.Model.Pattern, w), pl.Model.Limits.Budget, worst, div, w)
	}
	l.addSpend(ad, "app", l.spendKeysFor(pl.AppScope, "", w), pl.App.Budget, worst, div, w)
	if pl.TeamScope != "" {
		l.addSpend(ad, "team", l.spendKeysFor(pl.TeamScope, "", w), pl.Team.Budget, worst, div, w)
	}
}

// worstCost is the most a request can cost, in µUSD: its prompt tokens
// at the input price and its completion allowance at the output price
// (cached prompt tokens cost less, never more). A priced model's request
// reserves at least 1 µUSD, so a spent budget refuses even a request whose
// tokens cannot be counted before the call (images, audio).
func worstCost(a *Ask) int64 {
	prompt := max(a.Tokens-a.Completion, 0)
	w := worstMicros(float64(prompt)*a.Price.Input + float64(a.Completion)*a.Price.Output)
	if a.Price != (Price{}) {
		w = max(w, 1)
	}
	return w
}

// HasBudget reports whether the plan caps spend anywhere (shadow budgets
// included), so the request's tokens must be estimated to price its worst
// case.
func (p *Plan) HasBudget() bool {
	var z SpendBudget
	return p.User.Budget != z || p.App.Budget != z || p.Team.Budget != z || p.Shadow.Budget != z ||
		(p.Model != nil && p.Model.Limits.Budget != z)
}

// Spend is the tightest of a request's budgets after its admission: what
// is left of it, for the x-sluice-budget-remaining-usd header.
type Spend struct {
	// Valid reports a budget applied.
	Valid bool
	// Limit and Scope name it (budget_daily, user), Cap is its size and
	// Left what is left after this request's reservation, in µUSD.
	Limit, Scope string
	Cap, Left    int64
}

// RemainingUSD is Left in USD.
func (s *Spend) RemainingUSD() float64 { return float64(s.Left) / 1e6 }

// decideSpend finds the tightest budget of an admitted request and counts
// how much of it is used in sluice_budget_used_ratio.
func (l *Limiter) decideSpend(ad *Admission) {
	d := &ad.dec
	for i, k := range ad.kinds {
		if !k.usd || k.limit == 0 || i >= len(d.Remaining) || d.Remaining[i] < 0 {
			continue
		}
		left := min(d.Remaining[i], k.limit)
		if !ad.Spend.Valid || float64(left)/float64(k.limit) < float64(ad.Spend.Left)/float64(ad.Spend.Cap) {
			ad.Spend = Spend{Valid: true, Limit: k.kind, Scope: k.scope, Cap: k.limit, Left: left}
		}
	}
	if ad.Spend.Valid {
		l.budgetUse(ad.tier, ad.Spend.Limit).Observe(1 - float64(ad.Spend.Left)/float64(ad.Spend.Cap))
	}
}

// budgetUse returns sluice_budget_used_ratio's child for a tier and a
// budget kind, cached in l.counters (under a leading 2, so retireTiers
// drops it with the tier's other series).
func (l *Limiter) budgetUse(tier, kind string) prometheus.Observer {
	var buf [96]byte
	key := append(append(append(append(buf[:0], 2), tier...), 0), kind...)
	if o, ok := l.counters.Load(string(key)); ok {
		return o.(prometheus.Observer)
	}
	window := "day"
	if kind == LimitBudgetMonthly {
		window = "month"
	}
	l.tierMu.Lock()
	o := l.budgetUsed.WithLabelValues(tier, window)
	l.counters.Store(string(key), o)
	l.tierMu.Unlock()
	return o
}

// hasBudget reports whether any part of the file sets a spend budget.
func hasBudget(f *File) bool {
	var z SpendBudget
	for _, t := range f.Tiers {
		if t.Budget != z || t.Shadow.Budget != z {
			return true
		}
		for _, m := range t.Models {
			if m.Budget != z {
				return true
			}
		}
	}
	for _, u := range f.Users {
		if u.Budget != z || u.Shadow.Budget != z {
			return true
		}
	}
	for _, k := range f.Keys {
		if k.Limits.Budget != z || k.AppLimits.Budget != z || k.Shadow.Budget != z {
			return true
		}
		for _, u := range k.EndUsers {
			if u.Budget != z || u.Shadow.Budget != z {
				return true
			}
		}
	}
	for _, t := range f.Teams {
		if t.Budget != z {
			return true
		}
	}
	return false
}
