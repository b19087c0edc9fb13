package cache

import (
	"context"
	"encoding/hex"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Single-key purges across replicas. A purge deletes the entry from the
// shared store and from the memory tier of the replica asked; the other
// replicas' memory tiers may still hold a copy. So a purge through a
// Tiered store is also appended to a short log in Redis (a stream capped at
// PurgeLogLen entries), which the generation sync loop (purge.go) reads
// from where it last stopped, every Options.GenerationSync, deleting each
// key from this replica's memory tier. A replica more than PurgeLogLen
// purges behind (stopped for a long time) misses the oldest ones; its
// copies still end at their TTL.

// PurgeLog is a shared store that keeps the recent single-key purges.
// Redis and Tiered (over Redis) are PurgeLogs.
type PurgeLog interface {
	// LogPurge appends k to the log.
	LogPurge(ctx context.Context, k Key) error
	// PurgedSince returns the keys logged after the position after ("" for
	// the start), oldest first, and the position of the last one (after
	// itself when there is none).
	PurgedSince(ctx context.Context, after string) (keys []Key, last string, err error)
}

// PurgeLogLen bounds the purge log, and one read of it.
const PurgeLogLen = 1024

// purgeLogTTL makes a log with no purge for that long go away.
const purgeLogTTL = 24 * time.Hour

// purgeLogKey is the stream of purged keys; its name holds letters that no
// hex entry key has.
func (r *Redis) purgeLogKey() string { return r.opts.Prefix + "purged-keys" }

// LogPurge appends k (in hex) to the purge log, trimmed to about
// PurgeLogLen entries.
func (r *Redis) LogPurge(ctx context.Context, k Key) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	key := r.purgeLogKey()
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: key, MaxLen: PurgeLogLen, Approx: true, Values: []string{"k", hex.EncodeToString(k[:])}})
		p.PExpire(ctx, key, purgeLogTTL)
		return nil
	})
	return err
}

// PurgedSince reads the log after position after (a stream ID).
func (r *Redis) PurgedSince(ctx context.Context, after string) ([]Key, string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	start := "-"
	if after != "" {
		start = "(" + after
	}
	msgs, err := r.c.XRangeN(ctx, r.purgeLogKey(), start, "+", PurgeLogLen).Result()
	if err != nil {
		return nil, after, err
	}
	keys := make([]Key, 0, len(msgs))
	for _, m := range msgs {
		after = m.ID
		s, _ := m.Values["k"].(string)
		var k Key
		if n, err := hex.Decode(k[:], []byte(s)); err == nil && n == len(k) {
			keys = append(keys, k)
		}
	}
	return keys, after, nil
}

// LogPurge passes to Back.
func (t *Tiered) LogPurge(ctx context.Context, k Key) error {
	if l, ok := t.Back.(PurgeLog); ok {
		return l.LogPurge(ctx, k)
	}
	return nil
}

// PurgedSince passes to Back.
func (t *Tiered) PurgedSince(ctx context.Context, after string) ([]Key, string, error) {
	if l, ok := t.Back.(PurgeLog); ok {
		return l.PurgedSince(ctx, after)
	}
	return nil, after, nil
}

// purgeLog returns the Tiered store and its shared purge log, when the
// store has a memory tier in front of a shared one: only then can a replica
// hold a copy that another replica's purge does not reach.
func (c *Cache) purgeLog() (*Tiered, PurgeLog, bool) {
	t, ok := c.opts.Store.(*Tiered)
	if !ok {
		return nil, nil, false
	}
	l, ok := t.Back.(PurgeLog)
	return t, l, ok
}

// purgeCursor is where a cache stopped reading the purge log.
type purgeCursor struct {
	// mu protects pos.
	mu  sync.Mutex
	pos string
}

// SyncPurges reads the single-key purges logged since the last call and
// deletes those keys from the memory tier.
func (c *Cache) SyncPurges(ctx context.Context) error {
	t, l, ok := c.purgeLog()
	if !ok {
		return nil
	}
	c.purges.mu.Lock()
	defer c.purges.mu.Unlock()
	for {
		keys, pos, err := l.PurgedSince(ctx, c.purges.pos)
		if err != nil {
			return err
		}
		c.purges.pos = pos
		for _, k := range keys {
			_ = t.Front.Delete(ctx, k)
		}
		if len(keys) < PurgeLogLen {
			return nil
		}
	}
}
