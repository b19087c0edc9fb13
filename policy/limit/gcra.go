package limit

// The GCRA, in integer microseconds. This file is the only statement of the
// math: Memory calls these functions, and reserve.lua, adjust.lua and
// cancel.lua mirror them line for line (the parity test proves it).
//
// Per bucket the store keeps one number, the theoretical arrival time TAT
// (µs): the time at which the bucket would be full (empty of debt) again. An
// absent key and any TAT <= now both mean "full", so expiring keys is safe.
// For a rule with emission interval T, burst B and cost n:
//
//	tau   = B*T                          tolerance: B units may be taken at once
//	start = max(TAT, now)
//	need  = start + n*T - tau - now      µs until the n units conform
//
//	n == 0            → the rule only reports (never denies, never writes)
//	n > B             → never conforms (RetryAfter -1)
//	need <= 0         → conforms now
//
// A request conforms to all its rules at W = max(0, max need) from now. It is
// allowed if W <= MaxWait (and every lease has a free slot) and then runs at
// at = now + W; each rule with n > 0 takes its units at that time:
//
//	TAT' = max(TAT, at) + n*T            (Take)
//
// which conforms because TAT' - at <= tau. Otherwise it is denied and nothing
// is written. need only falls as time passes (by 1 per µs while TAT > now,
// and it is <= 0 once TAT <= now), so the same request retried at now' is
// admitted exactly when need(now') = need(now) - (now'-now) <= MaxWait for
// every rule:
//
//	RetryAfter = max need - MaxWait      (exact; one µs earlier is denied)
//
// A full lease set frees its first slot when its k-th earliest expiry e
// passes (k = live - Limit, 0-based), so its RetryAfter is e - now; the
// request's RetryAfter is the largest over all denying limits.
//
// After the decision each rule reports, from its TAT' (TAT if not taken):
//
//	Reset     = max(TAT', now) - now                      µs until full
//	Remaining = floor(max(0, tau - Reset) / T)            whole units left
//
// Settling after the call (Adjust, Cancel) moves the TAT by d units:
//
//	charge d > 0:  TAT' = max(TAT, now) + d*T            (Take at now)
//	refund d > 0:  TAT' = max(TAT - d*T, now) if TAT > now, else unchanged
//	               (never below "full": unused idle time is not banked)

// Need returns how long from now (µs) rule r must wait before it can take
// its Cost: max(tat, now) + Cost*Interval - Burst*Interval - now. It is <= 0
// when the units conform now. r must be enabled and have Cost <= Burst.
func Need(tat, now int64, r *Rule) int64 {
	return max(tat, now) + r.Cost*r.Interval - r.Burst*r.Interval - now
}

// Take returns the TAT after taking n units at time at (µs).
func Take(tat, at, interval, n int64) int64 {
	return max(tat, at) + n*interval
}

// Refund returns the TAT after giving back n units at time now (µs), never
// below "bucket full" (now).
func Refund(tat, now, interval, n int64) int64 {
	if tat <= now {
		return tat
	}
	return max(tat-n*interval, now)
}

// Status returns, for a bucket at tat, the whole units left (floor, >= 0)
// and the µs until it is full again.
func Status(tat, now int64, r *Rule) (remaining, reset int64) {
	reset = max(tat, now) - now
	if left := r.Burst*r.Interval - reset; left > 0 {
		remaining = left / r.Interval
	}
	return remaining, reset
}

// verdict folds the outcome of each limit of one request, visited in index
// order (rules, then leases), into a Decision. reserve.lua keeps the same
// five variables.
type verdict struct {
	never     int   // first limit that can never admit the request; -1 if none
	wait      int64 // longest need over the rules (µs), >= 0
	waitIdx   int   // rule with that need; -1 if none is > 0
	leaseWait int64 // longest RetryAfter over the full lease sets and spent counters (µs), >= 0
	leaseIdx  int   // limit index of that lease (len(Rules)+j) or counter; -1 if none
}

func newVerdict() verdict { return verdict{never: -1, waitIdx: -1, leaseIdx: -1} }

// rule records rule i (live) whose bucket is at tat. A rule with Cost 0
// does not take part in the decision.
func (v *verdict) rule(i int, r *Rule, tat, now int64) {
	switch {
	case r.Cost == 0:
	case r.Cost > r.Burst:
		v.neverAt(i)
	case r.Until > 0:
		if Need(tat, r.Until, r) > 0 {
			v.lease(i, r.Until-now)
		}
	default:
		if need := Need(tat, now, r); need > v.wait {
			v.wait, v.waitIdx = need, i
		}
	}
}

// lease records a limit that no wait within MaxWait satisfies, limit index
// i: a full lease set whose first slot frees retry µs from now (> 0), or a
// spent window counter, whose window ends retry µs from now.
func (v *verdict) lease(i int, retry int64) {
	if retry > v.leaseWait {
		v.leaseWait, v.leaseIdx = retry, i
	}
}

func (v *verdict) neverAt(i int) {
	if v.never < 0 {
		v.never = i
	}
}

// decide sets d's Allowed, Wait, RetryAfter and Limiting.
func (v *verdict) decide(maxWait int64, d *Decision) {
	d.Allowed, d.Wait, d.RetryAfter, d.Limiting = false, 0, 0, -1
	over := v.wait - maxWait // > 0: the rules need longer than the caller waits
	switch {
	case v.never >= 0:
		d.RetryAfter, d.Limiting = -1, v.never
	case over > 0 || v.leaseWait > 0:
		if over >= v.leaseWait { // ties go to the lower index: rules come first
			d.RetryAfter, d.Limiting = over, v.waitIdx
		} else {
			d.RetryAfter, d.Limiting = v.leaseWait, v.leaseIdx
		}
	default:
		d.Allowed, d.Wait, d.Limiting = true, v.wait, v.waitIdx
	}
}
