package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"sluice/internal/yamlfile"
)

// Rate is a budget per period with a burst: Limit units per period, of
// which up to Burst may be taken at once. In YAML it is either a number
// ("rpm: 60") or a mapping ("rpm: {limit: 60, burst: 10}").
type Rate struct {
	// Limit is the number of units per period; 0 means no limit.
	Limit int64
	// Burst is how many units may be taken at once. Default: Limit, so a
	// full period's budget is available to an idle user.
	Burst int64
}

// UnmarshalYAML accepts a number or a {limit, burst} mapping.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot decode %s as a limit: want a whole number or {limit, burst}", yamlfile.ShowValue(n.Value))
		}
		*r = Rate{Limit: v}
		return nil
	case yaml.MappingNode:
		*r = Rate{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			x, err := strconv.ParseInt(v.Value, 10, 64)
			if v.Kind != yaml.ScalarNode || err != nil {
				return fmt.Errorf("line %d: %s: cannot decode %s as a whole number", v.Line, k.Value, yamlfile.ShowValue(v.Value))
			}
			switch k.Value {
			case "limit":
				r.Limit = x
			case "burst":
				r.Burst = x
			default:
				return fmt.Errorf("line %d: unknown key %s (want limit or burst)", k.Line, yamlfile.ShowValue(k.Value))
			}
		}
		return nil
	}
	return fmt.Errorf("cannot decode a limit from this node: want a whole number or {limit, burst}")
}

// burst is Burst with its default applied.
func (r Rate) burst() int64 {
	if r.Burst == 0 {
		return r.Limit
	}
	return r.Burst
}

// Limits are the budgets of one user (or of one app key's users together).
// Zero fields are unlimited; in an override, zero fields keep the inherited
// value.
type Limits struct {
	// RPM is requests per minute.
	RPM Rate `yaml:"rpm"`
	// TPM is tokens (prompt + completion) per minute.
	TPM Rate `yaml:"tpm"`
	// TPD is tokens (prompt + completion) per day, refilled continuously.
	TPD Rate `yaml:"tpd"`
	// Concurrent is the number of requests in flight at once.
	Concurrent int64 `yaml:"concurrent"`
	// Budget caps spend in USD per calendar day and month (budget.go).
	Budget SpendBudget `yaml:"budget"`
}

// override returns l with the non-zero fields of o replacing its own.
func (l Limits) override(o Limits) Limits {
	if o.RPM.Limit != 0 {
		l.RPM = o.RPM
	}
	if o.TPM.Limit != 0 {
		l.TPM = o.TPM
	}
	if o.TPD.Limit != 0 {
		l.TPD = o.TPD
	}
	if o.Concurrent != 0 {
		l.Concurrent = o.Concurrent
	}
	l.Budget = l.Budget.override(o.Budget)
	return l
}

// IsZero reports limits that limit nothing.
func (l Limits) IsZero() bool { return l == Limits{} }

func (l Limits) validate(path string, add func(path, format string, args ...any)) {
	for _, f := range []struct {
		name string
		r    Rate
	}{{"rpm", l.RPM}, {"tpm", l.TPM}, {"tpd", l.TPD}} {
		switch {
		case f.r.Limit < 0:
			add(path+f.name, "must not be negative")
		case f.r.Burst < 0:
			add(path+f.name, "burst must not be negative")
		case f.r.Burst > 0 && f.r.Limit == 0:
			add(path+f.name, "a burst needs a limit")
		}
	}
	if l.Concurrent < 0 {
		add(path+"concurrent", "must not be negative")
	}
	l.Budget.validate(path, add)
}

// ModelLimits are extra budgets for the models matching Pattern, inside a
// tier: a user's requests to those models draw from both the tier's
// buckets and these.
type ModelLimits struct {
	// Pattern is an exact model name or a prefix ending in "*".
	Pattern string
	// Limits are the extra budgets.
	Limits Limits
}

// Match reports whether model falls under the pattern.
func (m *ModelLimits) Match(model string) bool {
	if p, ok := strings.CutSuffix(m.Pattern, "*"); ok {
		return strings.HasPrefix(model, p)
	}
	return model == m.Pattern
}

// sortModelLimits orders patterns so the most specific match comes first:
// exact names, then prefixes by length (longest first), then by text.
func sortModelLimits(m []ModelLimits) {
	rank := func(x ModelLimits) (bool, int) {
		p, wild := strings.CutSuffix(x.Pattern, "*")
		return wild, -len(p)
	}
	slices.SortFunc(m, func(a, b ModelLimits) int {
		aw, al := rank(a)
		bw, bl := rank(b)
		if aw != bw {
			if aw {
				return 1
			}
			return -1
		}
		if al != bl {
			return cmp.Compare(al, bl)
		}
		return strings.Compare(a.Pattern, b.Pattern)
	})
}

// Plan is what a request's admission draws from: the user's budgets (tier,
// then key and user overrides), the budgets of the first per-model pattern
// matching the model, and the app key's shared budget.
type Plan struct {
	// Tier is the principal's tier.
	Tier *Tier
	// User are the effective per-user limits.
	User Limits
	// UserScope prefixes the user's bucket keys: "{G}u:NAME" for a key's
	// own user, "{G}k:KEY:u:NAME" for an end user of a trusted app key, G
	// being the key's group's hash tag (tagScopes).
	UserScope string
	// Model is the matching per-model budget, nil when none matches.
	Model *ModelLimits
	// App is the app key's shared budget over all its users.
	App Limits
	// AppScope prefixes the app budget's bucket keys: "{G}k:KEY".
	AppScope string
	// Team is the key's team's shared budget (teams:), and TeamScope its
	// bucket keys' prefix: "{G}t:TEAM".
	Team      Limits
	TeamScope string
	// Spend reports that the policy prices models, so the request's cost
	// is counted for its user, key and team (budget.go); Zone is the
	// budgets' time zone.
	Spend bool
	Zone  *time.Location
	// Shadow are the effective shadow limits (tier, then key and user
	// overrides): evaluated and counted, never enforced (shadow.go).
	Shadow Limits
}

// Plan resolves the budgets a request by pr with key k for model draws from.
func (p *Policy) Plan(pr Principal, k *Key, model string) Plan {
	t := p.Tiers[pr.Tier]
	app, team := k.appScope, k.teamScope
	if app == "" { // a Key not made by compile
		app, team = k.scopes()
	}
	pl := Plan{Tier: t, App: k.AppLimits, AppScope: app, Team: p.teams[k.Team], Spend: p.Prices.Any(), Zone: p.Zone}
	if pl.Spend || !pl.Team.IsZero() {
		pl.TeamScope = team
	}
	if t != nil {
		pl.User = t.Limits
		pl.Shadow = t.Shadow
		for i := range t.Models {
			if t.Models[i].Match(model) {
				pl.Model = &t.Models[i]
				break
			}
		}
	}
	pl.User = pl.User.override(k.Limits)
	pl.Shadow = pl.Shadow.override(k.Shadow)
	if u, ok := p.userSpec(k, pr); ok {
		pl.User = pl.User.override(u.Limits)
		pl.Shadow = pl.Shadow.override(u.Shadow)
	}
	switch {
	case pr.EndUser:
		pl.UserScope = app + ":u:" + EscapeKeyPart(pr.User)
	case pr.User == k.User && k.userScope != "":
		pl.UserScope = k.userScope
	default: // a Key not made by compile: its team is its group
		pl.UserScope = "{" + EscapeKeyPart(k.Team) + "}u:" + EscapeKeyPart(pr.User)
	}
	return pl
}

// scopes returns the bucket key prefixes of the key's shared budget and of
// its team's, for a Key not made by compile: "{TEAM}k:ID", "{TEAM}t:TEAM".
// (An end user's scope is "{TEAM}k:ID:u:NAME".)
func (k *Key) scopes() (app, team string) {
	tag := "{" + EscapeKeyPart(k.Team) + "}"
	return tag + "k:" + EscapeKeyPart(k.ID), tag + "t:" + EscapeKeyPart(k.Team)
}

// tagScopes sets every compiled key's scopes, each starting with the Redis
// Cluster hash tag of the key's group, so that all the keys one request's
// script touches (its user's, model's, app key's, team's buckets, leases
// and spend counters) hash to one slot, as Redis Cluster requires of a
// script. A group is a set of users and teams joined by keys (a key joins
// its user and its team): usually one team and its users. The tag is the
// group's first team name in byte order, "{research}"; a user whose keys
// are in two teams joins both teams into one group. Single and Sentinel
// mode ignore the tag.
//
// The cost: a group's buckets live on one shard, so a team's whole
// traffic is one shard's. A policy change that joins two groups renames
// one group's keys, which then start full (like a restart of Redis).
func tagScopes(keys map[[32]byte]*Key) {
	parent := make(map[string]string, 2*len(keys))
	var find func(string) string
	find = func(x string) string {
		p, ok := parent[x]
		if !ok || p == x {
			parent[x] = x
			return x
		}
		r := find(p)
		parent[x] = r
		return r
	}
	for _, k := range keys {
		a, b := find("u\x00"+k.User), find("t\x00"+k.Team)
		if a != b {
			parent[a] = b
		}
	}
	first := make(map[string]string)
	for _, k := range keys {
		r := find("t\x00" + k.Team)
		if t, ok := first[r]; !ok || k.Team < t {
			first[r] = k.Team
		}
	}
	tags := make(map[string]string, len(first))
	for _, k := range keys {
		r := find("t\x00" + k.Team)
		tag, ok := tags[r]
		if !ok {
			tag = "{" + EscapeKeyPart(first[r]) + "}"
			tags[r] = tag
		}
		k.appScope = tag + "k:" + EscapeKeyPart(k.ID)
		k.teamScope = tag + "t:" + EscapeKeyPart(k.Team)
		k.userScope = tag + "u:" + EscapeKeyPart(k.User)
	}
}

// EscapeKeyPart escapes a name for a bucket key, where ':' separates the
// parts ("k:APP:u:USER:m:MODEL:rpm"): '%', ':', '{' and '}' become %25,
// %3A, %7B and %7D (braces would make a Redis Cluster hash tag). So an end
// user named "frank:m:gpt-4o*" cannot share a bucket with frank's per-model
// budget, whatever store holds it. A name without those bytes is returned
// as it is, without allocating.
func EscapeKeyPart(s string) string {
	i := strings.IndexAny(s, "%:{}")
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			b.WriteString("%25")
		case ':':
			b.WriteString("%3A")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Limited reports whether the plan limits anything (shadow limits
// included: they are evaluated at admission too).
func (p *Plan) Limited() bool {
	return !p.User.IsZero() || !p.App.IsZero() || (p.Model != nil && !p.Model.Limits.IsZero()) ||
		!p.Shadow.IsZero() || !p.Team.IsZero() || p.Spend
}

// CountsTokens reports whether any of the plan's budgets is in tokens, so
// the request's tokens must be estimated.
func (p *Plan) CountsTokens() bool {
	tok := func(l Limits) bool { return l.TPM.Limit > 0 || l.TPD.Limit > 0 }
	return tok(p.User) || tok(p.App) || (p.Model != nil && tok(p.Model.Limits)) || tok(p.Shadow) || tok(p.Team) ||
		(p.Spend && p.HasBudget())
}
