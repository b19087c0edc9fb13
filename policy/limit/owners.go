package limit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// OwnerTTL is how long the owner of a stored object is remembered after it
// was recorded or last looked up (30 days, refreshed on every use). An
// object untouched for longer is treated as one Sluice never saw.
const OwnerTTL = 30 * 24 * time.Hour

// Owners records which owner (an opaque string: the proxy uses a team or a
// key id) made each object a provider stores (a file, a batch, a stored
// response, a fine-tuned model): ids are the provider's, also opaque here.
// The first owner recorded for an id keeps it: a later Own of the same id
// by another owner changes nothing.
type Owners interface {
	// Own records owner for every id (and refreshes the TTL of ids it
	// already owns).
	Own(ctx context.Context, owner string, ids ...string) error
	// Lookup fills owners[i] with the owner of ids[i], "" for an id with
	// no record, and refreshes the TTL of those found. len(owners) must be
	// len(ids).
	Lookup(ctx context.Context, ids, owners []string) error
}

// OwnersFor returns the owner records that live beside s, so that replicas
// sharing a bucket store agree on owners too: in Redis for a *Redis store
// (same client and timeout, the prefix's last "rl:" part replaced by
// "own:": "sluice:rl:" → "sluice:own:"; on a Redis Cluster
// "sluice:own:{own}:", so a call's keys share a slot), else in this
// process's memory.
func OwnersFor(s Store) Owners {
	if r, ok := s.(*Redis); ok {
		p := r.prefix
		if strings.HasSuffix(p, "rl:") {
			p = p[:len(p)-len("rl:")]
		}
		p += "own:"
		if _, cluster := r.c.(*redis.ClusterClient); cluster {
			// Owner records are few and rarely written: one slot holds
			// them all.
			p += "{own}:"
		}
		return NewRedisOwners(r.c, p, r.timeout)
	}
	return NewMemoryOwners()
}

// MemoryOwners is the in-process Owners: a map under one mutex, entries
// expiring OwnerTTL after their last use (swept as writes go by).
type MemoryOwners struct {
	mu      sync.Mutex
	m       map[string]memoryOwner
	writes  int
	now     func() time.Time
	ttl     time.Duration
	sweepAt int // sweep the expired entries every sweepAt writes
}

type memoryOwner struct {
	owner   string
	expires time.Time
}

var _ Owners = (*MemoryOwners)(nil)

// NewMemoryOwners returns empty in-process owner records.
func NewMemoryOwners() *MemoryOwners {
	return &MemoryOwners{m: make(map[string]memoryOwner), now: time.Now, ttl: OwnerTTL, sweepAt: 4096}
}

// Own implements Owners.
func (m *MemoryOwners) Own(_ context.Context, owner string, ids ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, id := range ids {
		if id == "" {
			continue
		}
		if e, ok := m.m[id]; ok && now.Before(e.expires) && e.owner != owner {
			continue // the first owner keeps it
		}
		m.m[id] = memoryOwner{owner: owner, expires: now.Add(m.ttl)}
		m.writes++
	}
	if m.writes >= m.sweepAt {
		m.writes = 0
		for id, e := range m.m {
			if !now.Before(e.expires) {
				delete(m.m, id)
			}
		}
	}
	return nil
}

// Lookup implements Owners.
func (m *MemoryOwners) Lookup(_ context.Context, ids, owners []string) error {
	if len(owners) != len(ids) {
		return fmt.Errorf("%w: %d ids, %d owners", ErrInvalid, len(ids), len(owners))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for i, id := range ids {
		owners[i] = ""
		e, ok := m.m[id]
		if !ok || !now.Before(e.expires) {
			continue
		}
		e.expires = now.Add(m.ttl)
		m.m[id] = e
		owners[i] = e.owner
	}
	return nil
}

var (
	// ownScript: KEYS are the ids' keys, ARGV[1] the owner, ARGV[2] the TTL
	// in ms. A key held by another owner is left alone.
	ownScript = redis.NewScript(`
for i = 1, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if not cur then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  elseif cur == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return #KEYS`)
	// lookupScript: KEYS are the ids' keys, ARGV[1] the TTL in ms; returns
	// each key's owner ("" for none) and refreshes the TTL of those found.
	lookupScript = redis.NewScript(`
local out = {}
for i = 1, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if cur then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = cur
  else
    out[i] = ''
  end
end
return out`)
)

// RedisOwners keeps owner records in Redis, one string key per id
// (prefix+id → owner) with a TTL of OwnerTTL refreshed on use. Each call is
// one script, one round trip. All of a call's keys must be on one node: a
// plain client or a Ring is fine; a Redis Cluster needs a hash tag in the
// prefix ("sluice:{own}:").
type RedisOwners struct {
	c       rediser
	prefix  string
	timeout time.Duration
}

var _ Owners = (*RedisOwners)(nil)

// NewRedisOwners returns owner records in c under prefix; timeout bounds
// each call (0 = DefaultRedisTimeout, < 0 = the caller's context only).
func NewRedisOwners(c rediser, prefix string, timeout time.Duration) *RedisOwners {
	if timeout == 0 {
		timeout = DefaultRedisTimeout
	}
	return &RedisOwners{c: c, prefix: prefix, timeout: timeout}
}

func (r *RedisOwners) run(ctx context.Context, s *redis.Script, ids []string, args ...any) (any, error) {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.prefix + id
	}
	return s.Run(ctx, r.c, keys, args...).Result()
}

// Own implements Owners.
func (r *RedisOwners) Own(ctx context.Context, owner string, ids ...string) error {
	kept := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != "" {
			kept = append(kept, id)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	if _, err := r.run(ctx, ownScript, kept, owner, OwnerTTL.Milliseconds()); err != nil {
		return fmt.Errorf("redis own: %w", err)
	}
	return nil
}

// Lookup implements Owners.
func (r *RedisOwners) Lookup(ctx context.Context, ids, owners []string) error {
	if len(owners) != len(ids) {
		return fmt.Errorf("%w: %d ids, %d owners", ErrInvalid, len(ids), len(owners))
	}
	if len(ids) == 0 {
		return nil
	}
	res, err := r.run(ctx, lookupScript, ids, OwnerTTL.Milliseconds())
	if err != nil {
		return fmt.Errorf("redis owners: %w", err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != len(ids) {
		return fmt.Errorf("redis owners: unexpected reply %T", res)
	}
	for i, v := range vals {
		s, _ := v.(string)
		owners[i] = s
	}
	return nil
}
