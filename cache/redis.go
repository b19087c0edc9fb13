package cache

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configure a Redis store.
type RedisOptions struct {
	// Prefix starts every key, e.g. "sluice:cache:". Required, so the cache
	// never writes outside its own key space.
	Prefix string
	// Timeout bounds one call; a slower Redis is a miss. Default 100ms.
	Timeout time.Duration
}

// Redis is a store shared by every replica: one string per entry, with the
// entry's TTL.
type Redis struct {
	c    redis.Cmdable
	opts RedisOptions
}

// NewRedis returns a store on client c.
func NewRedis(c redis.Cmdable, o RedisOptions) *Redis {
	if o.Timeout <= 0 {
		o.Timeout = 100 * time.Millisecond
	}
	return &Redis{c: c, opts: o}
}

func (r *Redis) key(k Key) string {
	const hexd = "0123456789abcdef"
	b := make([]byte, 0, len(r.opts.Prefix)+2*len(k))
	b = append(b, r.opts.Prefix...)
	for _, x := range k {
		b = append(b, hexd[x>>4], hexd[x&15])
	}
	return string(b)
}

// Get returns the value under k, ErrNotFound, or the Redis error.
func (r *Redis) Get(ctx context.Context, k Key) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	b, err := r.c.Get(ctx, r.key(k)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	return b, err
}

// Set stores v under k with a TTL of ttl (at least one millisecond).
func (r *Redis) Set(ctx context.Context, k Key, v []byte, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	return r.c.Set(ctx, r.key(k), v, ttl).Err()
}
