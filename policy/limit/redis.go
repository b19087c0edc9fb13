package limit

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix is prepended to every key when RedisOptions.Prefix is "".
const DefaultRedisPrefix = "sluice:rl:"

// DefaultRedisTimeout bounds each Redis call when RedisOptions.Timeout is 0.
const DefaultRedisTimeout = 100 * time.Millisecond

// RedisOptions configure NewRedis.
type RedisOptions struct {
	// Prefix is prepended to every bucket and lease key; "" = DefaultRedisPrefix.
	// Give each deployment (or test) sharing a Redis its own.
	Prefix string
	// Timeout bounds each call (one round trip); 0 = DefaultRedisTimeout,
	// < 0 = only the caller's context.
	Timeout time.Duration
}

// rediser is the part of a go-redis client the store uses (redis_rate's
// idea): *redis.Client, *redis.Ring and *redis.ClusterClient all have it. In
// a cluster, a request's keys must share a hash slot: the policy's keys
// start with their group's hash tag ("{research}u:alice:rpm", see
// policy.tagScopes) and an upstream's with its name's ("up:{openai}:rpm"),
// so the prefix must hold no brace.
type rediser interface {
	redis.Scripter // Eval, EvalSha, EvalRO, EvalShaRO, ScriptExists, ScriptLoad
}

var (
	//go:embed common.lua
	commonLua string
	//go:embed reserve.lua
	reserveLua string
	//go:embed adjust.lua
	adjustLua string
	//go:embed cancel.lua
	cancelLua string
	//go:embed release.lua
	releaseLua string
	//go:embed settle.lua
	settleLua string

	// Each script runs as EVALSHA, falling back to EVAL (which caches it)
	// when the server does not know it yet.
	reserveScript = redis.NewScript(commonLua + reserveLua)
	adjustScript  = redis.NewScript(commonLua + adjustLua)
	cancelScript  = redis.NewScript(commonLua + cancelLua)
	releaseScript = redis.NewScript(releaseLua)
	settleScript  = redis.NewScript(commonLua + settleLua)
)

// Redis is the shared Store: buckets and lease sets live in Redis, and every
// call is one atomic script, one round trip, on the server's clock (TIME),
// so replicas with skewed clocks agree. Bucket keys hold the TAT as an
// integer string with a TTL of "until full + 1 s"; lease keys are ZSETs of
// lease id scored by expiry (µs), expiring with their last lease.
type Redis struct {
	c       rediser
	prefix  string
	timeout time.Duration
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store that uses c (a *redis.Client or similar).
func NewRedis(c rediser, o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultRedisTimeout
	}
	return &Redis{c: c, prefix: o.Prefix, timeout: o.Timeout}
}

// run runs script with the per-call timeout.
func (s *Redis) run(ctx context.Context, script *redis.Script, keys []string, args []any) (any, error) {
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	return script.Run(ctx, s.c, keys, args...).Result()
}

// args lays out KEYS and ARGV for reserve.lua and cancel.lua (see common.lua).
func (s *Redis) args(req *Request) ([]string, []any) {
	keys := make([]string, 0, len(req.Rules)+len(req.Leases))
	args := make([]any, 0, 4+4*len(req.Rules)+2*len(req.Leases))
	args = append(args, req.Now, req.MaxWait, req.LeaseID, len(req.Rules))
	var b boxer
	for _, r := range req.Rules {
		keys = append(keys, s.prefix+r.Key)
		args = append(args, b.box(r.Interval), b.box(r.Burst), b.box(r.Cost), b.box(r.Until))
	}
	for _, l := range req.Leases {
		keys = append(keys, s.prefix+l.Key)
		args = append(args, l.Limit, l.TTL)
	}
	return keys, args
}

// Reserve implements Store in one round trip.
func (s *Redis) Reserve(ctx context.Context, req *Request, d *Decision) error {
	if err := req.validate(); err != nil {
		return err
	}
	keys, args := s.args(req)
	res, err := s.run(ctx, reserveScript, keys, args)
	if err != nil {
		return fmt.Errorf("redis reserve: %w", err)
	}
	vals, ok := res.([]any)
	if !ok || len(vals) != 4+2*len(req.Rules) {
		return fmt.Errorf("redis reserve: unexpected reply %T of length %d", res, len(vals))
	}
	var n [4]int64
	for i := range n {
		if n[i], ok = vals[i].(int64); !ok {
			return fmt.Errorf("redis reserve: reply field %d is %T", i, vals[i])
		}
	}
	d.Allowed, d.Wait, d.RetryAfter, d.Limiting = n[0] == 1, n[1], n[2], int(n[3])
	d.Remaining, d.Reset = d.Remaining[:0], d.Reset[:0]
	for i := 4; i < len(vals); i += 2 {
		rem, ok1 := vals[i].(int64)
		reset, ok2 := vals[i+1].(int64)
		if !ok1 || !ok2 {
			return fmt.Errorf("redis reserve: reply field %d is %T", i, vals[i])
		}
		d.Remaining, d.Reset = append(d.Remaining, rem), append(d.Reset, reset)
	}
	return nil
}

// Adjust implements Store on the Redis server's clock, in one round trip.
func (s *Redis) Adjust(ctx context.Context, r Rule, delta int64) error {
	return s.AdjustAt(ctx, r, delta, 0)
}

// AdjustAt is Adjust at an explicit time now (µs; 0 = the server's clock),
// for tests that replay a timeline.
func (s *Redis) AdjustAt(ctx context.Context, r Rule, delta, now int64) error {
	if err := validateAdjust(&r, delta, now); err != nil || r.Interval == 0 || delta == 0 {
		return err
	}
	_, err := s.run(ctx, adjustScript, []string{s.prefix + r.Key}, []any{now, r.Interval, delta, r.Until})
	if err != nil {
		return fmt.Errorf("redis adjust %q: %w", r.Key, err)
	}
	return nil
}

// Cancel implements Store in one round trip.
func (s *Redis) Cancel(ctx context.Context, req *Request) error {
	if err := req.validate(); err != nil {
		return err
	}
	keys, args := s.args(req)
	if _, err := s.run(ctx, cancelScript, keys, args); err != nil {
		return fmt.Errorf("redis cancel: %w", err)
	}
	return nil
}

// Release implements Store in one round trip (none without leases).
func (s *Redis) Release(ctx context.Context, leases []Lease, leaseID string) error {
	if len(leases) == 0 {
		return nil
	}
	keys := make([]string, len(leases))
	for i, l := range leases {
		keys[i] = s.prefix + l.Key
	}
	if _, err := s.run(ctx, releaseScript, keys, []any{leaseID}); err != nil {
		return fmt.Errorf("redis release: %w", err)
	}
	return nil
}

// Settle implements Store in one round trip (none when there is nothing to
// do).
func (s *Redis) Settle(ctx context.Context, rules []Rule, leases []Lease, leaseID string) error {
	charged := false
	for i := range rules {
		if err := validateSettle(&rules[i]); err != nil {
			return err
		}
		charged = charged || (rules[i].Cost != 0 && rules[i].Interval > 0)
	}
	if !charged && len(leases) == 0 {
		return nil
	}
	keys := make([]string, 0, len(rules)+len(leases))
	args := make([]any, 0, 3+3*len(rules))
	args = append(args, 0, len(rules), leaseID)
	var b boxer
	for _, r := range rules {
		keys = append(keys, s.prefix+r.Key)
		args = append(args, b.box(r.Interval), b.box(r.Cost), b.box(r.Until))
	}
	for _, l := range leases {
		keys = append(keys, s.prefix+l.Key)
	}
	if _, err := s.run(ctx, settleScript, keys, args); err != nil {
		return fmt.Errorf("redis settle: %w", err)
	}
	return nil
}

// boxer turns a call's integer arguments into interface values, boxing
// each distinct value once: a request's rules repeat theirs (the windows'
// ends, a cost charged to several counters, equal bursts), and every box
// of a value above 255 is an allocation.
type boxer struct {
	v [8]int64
	b [8]any
	n int
}

func (x *boxer) box(v int64) any {
	if v >= 0 && v < 256 {
		return v // the runtime boxes these without allocating
	}
	for i := range x.n {
		if x.v[i] == v {
			return x.b[i]
		}
	}
	b := any(v)
	if x.n < len(x.v) {
		x.v[x.n], x.b[x.n] = v, b
		x.n++
	}
	return b
}
