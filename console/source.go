package console

import (
	"context"
	"errors"
	"time"
)

// Source is where the console's pages take their data from. The proxy
// implements it; tests use a fake. Methods are called once per page view
// and must be safe for concurrent use.
type Source interface {
	// Overview is the process's state in numbers, from its own metrics.
	Overview() Overview
	// User is the state of a user's buckets and spend, read without
	// spending. keyID alone names the key's own user; user alone the
	// user's first own key; both a trusted key's end user. ErrNotFound
	// when no key serves them.
	User(ctx context.Context, keyID, user string) (UserView, error)
	// Policy is the policy in force, with at most max of the keys that
	// match filter (a substring of the key's id or user, or its tier's
	// name; "" matches every key).
	Policy(filter string, max int) PolicyView
	// Team is a team's members, shared limits, buckets and spend, read
	// without spending. ErrNotFound when no key is in the team.
	Team(ctx context.Context, name string) (TeamView, error)
	// Providers are the upstreams' queue and breaker states.
	Providers() []ProviderView
	// Requests are a user's recent requests from the transcripts, newest
	// first, at most limit, without their content; keyID and user as for
	// User. ErrNotFound when no key serves them; ErrNoTranscripts when
	// transcripts are not recorded or not readable.
	Requests(ctx context.Context, keyID, user string, limit int) (RequestsView, error)
}

// ErrNoTranscripts is returned by Source.Requests when transcripts are off
// or their store did not answer.
var ErrNoTranscripts = errors.New("console: transcripts unavailable")

// RequestsView is the recent requests page's data.
type RequestsView struct {
	// User and KeyID are who was asked about; EndUser an app key's end user.
	User, KeyID string
	EndUser     bool
	// Since is the start of the window searched.
	Since time.Time
	// Requests are the newest first.
	Requests []RequestView
}

// RequestView is one request's transcript, metadata only.
type RequestView struct {
	// Start is when it arrived; ID Sluice's request id; KeyID the key.
	Start time.Time
	ID    string
	KeyID string
	// Endpoint and Model are what was called (the model after aliases).
	Endpoint, Model string
	// Stream reports a streamed answer.
	Stream bool
	// Status is the HTTP status answered; ErrorType the error's type.
	Status    int
	ErrorType string
	// PromptTokens and CompletionTokens are from the answer's usage.
	PromptTokens, CompletionTokens int64
	// Latency is arrival to the last byte; QueueWait the time spent waiting.
	Latency, QueueWait time.Duration
	// CacheStatus is "hit", "miss", "coalesced", "bypass" or "".
	CacheStatus string
}

// ErrNotFound is returned by Source.User when no key serves the key and
// user asked about.
var ErrNotFound = errors.New("console: no such key or user")

// ErrUnavailable is returned by Source.User when the bucket store did not
// answer (or limits are off); the page says so instead of showing numbers.
var ErrUnavailable = errors.New("console: bucket store unavailable")

// Count is one labelled number of a table.
type Count struct {
	// Label names the row ("429", "rpm (user)").
	Label string
	// Value is the number.
	Value float64
}

// Overview is the front page's data.
type Overview struct {
	// Version is the running build.
	Version string
	// Requests is every request answered since start.
	Requests float64
	// Statuses are the answers by HTTP status (non-zero ones), sorted by
	// status.
	Statuses []Count
	// Rejections are the limiter's refusals by deciding limit and scope
	// ("rpm (user)"), largest first.
	Rejections []Count
	// CacheHits, CacheMisses and CacheCoalesced count the cache's answers,
	// calls and joined in-flight calls.
	CacheHits, CacheMisses, CacheCoalesced float64
	// QueueUser and QueueProvider are requests waiting now for a user's
	// budget and for an upstream's capacity.
	QueueUser, QueueProvider float64
	// InFlight is requests being served now.
	InFlight float64
	// SpendUSD is what the answers cost since start at the policy's prices.
	SpendUSD float64
	// SinkKnown reports that a transcript sink is running; SinkUp its
	// destination's health; SinkEnqueued, SinkWritten and SinkSpooled its
	// records handed over, rows written and rows spooled to disk.
	SinkKnown, SinkUp                      bool
	SinkEnqueued, SinkWritten, SinkSpooled float64
	// Reload is the state of the policy in force.
	Reload ReloadView
	// Providers are the upstreams.
	Providers []ProviderView
}

// CacheHitRatio is hits over hits plus misses, 0 without either.
func (o Overview) CacheHitRatio() float64 {
	if o.CacheHits+o.CacheMisses == 0 {
		return 0
	}
	return o.CacheHits / (o.CacheHits + o.CacheMisses)
}

// ReloadView is the policy's load state.
type ReloadView struct {
	// Known reports that a policies file is in use (false: the embedded
	// example, never reloaded).
	Known bool
	// SHA256 is the hex hash of the policy file's bytes in force.
	SHA256 string
	// LastSuccess is when a policy was last loaded or found unchanged.
	LastSuccess time.Time
	// LastError is the last reload's error, "" when it succeeded.
	LastError string
}

// Bucket is one rate bucket of a user, read without spending.
type Bucket struct {
	// Limit is "rpm", "tpm" or "tpd"; Scope "user", "model", "app" or
	// "team".
	Limit, Scope string
	// Configured is the limit per period; Burst the bucket's size.
	Configured, Burst int64
	// Remaining is what may be taken now; Used is Burst minus Remaining.
	Remaining, Used int64
	// Reset is the time until the bucket is full again.
	Reset time.Duration
}

// Spend is one spend budget of a user.
type Spend struct {
	// Window is "today" or "this month"; Scope whose budget it is.
	Window, Scope string
	// SpentUSD is what was spent in the window; BudgetUSD the cap (0:
	// only counted).
	SpentUSD, BudgetUSD float64
	// Reset is the time until the window starts over.
	Reset time.Duration
}

// UserView is a user's page.
type UserView struct {
	// User is the user's name, KeyID the key asked about, Team and Tier
	// the principal's.
	User, KeyID, Team, Tier string
	// EndUser reports a user named by a trusted app key.
	EndUser bool
	// Keys are the ids of the user's own keys.
	Keys []string
	// Limits describe the effective limits, one line each ("user: rpm 60").
	Limits []string
	// Buckets are the rate buckets; Spend the spend budgets.
	Buckets []Bucket
	Spend   []Spend
}

// TeamView is a team's page.
type TeamView struct {
	// Name is the team's name.
	Name string
	// Limits describes the team's shared limits (the policy's teams:
	// entry) in one line; "" without an entry.
	Limits string
	// Members are the team's keys, sorted by id.
	Members []KeyView
	// Buckets and Spend are the team's shared buckets and spend (scope
	// team); empty when the store did not answer.
	Buckets []Bucket
	Spend   []Spend
}

// TeamLine is one entry of the policy's teams: section.
type TeamLine struct {
	// Name is the team's; Limits its shared limits in one line.
	Name, Limits string
	// Keys is how many keys are in the team.
	Keys int
}

// OverrideLine is one users: entry: a user's own tier or limits.
type OverrideLine struct {
	// User is the user's name; Tier the tier it moves them to ("" keeps
	// the key's); Limits and Shadow the limits it sets, in words.
	User, Tier, Limits, Shadow string
}

// TierView is one tier of the policy.
type TierView struct {
	// Name is the tier's name.
	Name string
	// Limits, Models, Shadow and Queue describe the tier's per-user limits,
	// per-model limits, shadow limits and waiting rules in words.
	Limits string
	Models []string
	Shadow string
	Queue  string
	// ShadowWouldReject counts requests the shadow limits would have
	// refused since start.
	ShadowWouldReject float64
}

// KeyView is one key of the policy, by id (never its secret).
type KeyView struct {
	// ID, User, Team and Tier are the key's.
	ID, User, Team, Tier string
	// Trusted reports an app key that names its end users.
	Trusted bool
}

// PolicyView is the policy page's data.
type PolicyView struct {
	// Reload is the policy's load state.
	Reload ReloadView
	// Tiers are the tiers by name.
	Tiers []TierView
	// Teams are the teams with shared limits (teams:), by name.
	Teams []TeamLine
	// Overrides are the users: entries matching the filter, by user, at
	// most the max asked for; OverridesMatched how many matched.
	Overrides        []OverrideLine
	OverridesMatched int
	// Keys are the keys matching the filter, sorted by id, at most the
	// max asked for; KeysMatched is how many matched, KeysTotal how many
	// the policy has.
	Keys                   []KeyView
	KeysMatched, KeysTotal int
	// OnStoreError and Zone are the policy's store-error mode and budget
	// time zone.
	OnStoreError, Zone string
	// History are the last loads of the policy file, newest first: the
	// load at start, each swap with its effective changes, and reloads
	// that failed or were refused. Empty with the embedded example policy.
	History []ReloadEntry
}

// ReloadEntry is one load of the policy file.
type ReloadEntry struct {
	// At is when it happened; Trigger what started it ("start", "watch",
	// "sighup", "admin").
	At      time.Time
	Trigger string
	// Result is "loaded", "success", "forced", "failure" or "refused".
	Result string
	// SHA256 is the hex hash of the policy applied; "" when none was.
	SHA256 string
	// Error is why nothing was applied.
	Error string
	// Changes are the effective changes ("+", "-", "~" lines; for a
	// refusal, the limits it would have lifted); MoreChanges the lines
	// left out.
	Changes     []string
	MoreChanges int
}

// Applied reports an entry that put a policy in force.
func (e ReloadEntry) Applied() bool { return e.SHA256 != "" }

// ProviderView is one upstream.
type ProviderView struct {
	// Name is upstreams[].name.
	Name string
	// Waiting is requests of this replica waiting for its capacity.
	Waiting int
	// Factor is the AIMD drain factor (1 = full budget).
	Factor float64
	// Limited reports that the upstream has a budget of its own; Budget
	// describes it ("rpm 500, concurrent 20"; "" without one).
	Limited bool
	Budget  string
	// Keys is the size of the upstream's key pool (0: one key, no pool);
	// Pool its keys.
	Keys int
	Pool []PoolKey
	// Breaker is "closed", "half-open" or "open".
	Breaker string
	// InFlight is granted calls not yet finished; Throttled the 429/503
	// answers since start.
	InFlight, Throttled float64
}

// PoolKey is one key of an upstream's key pool, by id (never the secret).
type PoolKey struct {
	// ID and Weight are upstreams[].keys[]'s; Budget describes its own
	// budget ("" without one).
	ID     string
	Weight int64
	Budget string
	// Resting is how long the key still rests after a 429 or 503 (0: it
	// takes calls).
	Resting time.Duration
	// Answers and Throttled count the answers to calls made with the key
	// since start, all and 429/503.
	Answers, Throttled float64
}

// ThrottledRatio is Throttled over Answers, 0 without answers.
func (k PoolKey) ThrottledRatio() float64 {
	if k.Answers == 0 {
		return 0
	}
	return k.Throttled / k.Answers
}
