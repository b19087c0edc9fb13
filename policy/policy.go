package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"sluice/internal/yamlfile"
)

// File is the model of policies.yaml.
type File struct {
	// Tiers are the service levels keys and users belong to, by name.
	Tiers map[string]TierSpec `yaml:"tiers"`
	// Keys are the virtual API keys clients present to Sluice.
	Keys []KeySpec `yaml:"keys"`
	// Users override the tier or limits of a user, by user name: the user
	// of a personal (not trusted) key, whichever such key the user calls
	// with. They never apply to the end users a trusted app key names (an
	// app may forward names its own users choose); give those overrides in
	// the key's end_users.
	Users map[string]UserSpec `yaml:"users"`
	// OnStoreError says what happens when the shared bucket store (Redis)
	// does not answer: "allow" admits, "deny" answers 503, "local" falls back
	// to in-memory buckets with every limit divided by Replicas. Default
	// "local". Unused with the in-memory store.
	OnStoreError string `yaml:"on_store_error"`
	// Replicas is the number of Sluice replicas sharing the store, used to
	// divide limits in "local" mode. Default 1.
	Replicas int64 `yaml:"replicas"`
	// Prices are the models' prices in USD per 1M tokens, by model pattern
	// (exact name, prefix*, or *), matched after aliases (price.go).
	Prices map[string]PriceSpec `yaml:"prices"`
	// Unpriced is what a model without a price costs: "free" (counted at
	// $0, the default) or "refuse" (its requests answer 403).
	Unpriced string `yaml:"unpriced"`
	// Teams are the limits and budgets of teams, by team name, shared by
	// every user of the team's keys. Default none.
	Teams map[string]TeamSpec `yaml:"teams"`
	// BudgetTimezone is the IANA time zone whose calendar days and months
	// the spend budgets count in ("Europe/Paris"). Default UTC.
	BudgetTimezone string `yaml:"budget_timezone"`
}

// TierSpec describes one tier.
type TierSpec struct {
	// Description is free text for humans.
	Description string `yaml:"description"`
	// Limits are each user's budgets in this tier (rpm, tpm, tpd,
	// concurrent). Zero fields are unlimited.
	Limits `yaml:",inline"`
	// DefaultMaxTokens is the completion reservation for a request that
	// sets no max_tokens / max_completion_tokens / max_output_tokens; the
	// reservation is settled from the answer's usage. Default 4096.
	DefaultMaxTokens int64 `yaml:"default_max_tokens"`
	// Models are extra per-user budgets for some models, by pattern (exact
	// name or prefix*): "gpt-4o*": {rpm: 10}.
	Models map[string]Limits `yaml:"models"`
	// Queue is how this tier's requests wait instead of being rejected.
	Queue `yaml:",inline"`
	// Cache is "off", "deterministic" (the default: temperature 0 or a
	// seed, and embeddings) or "all" (see policy/cache.go).
	Cache string `yaml:"cache"`
	// CacheTTL is how long this tier's answers are kept. Default: sluice.yaml's
	// cache.ttl.
	CacheTTL time.Duration `yaml:"cache_ttl"`
	// CacheHitsCountTokens makes cache hits count against token budgets too.
	// Default false: hits count against request budgets only.
	CacheHitsCountTokens bool `yaml:"cache_hits_count_tokens"`
	// Shadow are candidate limits (rpm, tpm, tpd) evaluated beside the real
	// ones in buckets of their own and only counted, never enforced (see
	// shadow.go). Default none.
	Shadow Limits `yaml:"shadow"`
}

// Queue is a tier's waiting rules.
type Queue struct {
	// MaxWait is how long a request over its user's budget, or waiting for
	// the provider's capacity, may wait before it is rejected with 429 (a
	// request whose expected wait is longer is rejected at once, with the
	// exact Retry-After). A client may shorten it with X-Sluice-Max-Wait.
	// Default 0: no waiting, over budget is an immediate 429.
	MaxWait time.Duration `yaml:"max_wait"`
	// MaxQueue is how many requests one user may have waiting at once (per
	// replica); more are rejected with 429. Default 16.
	MaxQueue int `yaml:"max_queue"`
	// Weight is the tier's share of a busy provider per user: a user of
	// weight 3 is served three requests for each one of a weight 1 user.
	// Default 1.
	Weight int64 `yaml:"weight"`
	// Priority serves waiting requests of a higher priority tier before any
	// of a lower one. Default 0.
	Priority int `yaml:"priority"`
}

// UserSpec overrides one user's tier and limits.
type UserSpec struct {
	// Tier replaces the tier the user's key gives.
	Tier string `yaml:"tier"`
	// Limits replace the tier's where set.
	Limits `yaml:",inline"`
	// Shadow replaces the tier's shadow limits where set (see TierSpec).
	Shadow Limits `yaml:"shadow"`
}

// KeySpec is one virtual key. Exactly one of SHA256 and KeyEnv is set: the
// key's plaintext never appears in the file.
type KeySpec struct {
	// ID names the key in logs, metrics and transcripts. Required, unique.
	ID string `yaml:"id"`
	// SHA256 is the hex SHA-256 of the key's plaintext (see `sluice hash-key`).
	SHA256 string `yaml:"sha256"`
	// KeyEnv names an environment variable holding the plaintext key. When the
	// variable is unset or empty the key is skipped (it accepts nothing).
	KeyEnv string `yaml:"key_env"`
	// User is the user this key belongs to. Required unless Trusted; a
	// trusted key without a user stands for the user named like its ID.
	User string `yaml:"user"`
	// Team groups users for shared namespaces and reporting. Default: User.
	Team string `yaml:"team"`
	// Tier names an entry of tiers. Required.
	Tier string `yaml:"tier"`
	// Trusted marks an app key that may name its end user per request, with
	// the X-Sluice-User header or the body's "user" field. Default false.
	Trusted bool `yaml:"trusted"`
	// UserTier is the tier of the end users a trusted key names. Default:
	// Tier.
	UserTier string `yaml:"user_tier"`
	// Limits replace the tier's for requests made with this key, per user.
	Limits Limits `yaml:"limits"`
	// AppLimits is one budget shared by all of this key's users together.
	AppLimits Limits `yaml:"app_limits"`
	// Shadow replaces the tier's shadow limits, per user, for requests made
	// with this key (see TierSpec).
	Shadow Limits `yaml:"shadow"`
	// CacheNamespaces are the shared cache namespaces this key may name with
	// X-Sluice-Cache-Namespace, besides its team's own. Default none.
	CacheNamespaces []string `yaml:"cache_namespaces"`
	// EndUsers override the tier or limits of end users this trusted key
	// names, by end-user name; they apply to this key's end users only.
	// Default none.
	EndUsers map[string]UserSpec `yaml:"end_users"`
	// SharedCache lets the end users of this trusted key share cache
	// entries and in-flight calls (an FAQ bot's users asking the same
	// thing). Default false: each end user's are its own, so no end user
	// learns from a hit what another asked.
	SharedCache bool `yaml:"shared_cache"`
	// Project is the provider project (sent as OpenAI-Project) this key's
	// calls run in, instead of the upstream's: the files, batches, stored
	// responses, vector stores and fine-tuned models the key makes belong
	// to that project, out of other projects' sight. Default "": the
	// upstream's project, shared with every key without one.
	Project string `yaml:"project"`
	// StoredObjects lets a key without a project of its own use the
	// endpoints of objects stored at the provider (files, uploads, batches,
	// stored responses and chat completions by id, vector stores,
	// fine-tuning, assistants, threads, containers, conversations, evals,
	// deleting a model) in owned mode: Sluice records the objects made
	// through it with the key's team (the key alone without a team) and
	// answers another team's access 404 and lists with the team's own
	// (docs/security.md). Default false: those endpoints answer 403; a key
	// with its own project may always use them.
	StoredObjects bool `yaml:"stored_objects"`
	// ShowCost adds X-Sluice-Cost-Usd, the answer's cost at the policy's
	// prices, to this key's buffered answers. Default false: clients do not
	// see prices.
	ShowCost bool `yaml:"show_cost"`
	// Endpoints, when set, are the only /v1 paths the key may call: exact
	// paths ("/v1/chat/completions") or prefixes ending in "*"
	// ("/v1/audio/*"). Others answer 403. Default: every path.
	Endpoints []string `yaml:"endpoints"`
	// Models, when set, are the only models the key may use (after
	// aliases): exact names, prefixes ending in "*" ("gpt-4o*"), or "*".
	// Others answer 404 model_not_found, as the provider does for a model
	// the account cannot use. Default: every model.
	Models []string `yaml:"models"`
}

// Policy is a compiled, immutable policies.yaml. It is safe for concurrent
// use; a reload builds a new one and swaps it in whole.
type Policy struct {
	keys  map[[sha256.Size]byte]*Key
	users map[string]UserSpec
	// Tiers are the compiled tiers by name.
	Tiers map[string]*Tier
	// Skipped lists the IDs of keys whose key_env variable was unset.
	Skipped []string
	// UnmatchedUsers lists the names of users entries that no personal
	// key's user has: since they never apply to a trusted key's end users,
	// they apply to nobody (logged at load and reload).
	UnmatchedUsers []string
	// PlaintextKeys lists the IDs of keys whose key_env does not look like
	// an environment variable's name but like a key: the file holds a
	// plaintext key (see CheckFile). They are skipped too, unless a
	// variable of that name is set.
	PlaintextKeys []string
	// OnStoreError is "allow", "deny" or "local" (see File).
	OnStoreError string
	// Replicas divides limits in "local" store-error mode.
	Replicas int64
	// Prices is the price table (price.go).
	Prices Prices
	// teams are the teams' limits by team name.
	teams map[string]Limits
	// Zone is budget_timezone's location (UTC by default).
	Zone *time.Location
	// gen orders compiled policies (tiermetrics.go); 0 for a literal.
	gen uint64
}

// Tier is a compiled tier.
type Tier struct {
	// Name is the tier's name.
	Name string
	// Limits are each user's budgets.
	Limits Limits
	// DefaultMaxTokens is the completion reservation when a request sets
	// none.
	DefaultMaxTokens int64
	// Models are the per-model budgets, exact names first, then longer
	// prefixes first.
	Models []ModelLimits
	// Queue holds the waiting rules, defaults applied.
	Queue Queue
	// Cache is the tier's response cache rule.
	Cache CacheRule
	// Shadow are the tier's counted-only candidate limits.
	Shadow Limits
}

// DefaultMaxQueue is a tier's per-user queue depth when it sets none.
const DefaultMaxQueue = 16

// Store-error modes.
const (
	StoreErrorAllow = "allow"
	StoreErrorDeny  = "deny"
	StoreErrorLocal = "local"
)

// DefaultMaxTokens is a tier's completion reservation when it sets none.
const DefaultMaxTokens = 4096

// Key is a compiled virtual key.
type Key struct {
	// ID is the key's id from the file.
	ID string
	// User is the key's own user.
	User string
	// Team is the key's team.
	Team string
	// Tier is the key's tier.
	Tier string
	// Trusted reports whether the key may name its end user.
	Trusted bool
	// UserTier is the tier of the end users a trusted key names.
	UserTier string
	// Limits replace the tier's for this key's requests, per user.
	Limits Limits
	// AppLimits is one budget for all of this key's users together.
	AppLimits Limits
	// Shadow replaces the tier's shadow limits for this key's requests.
	Shadow Limits
	// CacheNamespaces are the shared cache namespaces the key may use.
	CacheNamespaces []string
	// EndUsers are the overrides of this trusted key's end users, by name.
	EndUsers map[string]UserSpec
	// SharedCache reports that the key's end users share the cache.
	SharedCache bool
	// Endpoints and Models are the key's allow-lists (empty: all); see
	// KeySpec.
	Endpoints, Models []string
	// Project is the provider project the key's calls run in ("": the
	// upstream's).
	Project string
	// StoredObjects reports that the key may use the stored-object
	// endpoints: it has a project of its own, or stored_objects is set.
	StoredObjects bool
	// ShowCost adds the answer's cost to its headers (see KeySpec).
	ShowCost bool
	// appScope, teamScope and userScope are the bucket key prefixes of the
	// key's shared budget, its team's and its own user's ("{G}k:ID",
	// "{G}t:TEAM", "{G}u:USER", with the Redis Cluster hash tag of the
	// key's group: tagScopes), built once at compile time so a plan for the
	// key's own user builds no string (scopes in limits.go).
	appScope, teamScope, userScope string
}

// Principal is who a request acts for.
type Principal struct {
	// KeyID is the virtual key's id.
	KeyID string
	// User is the end user: the key's user, or for a trusted key the user it
	// named.
	User string
	// Team is the key's team.
	Team string
	// Tier is the tier whose limits apply.
	Tier string
	// EndUser reports a user named by a trusted app key rather than the
	// key's own user; such users' buckets are scoped to the key.
	EndUser bool
}

// MaxUserLen is the longest end-user name a trusted key may assert, in bytes.
const MaxUserLen = 256

// Principal returns who a request with key k acts for. endUser is what a
// trusted key asserted ("" for none); it is ignored for other keys. The tier
// of an end user a trusted key named is the key's end_users entry's, else
// the key's user_tier, else the key's; of anyone else the users section's
// entry's, else the key's. A users entry never reaches an end user: an app
// may pass on names its users choose.
func (p *Policy) Principal(k *Key, endUser string) Principal {
	pr := Principal{KeyID: k.ID, User: k.User, Team: k.Team, Tier: k.Tier}
	if k.Trusted && endUser != "" {
		pr.User = endUser
		pr.EndUser = true
		if k.UserTier != "" {
			pr.Tier = k.UserTier
		}
	}
	if u, ok := p.userSpec(k, pr); ok && u.Tier != "" {
		pr.Tier = u.Tier
	}
	return pr
}

// userSpec is the override for pr, a principal of key k: the key's
// end_users entry for an end user, the users section's for anyone else.
func (p *Policy) userSpec(k *Key, pr Principal) (UserSpec, bool) {
	if pr.EndUser {
		u, ok := k.EndUsers[pr.User]
		return u, ok
	}
	u, ok := p.users[pr.User]
	return u, ok
}

// Identify finds the key whose plaintext is secret. The secret is hashed and
// looked up by hash, so no plaintext is ever compared.
func (p *Policy) Identify(secret []byte) (*Key, bool) {
	if len(secret) == 0 {
		return nil, false
	}
	k, ok := p.keys[sha256.Sum256(secret)]
	return k, ok
}

// HashKey returns the hex SHA-256 of a key's plaintext, the form policies.yaml
// stores.
func HashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// LoadFile reads and compiles a policies.yaml file.
func LoadFile(path string) (*Policy, error) {
	p, _, err := Load(path, nil)
	return p, err
}

// Parse decodes, validates and compiles a policies.yaml document. name is
// used in error messages; lookupEnv resolves key_env and ${VAR} references
// (nil: the process environment). Errors carry file, line and YAML path.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Policy, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	var f File
	doc, err := yamlfile.Decode(name, data, &f, yamlfile.Options{LookupEnv: lookupEnv})
	if err != nil {
		return nil, err
	}
	return compile(&f, doc, lookupEnv)
}

func compile(f *File, doc *yamlfile.Doc, lookupEnv func(string) (string, bool)) (*Policy, error) {
	var errs yamlfile.Errors
	add := func(path, format string, args ...any) { errs.Add(doc.Errorf(path, format, args...)) }
	if len(f.Tiers) == 0 && len(f.Keys) == 0 {
		// An empty file is a mistake or a write caught half way; applied,
		// it would refuse every request.
		add("", "no tiers and no keys: a policy must define at least one")
	}

	p := &Policy{
		keys:         make(map[[sha256.Size]byte]*Key, len(f.Keys)),
		users:        f.Users,
		Tiers:        make(map[string]*Tier, len(f.Tiers)),
		OnStoreError: f.OnStoreError,
		Replicas:     f.Replicas,
		gen:          policyGen.Add(1),
	}
	switch p.OnStoreError {
	case "":
		p.OnStoreError = StoreErrorLocal
	case StoreErrorAllow, StoreErrorDeny, StoreErrorLocal:
	default:
		add("on_store_error", "must be allow, deny or local, not %s", yamlfile.ShowValue(p.OnStoreError))
	}
	p.Prices = compilePrices(f.Prices, f.Unpriced, add)
	p.Zone = time.UTC
	if f.BudgetTimezone != "" {
		z, err := time.LoadLocation(f.BudgetTimezone)
		if err != nil {
			add("budget_timezone", "unknown time zone %s (an IANA name such as Europe/Paris)", yamlfile.ShowValue(f.BudgetTimezone))
		} else {
			p.Zone = z
		}
	}
	if !p.Prices.Any() && hasBudget(f) {
		add("prices", "the policy sets spend budgets but prices no model: a budget needs prices to count against")
	}
	p.teams = make(map[string]Limits, len(f.Teams))
	for name, ts := range f.Teams {
		ts.Limits.validate("teams."+name+".", add)
		p.teams[name] = ts.Limits
	}
	if p.Replicas == 0 {
		p.Replicas = 1
	} else if p.Replicas < 0 {
		add("replicas", "must be at least 1")
	}
	for name, ts := range f.Tiers {
		path := "tiers." + name + "."
		ts.Limits.validate(path, add)
		t := &Tier{Name: name, Limits: ts.Limits, DefaultMaxTokens: ts.DefaultMaxTokens, Queue: ts.Queue}
		if t.Queue.MaxQueue == 0 {
			t.Queue.MaxQueue = DefaultMaxQueue
		}
		if t.Queue.Weight == 0 {
			t.Queue.Weight = 1
		}
		if t.Queue.MaxWait < 0 || t.Queue.MaxQueue < 0 || t.Queue.Weight < 0 {
			add(path+"max_wait", "max_wait, max_queue and weight must not be negative")
		}
		if t.DefaultMaxTokens == 0 {
			t.DefaultMaxTokens = DefaultMaxTokens
		} else if t.DefaultMaxTokens < 0 {
			add(path+"default_max_tokens", "must not be negative")
		}
		for pattern, ml := range ts.Models {
			mp := path + "models." + pattern + "."
			if pattern == "" || strings.Contains(strings.TrimSuffix(pattern, "*"), "*") {
				add(path+"models", "bad model pattern %q: an exact name or a prefix ending in *", pattern)
			}
			ml.validate(mp, add)
			t.Models = append(t.Models, ModelLimits{Pattern: pattern, Limits: ml})
		}
		sortModelLimits(t.Models)
		t.Cache = compileCache(path, &ts, add)
		t.Shadow = compileShadow(path, ts.Shadow, add)
		p.Tiers[name] = t
	}
	for name, u := range f.Users {
		path := "users." + name + "."
		if u.Tier != "" {
			if _, ok := p.Tiers[u.Tier]; !ok {
				add(path+"tier", "unknown tier %s", yamlfile.ShowValue(u.Tier))
			}
		}
		u.Limits.validate(path, add)
		compileShadow(path, u.Shadow, add)
	}
	ids := make(map[string]bool, len(f.Keys))
	for i, ks := range f.Keys {
		path := fmt.Sprintf("keys[%d]", i)
		switch {
		case ks.ID == "":
			add(path+".id", "is required")
		case ids[ks.ID]:
			add(path+".id", "duplicate key id %q", ks.ID)
		}
		ids[ks.ID] = true
		if ks.User == "" && !ks.Trusted {
			add(path+".user", "is required (only a trusted key may leave it out)")
		}
		if len(ks.User) > MaxUserLen {
			add(path+".user", "longer than %d bytes", MaxUserLen)
		}
		if ks.Tier == "" {
			add(path+".tier", "is required")
		} else if _, ok := p.Tiers[ks.Tier]; !ok {
			add(path+".tier", "unknown tier %s", yamlfile.ShowValue(ks.Tier))
		}
		if ks.UserTier != "" {
			if !ks.Trusted {
				add(path+".user_tier", "only a trusted key names end users")
			} else if _, ok := p.Tiers[ks.UserTier]; !ok {
				add(path+".user_tier", "unknown tier %s", yamlfile.ShowValue(ks.UserTier))
			}
		}
		if len(ks.EndUsers) > 0 && !ks.Trusted {
			add(path+".end_users", "only a trusted key names end users (use the top-level users section for a key's own user)")
		}
		for name, u := range ks.EndUsers {
			up := path + ".end_users." + name + "."
			if u.Tier != "" {
				if _, ok := p.Tiers[u.Tier]; !ok {
					add(up+"tier", "unknown tier %s", yamlfile.ShowValue(u.Tier))
				}
			}
			if len(name) > MaxUserLen {
				add(path+".end_users", "end-user name longer than %d bytes", MaxUserLen)
			}
			u.Limits.validate(up, add)
			compileShadow(up, u.Shadow, add)
		}
		ks.Limits.validate(path+".limits.", add)
		ks.AppLimits.validate(path+".app_limits.", add)
		compileShadow(path+".", ks.Shadow, add)
		checkNamespaces(path, ks.CacheNamespaces, add)
		if ks.Project != "" && !validHeaderValue(ks.Project) {
			add(path+".project", "must be printable ASCII (it is sent as the OpenAI-Project header)")
		}
		for j, e := range ks.Endpoints {
			if !strings.HasPrefix(e, "/v1/") || strings.Contains(strings.TrimSuffix(e, "*"), "*") {
				add(fmt.Sprintf("%s.endpoints[%d]", path, j), "a /v1/ path, or a prefix ending in *: %q", e)
			}
		}
		for j, m := range ks.Models {
			if m == "" || strings.Contains(strings.TrimSuffix(m, "*"), "*") {
				add(fmt.Sprintf("%s.models[%d]", path, j), "a model name, a prefix ending in *, or *: %q", m)
			}
		}
		var sum [sha256.Size]byte
		switch {
		case ks.SHA256 != "" && ks.KeyEnv != "":
			add(path, "set sha256 or key_env, not both")
			continue
		case ks.SHA256 != "":
			b, err := hex.DecodeString(strings.ToLower(ks.SHA256))
			if err != nil || len(b) != sha256.Size {
				add(path+".sha256", "must be 64 hex digits (see `sluice hash-key`)")
				continue
			}
			copy(sum[:], b)
		case ks.KeyEnv != "":
			if !envName.MatchString(ks.KeyEnv) {
				p.PlaintextKeys = append(p.PlaintextKeys, ks.ID)
			}
			v, _ := lookupEnv(ks.KeyEnv)
			if v == "" {
				p.Skipped = append(p.Skipped, ks.ID)
				continue
			}
			sum = sha256.Sum256([]byte(v))
		default:
			add(path, "one of sha256 or key_env is required")
			continue
		}
		if prev, dup := p.keys[sum]; dup {
			add(path, "same key as %q", prev.ID)
			continue
		}
		k := &Key{ID: ks.ID, User: ks.User, Team: ks.Team, Tier: ks.Tier, Trusted: ks.Trusted,
			UserTier: ks.UserTier, Limits: ks.Limits, AppLimits: ks.AppLimits, CacheNamespaces: ks.CacheNamespaces,
			Shadow: ks.Shadow, EndUsers: ks.EndUsers, Project: ks.Project, StoredObjects: ks.StoredObjects || ks.Project != "", ShowCost: ks.ShowCost,
			SharedCache: ks.SharedCache, Endpoints: ks.Endpoints, Models: ks.Models}
		if k.User == "" {
			k.User = k.ID
		}
		if k.Team == "" {
			k.Team = k.User
		}
		p.keys[sum] = k
	}
	tagScopes(p.keys)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	own := make(map[string]bool, len(f.Keys))
	for _, ks := range f.Keys {
		u := ks.User
		if u == "" {
			u = ks.ID
		}
		own[u] = true
	}
	for name := range f.Users {
		if !own[name] {
			p.UnmatchedUsers = append(p.UnmatchedUsers, name)
		}
	}
	slices.Sort(p.UnmatchedUsers)
	return p, nil
}

// validHeaderValue reports whether v can be sent as an HTTP header value:
// printable ASCII, no leading or trailing space.
func validHeaderValue(v string) bool {
	if v == "" || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

// AllowsPath reports whether the key may call path (a /v1 path without
// trailing slashes).
func (k *Key) AllowsPath(path []byte) bool {
	return len(k.Endpoints) == 0 || matchAny(k.Endpoints, string(path))
}

// AllowsModel reports whether the key may use model.
func (k *Key) AllowsModel(model string) bool {
	return len(k.Models) == 0 || matchAny(k.Models, model)
}

// matchAny reports whether s is one of patterns: exact, or a prefix ending
// in "*".
func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if p == s || (strings.HasSuffix(p, "*") && strings.HasPrefix(s, p[:len(p)-1])) {
			return true
		}
	}
	return false
}
