package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"sluice/config"
	"sluice/console"
	"sluice/policy"
	"sluice/policy/queue"
)

// consoleState is what the web console keeps between page views: its
// login failure counter and the key list of the policy in force.
type consoleState struct {
	// failures is sluice_console_login_failures_total; throttled
	// sluice_console_login_throttled_total.
	failures, throttled prometheus.Counter

	// mu guards the fields below.
	mu sync.Mutex
	// keysOf is the policy keys lists the keys of, by id.
	keysOf *policy.Policy
	keys   []keyRow
}

// keyRow is a key as the policy lists it.
type keyRow struct {
	id, user, team, tier string
	trusted              bool
}

// newConsoleState registers the console's counters on reg.
func newConsoleState(reg prometheus.Registerer) (*consoleState, error) {
	c := &consoleState{failures: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_console_login_failures_total",
		Help: "Console sign-ins with a wrong admin token, by the login form or a Bearer header.",
	}), throttled: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_console_login_throttled_total",
		Help: "Console sign-ins refused unchecked (429) because their address sent too many wrong tokens (5 at once, then one per 12 s).",
	})}
	if reg != nil {
		for _, m := range []prometheus.Collector{c.failures, c.throttled} {
			if err := reg.Register(m); err != nil {
				return nil, fmt.Errorf("console metrics: %w", err)
			}
		}
	}
	return c, nil
}

// consoleCookieKey derives the console's cookie key from the admin token's
// hash, so replicas with one token share sessions and a new token ends
// them.
func consoleCookieKey(tokenHash [sha256.Size]byte) []byte {
	m := hmac.New(sha256.New, tokenHash[:])
	m.Write([]byte("sluice console session key v1"))
	return m.Sum(nil)
}

// consoleRoutes registers the web console (package console) under
// /console/: 404 like /admin/ without an admin token configured. g is the
// registry /metrics serves, the overview's numbers.
func (s *Server) consoleRoutes(mux *http.ServeMux, g prometheus.Gatherer) {
	st := s.console
	if st == nil { // a Server not built by New (tests)
		st, _ = newConsoleState(nil)
	}
	var cookieKey []byte
	if a := s.admin; a != nil && a.o.Token != "" {
		cookieKey = consoleCookieKey(a.tokenHash)
	}
	h, err := console.New(console.Options{
		Source: &consoleSource{s: s, g: g, st: st},
		BearerOK: func(header string) bool {
			a := s.admin
			return a != nil && a.o.Token != "" && tokenOK(header, a.tokenHash)
		},
		TokenOK: func(token string) bool {
			a := s.admin
			return a != nil && a.o.Token != "" && tokenOK("Bearer "+token, a.tokenHash)
		},
		LoginFailed:    st.failures.Inc,
		LoginThrottled: st.throttled.Inc,
		CookieKey:      cookieKey,
		Logger:         s.log,
	})
	mux.Handle(console.Prefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := s.admin; a == nil || a.o.Token == "" {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			// The templates are embedded and tested: a build defect.
			http.Error(w, "the console is broken in this build", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	}))
	if err != nil && s.log != nil {
		s.log.Error("console: cannot start", "error", err)
	}
}

// consoleSource is the console's view of the server.
type consoleSource struct {
	s  *Server
	g  prometheus.Gatherer
	st *consoleState
}

// families gathers the metrics by name; nil on an error (the pages then
// show zeros rather than nothing).
func (c *consoleSource) families() families {
	if c.g == nil {
		return nil
	}
	mfs, err := c.g.Gather()
	if err != nil && c.s.log != nil {
		c.s.log.Warn("console: gathering metrics", "error", err)
	}
	f := make(families, len(mfs))
	for _, mf := range mfs {
		f[mf.GetName()] = mf
	}
	return f
}

// families are gathered metric families by name.
type families map[string]*dto.MetricFamily

// value is a counter's, gauge's or untyped metric's value.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sum adds the series of name whose labels have the given values (pairs
// of name and value).
func (f families) sum(name string, match ...string) float64 {
	var t float64
	for _, m := range f[name].GetMetric() {
		if matches(m, match) {
			t += value(m)
		}
	}
	return t
}

func matches(m *dto.Metric, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if label(m, match[i]) != match[i+1] {
			return false
		}
	}
	return true
}

// group sums name's matching series by the text key makes of each, and
// drops zero rows.
func (f families) group(name string, key func(*dto.Metric) string, match ...string) []console.Count {
	by := map[string]float64{}
	for _, m := range f[name].GetMetric() {
		if matches(m, match) {
			by[key(m)] += value(m)
		}
	}
	out := make([]console.Count, 0, len(by))
	for k, v := range by {
		if v != 0 {
			out = append(out, console.Count{Label: k, Value: v})
		}
	}
	return out
}

func (c *consoleSource) reload() console.ReloadView {
	a := c.s.admin
	if a == nil || a.o.Status == nil {
		return console.ReloadView{}
	}
	st := a.o.Status()
	return console.ReloadView{Known: true, SHA256: st.SHA256, LastSuccess: st.LastSuccess, LastError: st.LastError}
}

// Overview reads the process's own metrics.
func (c *consoleSource) Overview() console.Overview {
	f := c.families()
	o := console.Overview{
		Requests:       f.sum("sluice_requests_total"),
		CacheHits:      f.sum("sluice_cache_hits_total"),
		CacheMisses:    f.sum("sluice_cache_misses_total"),
		CacheCoalesced: f.sum("sluice_cache_coalesced_total"),
		QueueUser:      f.sum("sluice_queue_depth", "stage", "user"),
		QueueProvider:  f.sum("sluice_queue_depth", "stage", "provider"),
		InFlight:       f.sum("sluice_requests_in_flight"),
		SpendUSD:       f.sum("sluice_spend_usd_total"),
		Reload:         c.reload(),
		Providers:      c.providers(f),
	}
	for _, m := range f["sluice_build_info"].GetMetric() {
		o.Version = label(m, "version")
	}
	o.Statuses = f.group("sluice_requests_total", func(m *dto.Metric) string {
		if code := label(m, "code"); code != "other" {
			return code
		}
		return "other " + label(m, "status_class")
	})
	slices.SortFunc(o.Statuses, func(a, b console.Count) int { return strings.Compare(a.Label, b.Label) })
	// What was answered 429 and why: the limiter's refusals (rejected up
	// front, or a request that could never fit), then waits that ended
	// without a slot.
	for _, outcome := range []string{"rejected", "never"} {
		o.Rejections = append(o.Rejections, f.group("sluice_limiter_decisions_total", func(m *dto.Metric) string {
			return label(m, "limit") + " (" + label(m, "scope") + ")"
		}, "outcome", outcome)...)
	}
	for _, outcome := range []string{"rejected", "expired"} {
		o.Rejections = append(o.Rejections, f.group("sluice_queue_outcomes_total", func(m *dto.Metric) string {
			return label(m, "stage") + " queue " + outcome
		}, "outcome", outcome)...)
	}
	o.Rejections = mergeCounts(o.Rejections)
	if fam, ok := f["sluice_sink_writer_up"]; ok && len(fam.GetMetric()) > 0 {
		o.SinkKnown = true
		o.SinkUp = f.sum("sluice_sink_writer_up") > 0
		o.SinkEnqueued = f.sum("sluice_sink_enqueued_total")
		o.SinkWritten = f.sum("sluice_sink_written_total")
		o.SinkSpooled = f.sum("sluice_sink_spooled_total")
	}
	return o
}

// mergeCounts adds rows of the same label and sorts them, largest first.
func mergeCounts(cs []console.Count) []console.Count {
	by := map[string]float64{}
	for _, c := range cs {
		by[c.Label] += c.Value
	}
	out := make([]console.Count, 0, len(by))
	for k, v := range by {
		out = append(out, console.Count{Label: k, Value: v})
	}
	slices.SortFunc(out, func(a, b console.Count) int {
		if a.Value != b.Value {
			if a.Value > b.Value {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Label, b.Label)
	})
	return out
}

// Providers reads each upstream's queue and breaker.
func (c *consoleSource) Providers() []console.ProviderView { return c.providers(c.families()) }

var breakerStates = map[int]string{queue.BreakerClosed: "closed", queue.BreakerHalfOpen: "half-open", queue.BreakerOpen: "open"}

func (c *consoleSource) providers(f families) []console.ProviderView {
	out := make([]console.ProviderView, 0, len(c.s.upstreams))
	for i, up := range c.s.upstreams {
		p := console.ProviderView{Name: up.name, Factor: 1, Breaker: "closed",
			InFlight:  f.sum("sluice_upstream_budget_in_flight", "upstream", up.name),
			Throttled: f.sum("sluice_upstream_throttled_total", "upstream", up.name)}
		if up.sched != nil {
			p.Waiting, p.Factor, p.Limited = up.sched.Waiting(), up.sched.Factor(), up.sched.Limited()
		}
		if up.breaker != nil {
			p.Breaker = breakerStates[up.breaker.State()]
		}
		if c.s.cfg != nil && i < len(c.s.cfg.Upstreams) {
			// s.upstreams are built from cfg.Upstreams in order.
			uc := &c.s.cfg.Upstreams[i]
			p.Budget, p.Keys = budgetLine(uc.Budget), len(uc.Keys)
			if len(uc.Keys) > 0 && up.sched != nil {
				for j, ks := range up.sched.KeyStates() {
					if j >= len(uc.Keys) {
						break
					}
					p.Pool = append(p.Pool, console.PoolKey{ID: ks.ID, Weight: ks.Weight, Budget: budgetLine(uc.Keys[j].Budget),
						Resting:   ks.Resting,
						Answers:   f.sum("sluice_upstream_key_answers_total", "upstream", up.name, "key", ks.ID),
						Throttled: f.sum("sluice_upstream_key_throttled_total", "upstream", up.name, "key", ks.ID)})
				}
			}
		}
		out = append(out, p)
	}
	return out
}

// consoleRequestsWindow is how far back the recent requests page looks.
const consoleRequestsWindow = 24 * time.Hour

// Requests reads a user's recent transcripts, metadata only: of the key
// given, of the app key for its end user, else of the user's own keys (a
// name is not unique: an app key's end user may share it).
func (c *consoleSource) Requests(ctx context.Context, keyID, user string, limit int) (console.RequestsView, error) {
	pol := c.s.policy.Load()
	if pol == nil {
		return console.RequestsView{}, console.ErrNotFound
	}
	k, p, err := pol.Resolve(keyID, user)
	if err != nil {
		return console.RequestsView{}, console.ErrNotFound
	}
	rv := console.RequestsView{User: p.User, EndUser: p.EndUser, Since: time.Now().Add(-consoleRequestsWindow)}
	keys := map[string]bool{k.ID: true}
	if keyID != "" || p.EndUser {
		rv.KeyID = k.ID
	} else {
		for _, id := range pol.KeysOf(p.User) {
			keys[id] = true
		}
	}
	t := c.s.tr
	if t == nil || t.reader == nil {
		return rv, console.ErrNoTranscripts
	}
	recs, err := t.reader.Recent(ctx, p.User, rv.Since, maxTranscripts)
	if err != nil {
		if c.s.log != nil {
			c.s.log.Warn("console requests: transcript store failed", "error", err)
		}
		return rv, fmt.Errorf("%w: %w", console.ErrNoTranscripts, err)
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	for _, r := range recs {
		if !keys[r.KeyID] {
			continue
		}
		rv.Requests = append(rv.Requests, console.RequestView{Start: r.Start, ID: r.RequestID, KeyID: r.KeyID,
			Endpoint: r.Endpoint, Model: r.Model, Stream: r.Stream, Status: r.Status, ErrorType: r.ErrorType,
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
			Latency: ms(r.LatencyMs), QueueWait: ms(r.QueueWaitMs), CacheStatus: r.CacheStatus})
		if len(rv.Requests) == limit {
			break
		}
	}
	return rv, nil
}

// budgetLine describes an upstream's budget: "rpm 500, tpm 200000,
// concurrent 20"; "" without one.
func budgetLine(b config.Budget) string {
	var parts []string
	for _, f := range []struct {
		name string
		v    int64
	}{{"rpm", b.RPM}, {"tpm", b.TPM}, {"concurrent", b.Concurrent}} {
		if f.v != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", f.name, f.v))
		}
	}
	return strings.Join(parts, ", ")
}

// User reads a user's buckets without spending (as GET /admin/usage).
func (c *consoleSource) User(ctx context.Context, keyID, user string) (console.UserView, error) {
	pol := c.s.policy.Load()
	if pol == nil {
		return console.UserView{}, console.ErrNotFound
	}
	k, p, err := pol.Resolve(keyID, user)
	if err != nil {
		return console.UserView{}, console.ErrNotFound
	}
	pl := pol.Plan(p, k, "")
	uv := console.UserView{User: p.User, KeyID: k.ID, Team: p.Team, Tier: p.Tier, EndUser: p.EndUser}
	if !p.EndUser {
		uv.Keys = pol.KeysOf(p.User)
	}
	for _, l := range []struct {
		scope string
		l     policy.Limits
	}{{"user", pl.User}, {"app key, all its users", pl.App}, {"team", pl.Team}, {"shadow (counted only)", pl.Shadow}} {
		if !l.l.IsZero() {
			uv.Limits = append(uv.Limits, l.scope+": "+limitsLine(l.l))
		}
	}
	if pl.Model != nil {
		uv.Limits = append(uv.Limits, "model "+pl.Model.Pattern+": "+limitsLine(pl.Model.Limits))
	}
	uv.Buckets, uv.Spend, err = c.usage(ctx, &pl)
	return uv, err
}

// Team reads a team's shared buckets and spend without spending: through
// the plan of its first key, keeping the rules of scope team.
func (c *consoleSource) Team(ctx context.Context, name string) (console.TeamView, error) {
	pol := c.s.policy.Load()
	if pol == nil {
		return console.TeamView{}, console.ErrNotFound
	}
	keys := pol.KeysOfTeam(name)
	if len(keys) == 0 {
		return console.TeamView{}, console.ErrNotFound
	}
	tv := console.TeamView{Name: name}
	if l, ok := pol.TeamLimits()[name]; ok {
		tv.Limits = limitsLine(l)
	}
	for _, k := range keys {
		tv.Members = append(tv.Members, console.KeyView{ID: k.ID, User: k.User, Team: k.Team, Tier: k.Tier, Trusted: k.Trusted})
	}
	k := keys[0]
	pl := pol.Plan(pol.Principal(k, ""), k, "")
	if pl.TeamScope == "" { // no team limits and no prices: nothing counted per team
		return tv, nil
	}
	b, s, err := c.usage(ctx, &pl)
	for _, x := range b {
		if x.Scope == "team" {
			tv.Buckets = append(tv.Buckets, x)
		}
	}
	for _, x := range s {
		if x.Scope == "team" {
			tv.Spend = append(tv.Spend, x)
		}
	}
	return tv, err
}

// usage reads a plan's buckets and spend without spending; the error wraps
// console.ErrUnavailable.
func (c *consoleSource) usage(ctx context.Context, pl *policy.Plan) ([]console.Bucket, []console.Spend, error) {
	if c.s.limiter == nil {
		return nil, nil, console.ErrUnavailable
	}
	us, err := c.s.limiter.Usage(ctx, pl)
	if err != nil {
		if c.s.log != nil {
			c.s.log.Warn("console usage: bucket store failed", "error", err)
		}
		return nil, nil, fmt.Errorf("%w: %w", console.ErrUnavailable, err)
	}
	var buckets []console.Bucket
	var spend []console.Spend
	for _, u := range us {
		reset := time.Duration(u.ResetSeconds * float64(time.Second))
		switch u.Limit {
		case policy.LimitBudgetDaily, policy.LimitBudgetMonthly:
			w := "today"
			if u.Limit == policy.LimitBudgetMonthly {
				w = "this month"
			}
			spend = append(spend, console.Spend{Window: w, Scope: u.Scope, SpentUSD: u.SpentUSD, BudgetUSD: u.BudgetUSD, Reset: reset})
		default:
			buckets = append(buckets, console.Bucket{Limit: u.Limit, Scope: u.Scope, Configured: u.Configured,
				Burst: u.Burst, Remaining: u.Remaining, Used: u.Used, Reset: reset})
		}
	}
	return buckets, spend, nil
}

// limitsLine describes limits in one line: "rpm 60, tpm 40000 (burst
// 20000), budget daily $5, monthly -".
func limitsLine(l policy.Limits) string {
	if l.IsZero() {
		return "unlimited"
	}
	var parts []string
	for _, r := range []struct {
		name string
		r    policy.Rate
	}{{"rpm", l.RPM}, {"tpm", l.TPM}, {"tpd", l.TPD}} {
		if r.r.Limit != 0 {
			parts = append(parts, r.name+" "+r.r.String())
		}
	}
	if l.Concurrent != 0 {
		parts = append(parts, fmt.Sprintf("concurrent %d", l.Concurrent))
	}
	if l.Budget != (policy.SpendBudget{}) {
		parts = append(parts, "budget "+l.Budget.String())
	}
	return strings.Join(parts, ", ")
}

// Policy describes the policy in force.
func (c *consoleSource) Policy(filter string, max int) console.PolicyView {
	pol := c.s.policy.Load()
	if pol == nil {
		return console.PolicyView{}
	}
	f := c.families()
	pv := console.PolicyView{Reload: c.reload(), OnStoreError: pol.OnStoreError}
	if pol.Zone != nil {
		pv.Zone = pol.Zone.String()
	}
	names := make([]string, 0, len(pol.Tiers))
	for n := range pol.Tiers {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t := pol.Tiers[n]
		tv := console.TierView{Name: n, Limits: limitsLine(t.Limits),
			Queue:             queueLine(t.Queue),
			ShadowWouldReject: f.sum("sluice_shadow_decisions_total", "tier", n, "outcome", "would_reject")}
		if !t.Shadow.IsZero() {
			tv.Shadow = limitsLine(t.Shadow)
		}
		for _, m := range t.Models {
			tv.Models = append(tv.Models, m.Pattern+": "+limitsLine(m.Limits))
		}
		pv.Tiers = append(pv.Tiers, tv)
	}
	if a := c.s.admin; a != nil && a.o.Status != nil {
		for _, e := range a.o.Status().History {
			pv.History = append(pv.History, console.ReloadEntry{At: e.At, Trigger: e.Trigger, Result: e.Result,
				SHA256: e.SHA256, Error: e.Error, Changes: e.Changes, MoreChanges: e.MoreChanges})
		}
	}
	rows := c.st.keysFor(pol)
	pv.KeysTotal = len(rows)
	for _, r := range rows {
		if filter != "" && !strings.Contains(r.id, filter) && !strings.Contains(r.user, filter) && r.tier != filter {
			continue
		}
		pv.KeysMatched++
		if len(pv.Keys) >= max {
			continue
		}
		pv.Keys = append(pv.Keys, console.KeyView{ID: r.id, User: r.user, Team: r.team, Tier: r.tier, Trusted: r.trusted})
	}
	if users := pol.UserOverrides(); len(users) > 0 {
		names := make([]string, 0, len(users))
		for name := range users {
			if filter == "" || strings.Contains(name, filter) || users[name].Tier == filter {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		pv.OverridesMatched = len(names)
		for _, name := range names[:min(len(names), max)] {
			u := users[name]
			ol := console.OverrideLine{User: name, Tier: u.Tier}
			if !u.Limits.IsZero() {
				ol.Limits = limitsLine(u.Limits)
			}
			if !u.Shadow.IsZero() {
				ol.Shadow = limitsLine(u.Shadow)
			}
			pv.Overrides = append(pv.Overrides, ol)
		}
	}
	if teams := pol.TeamLimits(); len(teams) > 0 {
		members := map[string]int{}
		for _, r := range rows {
			if _, ok := teams[r.team]; ok {
				members[r.team]++
			}
		}
		for name, l := range teams {
			pv.Teams = append(pv.Teams, console.TeamLine{Name: name, Limits: limitsLine(l), Keys: members[name]})
		}
		slices.SortFunc(pv.Teams, func(a, b console.TeamLine) int { return strings.Compare(a.Name, b.Name) })
	}
	return pv
}

func queueLine(q policy.Queue) string {
	if q.MaxWait == 0 {
		return fmt.Sprintf("no waiting (over a limit: 429 at once); weight %d, priority %d", q.Weight, q.Priority)
	}
	return fmt.Sprintf("wait up to %s, %d per user; weight %d, priority %d", q.MaxWait, q.MaxQueue, q.Weight, q.Priority)
}

// keysFor returns the keys of pol, the policy in force, listed once per
// policy.
func (c *consoleState) keysFor(pol *policy.Policy) []keyRow {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keysOf != pol {
		c.keys, c.keysOf = listKeys(pol), pol
	}
	return c.keys
}

// listKeys lists a policy's keys by id.
func listKeys(pol *policy.Policy) []keyRow {
	keys := pol.Keys()
	rows := make([]keyRow, 0, len(keys))
	for _, k := range keys {
		rows = append(rows, keyRow{id: k.ID, user: k.User, team: k.Team, tier: k.Tier, trusted: k.Trusted})
	}
	return rows
}
