package limit

import (
	"context"
	"errors"
	"fmt"
)

// Rule is one GCRA bucket a request draws from.
type Rule struct {
	// Key names the bucket, without the store's prefix, e.g. "u:alice:rpm".
	// Rule and Lease keys share one namespace per store: keep them distinct.
	Key string
	// Interval is the emission interval T in µs per unit (period/limit, e.g.
	// 60e6/600 = 100000 for 600 requests per minute); 0 disables the rule
	// (skipped: Remaining -1, Reset 0).
	Interval int64
	// Burst is how many units may be taken at once (>= 1); the tolerance is
	// tau = Burst*Interval µs, at most MaxSpan.
	Burst int64
	// Cost is how many units this request takes (>= 0). 0 only reads the
	// bucket (never denies); Cost > Burst can never be admitted. In Settle
	// it is the rule's delta instead (see Store.Settle).
	Cost int64
	// Until, when > 0, makes the rule a window counter rather than a
	// leaking bucket: its clock stands still at Until (µs since the epoch),
	// so nothing drains, and at most Burst units are taken in total until
	// the window ends at Until (the caller then names a new Key). A counter
	// that cannot take its Cost denies with RetryAfter = Until - now,
	// whatever MaxWait; its Reset is Until - now. A window that has ended
	// (Until <= now) is skipped like a disabled rule, and takes no settling.
	// Interval is the counter's unit (1 counts Cost as is). Default 0.
	Until int64
}

// Lease is one concurrency limit: at most Limit live leases under Key. A
// lease expires TTL µs after the request's start (now + Wait) unless
// released first, so a replica that dies does not hold slots forever.
type Lease struct {
	Key   string // lease set key, without the store's prefix, e.g. "u:alice:conc"
	Limit int64  // live leases allowed under Key (>= 0; 0 denies every request)
	TTL   int64  // µs a lease lives unless released (1..MaxSpan); longer than any request
}

// Request is everything one call to Reserve (or Cancel) needs.
type Request struct {
	Rules   []Rule  // buckets to draw from, all or nothing
	Leases  []Lease // concurrency slots to take, all or nothing
	LeaseID string  // unique per request (the caller's request id); required with Leases; a lease it already holds counts as live
	MaxWait int64   // µs the caller will wait for a future slot (0..MaxSpan); 0 = admit now or deny
	Now     int64   // µs since the Unix epoch; 0 = the store's clock (Redis: server TIME; Memory: time.Now)
}

// Decision is the result of Reserve. The caller owns it and its slices,
// which Reserve reuses (append to [:0]) so that a Decision kept across calls
// costs no allocations.
type Decision struct {
	// Allowed reports that every rule and lease was taken.
	Allowed bool
	// Wait is how long (µs) the caller must wait before proceeding: the
	// reserved slot lies in the future. 0 = go now; always 0 when denied.
	Wait int64
	// RetryAfter is set when denied: µs until the same request, retried with
	// no other traffic in between, is admitted (exact: one µs earlier is
	// still denied). -1 = never (Cost > Burst of the Limiting rule, or a
	// lease Limit of 0). 0 when allowed.
	RetryAfter int64
	// Limiting is the index of the deciding limit: the denying one (longest
	// RetryAfter) or, when allowed, the rule with the longest Wait. Rules are
	// 0..len(Rules)-1, lease j is len(Rules)+j; -1 if none. Ties go to the
	// lowest index.
	Limiting int
	// Remaining holds, per rule, the whole units left after this decision
	// (floor, >= 0), for x-ratelimit-remaining-*; -1 for a disabled rule.
	Remaining []int64
	// Reset holds, per rule, the µs until the bucket is full again, for
	// x-ratelimit-reset-*; 0 for a disabled rule.
	Reset []int64
}

// Store holds GCRA buckets and lease sets. Memory and Redis implement it
// with the same math; see gcra.go for the formulas.
type Store interface {
	// Reserve checks every rule and lease and, only if all pass (within
	// MaxWait), takes them all atomically (all or nothing). It fills d; the
	// error is for invalid requests (ErrInvalid) and store failures only.
	Reserve(ctx context.Context, req *Request, d *Decision) error
	// Adjust settles a rule after the call, on the store's clock: delta > 0
	// charges more units, delta < 0 refunds (never below "bucket full").
	// r carries the same Key, Interval and Burst as reserved; r.Cost is
	// ignored. A bucket may go into debt (TAT beyond now + tau): later
	// requests then wait or are denied until it drains.
	Adjust(ctx context.Context, r Rule, delta int64) error
	// Cancel gives back a reservation that was allowed but not used (a
	// waiting request whose client left): it refunds every rule's Cost at
	// req.Now (0 = the store's clock) and releases the leases.
	Cancel(ctx context.Context, req *Request) error
	// Release ends a request's leases (normal end, error, disconnect).
	Release(ctx context.Context, leases []Lease, leaseID string) error
	// Settle ends an admitted request in one step: every rule is adjusted
	// by its own Cost, read as a delta (as Adjust: > 0 charges, < 0
	// refunds; the token rules and spend counters once the answer's usage
	// is known), and the leases are released (as Release).
	Settle(ctx context.Context, rules []Rule, leases []Lease, leaseID string) error
}

// MaxSpan bounds every duration that enters the math, in µs: tau =
// Burst*Interval, MaxWait, a lease TTL and |delta|*Interval of an Adjust.
// 2^50 µs is about 35.7 years. With timestamps near 1.8e15 µs every sum the
// math forms stays well below 2^53, the largest range in which a Lua number
// (a double) holds integers exactly, so the Redis script computes the very
// same integers as Go (as long as no bucket is charged years into debt).
const MaxSpan = 1 << 50

// ErrInvalid is wrapped by the errors Reserve, Adjust and Cancel return for a
// malformed request (a caller bug, not a denial).
var ErrInvalid = errors.New("invalid limit request")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// validate checks the ranges that keep the integer math exact (see MaxSpan).
func (r *Rule) validate() error {
	switch {
	case r.Interval < 0 || r.Until < 0:
		return invalid("rule %q: interval %d or until %d < 0", r.Key, r.Interval, r.Until)
	case r.Interval == 0:
		return nil // disabled
	case r.Burst < 1 || r.Burst > MaxSpan/r.Interval:
		return invalid("rule %q: burst %d outside 1..MaxSpan/interval", r.Key, r.Burst)
	case r.Cost < 0:
		return invalid("rule %q: cost %d < 0", r.Key, r.Cost)
	}
	return nil
}

func (req *Request) validate() error {
	if req.Now < 0 || req.MaxWait < 0 || req.MaxWait > MaxSpan {
		return invalid("now %d or max wait %d out of range", req.Now, req.MaxWait)
	}
	for i := range req.Rules {
		if err := req.Rules[i].validate(); err != nil {
			return err
		}
	}
	if len(req.Leases) > 0 && req.LeaseID == "" {
		return invalid("leases without a lease id")
	}
	for _, l := range req.Leases {
		if l.Limit < 0 || l.TTL < 1 || l.TTL > MaxSpan {
			return invalid("lease %q: limit %d or ttl %d out of range", l.Key, l.Limit, l.TTL)
		}
	}
	return nil
}

// live reports whether rule r takes part at now (µs): enabled, and not a
// window counter whose window has ended.
func (r *Rule) live(now int64) bool {
	return r.Interval > 0 && (r.Until == 0 || r.Until > now)
}

// clockAt is the time rule r's math runs at: now for a bucket, the window's
// end for a counter (whose clock stands still).
func (r *Rule) clockAt(now int64) int64 {
	if r.Until > 0 {
		return r.Until
	}
	return now
}

// validateSettle checks a rule of Settle, whose Cost is a signed delta.
func validateSettle(r *Rule) error {
	c := *r
	c.Cost = 0
	return validateAdjust(&c, r.Cost, 0)
}

func validateAdjust(r *Rule, delta, now int64) error {
	if err := r.validate(); err != nil {
		return err
	}
	if now < 0 || (r.Interval > 0 && (delta > MaxSpan/r.Interval || delta < -MaxSpan/r.Interval)) {
		return invalid("adjust %q: delta %d or now %d out of range", r.Key, delta, now)
	}
	return nil
}
