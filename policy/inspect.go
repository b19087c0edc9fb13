package policy

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"sluice/policy/limit"
)

// KeyByID returns the compiled key with the given id (keys skipped for an
// unset key_env are not found).
func (p *Policy) KeyByID(id string) (*Key, bool) {
	for _, k := range p.keys {
		if k.ID == id {
			return k, true
		}
	}
	return nil, false
}

// Keys returns the compiled keys (not those skipped for an unset
// key_env), sorted by id.
func (p *Policy) Keys() []*Key {
	keys := make([]*Key, 0, len(p.keys))
	for _, k := range p.keys {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *Key) int { return strings.Compare(a.ID, b.ID) })
	return keys
}

// KeysOf returns the ids of the keys whose own user is user, sorted.
func (p *Policy) KeysOf(user string) []string {
	var ids []string
	for _, k := range p.keys {
		if k.User == user {
			ids = append(ids, k.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// KeysOfTeam returns the keys whose team is team, sorted by id.
func (p *Policy) KeysOfTeam(team string) []*Key {
	var keys []*Key
	for _, k := range p.keys {
		if k.Team == team {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b *Key) int { return strings.Compare(a.ID, b.ID) })
	return keys
}

// TeamLimits returns the limits of the teams: section, by team name.
func (p *Policy) TeamLimits() map[string]Limits { return p.teams }

// UserOverrides returns the users: section's overrides by user name (an
// app key's end_users are the key's own: Key.EndUsers).
func (p *Policy) UserOverrides() map[string]UserSpec { return p.users }

// ErrNoSuchKey is returned by Resolve for a key id or user no key serves.
var ErrNoSuchKey = errors.New("no such key")

// Resolve finds the key and principal an admin asks about: a key id alone
// (the key's own user), a user alone (the first of the user's own keys by
// id), or a trusted key with an end user it names.
func (p *Policy) Resolve(keyID, user string) (*Key, Principal, error) {
	if keyID == "" {
		ids := p.KeysOf(user)
		if len(ids) == 0 {
			return nil, Principal{}, ErrNoSuchKey
		}
		keyID = ids[0]
	}
	k, ok := p.KeyByID(keyID)
	if !ok {
		return nil, Principal{}, ErrNoSuchKey
	}
	end := ""
	if user != "" && user != k.User {
		if !k.Trusted {
			return nil, Principal{}, ErrNoSuchKey
		}
		end = user
	}
	return k, p.Principal(k, end), nil
}

// BucketUsage is one bucket's state, read without spending.
type BucketUsage struct {
	// Limit is "rpm", "tpm" or "tpd"; Scope is "user", "model" or "app".
	Limit string `json:"limit"`
	Scope string `json:"scope"`
	// Configured is the limit's value per period.
	Configured int64 `json:"configured"`
	// Burst is the bucket's size: what an idle user may take at once.
	Burst int64 `json:"burst"`
	// Remaining is what may be taken now.
	Remaining int64 `json:"remaining"`
	// Used is Burst minus Remaining: what recent requests still hold (a
	// debt beyond the burst shows as Remaining 0).
	Used int64 `json:"used"`
	// ResetSeconds is the time until the bucket is full again; for spend,
	// until the day or month starts over.
	ResetSeconds float64 `json:"reset_seconds"`
	// SpentUSD is, for spend (budget_daily, budget_monthly), what the
	// scope spent this day or month; BudgetUSD its cap (0: none, only
	// counted). Configured, Burst, Remaining and Used are 0 for spend.
	SpentUSD  float64 `json:"spent_usd,omitempty"`
	BudgetUSD float64 `json:"budget_usd,omitempty"`
}

// Usage reads the buckets of a plan without spending: every rule is asked
// for with cost 0, which only reports. Concurrency leases are not read.
func (l *Limiter) Usage(ctx context.Context, pl *Plan) ([]BucketUsage, error) {
	var ad Admission
	l.build(&ad, pl, 0, 0, "", 1)
	ad.req.Leases = nil
	ad.req.Rules, ad.kinds = append(ad.req.Rules, ad.track...), append(ad.kinds, ad.trackKinds...)
	for i := range ad.req.Rules {
		ad.req.Rules[i].Cost = 0
	}
	if len(ad.req.Rules) == 0 {
		return nil, nil
	}
	if err := l.store.Reserve(ctx, &ad.req, &ad.dec); err != nil {
		return nil, err
	}
	out := make([]BucketUsage, 0, len(ad.kinds))
	for i, k := range ad.kinds {
		u := BucketUsage{Limit: k.kind, Scope: k.scope, Configured: k.limit, Burst: ad.req.Rules[i].Burst}
		if i < len(ad.dec.Remaining) {
			u.Remaining = max(ad.dec.Remaining[i], 0)
			u.ResetSeconds = (time.Duration(ad.dec.Reset[i]) * time.Microsecond).Seconds()
		}
		u.Used = max(u.Burst-u.Remaining, 0)
		if k.usd {
			u.SpentUSD, u.BudgetUSD = float64(u.Used)/1e6, float64(k.limit)/1e6
			u.Configured, u.Burst, u.Remaining, u.Used = 0, 0, 0, 0
		}
		out = append(out, u)
	}
	return out, nil
}

// Store returns the limiter's primary bucket store.
func (l *Limiter) Store() limit.Store { return l.store }

// MarshalJSON writes a rate as {"limit": N, "burst": B}, the burst's
// default applied; a rate without a limit is null.
func (r Rate) MarshalJSON() ([]byte, error) {
	if r.Limit == 0 {
		return []byte("null"), nil
	}
	return json.Marshal(struct {
		Limit int64 `json:"limit"`
		Burst int64 `json:"burst"`
	}{r.Limit, r.burst()})
}
