package fakeai

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// bucket is a token bucket holding at most limit units that refills
// continuously at limit per minute. A zero limit disables it.
type bucket struct {
	limit float64 // capacity, units
	perNs float64 // refill, units per nanosecond
	avail float64 // units available at last
	last  time.Time
}

func newBucket(limit int, now time.Time) bucket {
	return bucket{limit: float64(limit), perNs: float64(limit) / float64(time.Minute), avail: float64(limit), last: now}
}

func (b *bucket) enabled() bool { return b.limit > 0 }

func (b *bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.avail = math.Min(b.limit, b.avail+float64(d)*b.perNs)
		b.last = now
	}
}

// waitFor is how long until n units are available (0 if they are).
func (b *bucket) waitFor(n float64) time.Duration {
	if b.avail >= n {
		return 0
	}
	return time.Duration(math.Ceil((n - b.avail) / b.perNs))
}

func (b *bucket) remaining() int64 { return int64(math.Floor(b.avail)) }

// resetIn is how long until the bucket is full again.
func (b *bucket) resetIn() time.Duration {
	return time.Duration(math.Ceil((b.limit - b.avail) / b.perNs))
}

// limiter enforces Config.RPM and Config.TPM.
type limiter struct {
	mu       sync.Mutex
	req, tok bucket
}

func newLimiter(rpm, tpm int, now time.Time) *limiter {
	l := &limiter{}
	if rpm > 0 {
		l.req = newBucket(rpm, now)
	}
	if tpm > 0 {
		l.tok = newBucket(tpm, now)
	}
	return l
}

// verdict is the outcome of admit.
type verdict struct {
	ok        bool
	kind      string        // the limit that refused: "requests" or "tokens"
	wait      time.Duration // until the request would fit
	tooLarge  bool          // the request exceeds the TPM capacity itself
	limit     int64         // capacity of the refusing limit
	used      int64         // units in use of the refusing limit
	requested int64         // units the request asked for
}

// admit spends one request and tokens if both fit, and returns the headers'
// state after the decision.
func (l *limiter) admit(now time.Time, tokens int) (verdict, rlState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refillAll(now)
	v := verdict{ok: true}
	if l.req.enabled() {
		if w := l.req.waitFor(1); w > 0 {
			v = verdict{kind: "requests", wait: w, limit: int64(l.req.limit),
				used: int64(l.req.limit) - l.req.remaining(), requested: 1}
		}
	}
	if v.ok && l.tok.enabled() {
		n := float64(tokens)
		switch {
		case n > l.tok.limit:
			v = verdict{kind: "tokens", tooLarge: true, wait: l.tok.resetIn(), limit: int64(l.tok.limit),
				used: int64(l.tok.limit) - l.tok.remaining(), requested: int64(tokens)}
		case l.tok.waitFor(n) > 0:
			v = verdict{kind: "tokens", wait: l.tok.waitFor(n), limit: int64(l.tok.limit),
				used: int64(l.tok.limit) - l.tok.remaining(), requested: int64(tokens)}
		}
	}
	if v.ok {
		if l.req.enabled() {
			l.req.avail--
		}
		if l.tok.enabled() {
			l.tok.avail -= float64(tokens)
		}
	}
	return v, l.state()
}

// peek returns the headers' state without spending.
func (l *limiter) peek(now time.Time) rlState {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refillAll(now)
	return l.state()
}

func (l *limiter) refillAll(now time.Time) {
	if l.req.enabled() {
		l.req.refill(now)
	}
	if l.tok.enabled() {
		l.tok.refill(now)
	}
}

func (l *limiter) state() rlState {
	st := rlState{set: true}
	if l.req.enabled() {
		st.reqLimit, st.reqRemaining, st.reqReset = int64(l.req.limit), l.req.remaining(), l.req.resetIn()
	}
	if l.tok.enabled() {
		st.tokLimit, st.tokRemaining, st.tokReset = int64(l.tok.limit), l.tok.remaining(), l.tok.resetIn()
	}
	return st
}

// rlState is what the x-ratelimit-* headers report; a zero limit omits its trio.
type rlState struct {
	set                    bool
	reqLimit, reqRemaining int64
	reqReset               time.Duration
	tokLimit, tokRemaining int64
	tokReset               time.Duration
}

func (st *rlState) setHeaders(h http.Header) {
	if st.reqLimit > 0 {
		h["X-Ratelimit-Limit-Requests"] = []string{strconv.FormatInt(st.reqLimit, 10)}
		h["X-Ratelimit-Remaining-Requests"] = []string{strconv.FormatInt(max(st.reqRemaining, 0), 10)}
		h["X-Ratelimit-Reset-Requests"] = []string{formatReset(st.reqReset)}
	}
	if st.tokLimit > 0 {
		h["X-Ratelimit-Limit-Tokens"] = []string{strconv.FormatInt(st.tokLimit, 10)}
		h["X-Ratelimit-Remaining-Tokens"] = []string{strconv.FormatInt(max(st.tokRemaining, 0), 10)}
		h["X-Ratelimit-Reset-Tokens"] = []string{formatReset(st.tokReset)}
	}
}

// formatReset writes a duration the way the API does ("1s", "6m0s", "20ms"),
// rounded up to the millisecond.
func formatReset(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	if r := d % time.Millisecond; r != 0 {
		d += time.Millisecond - r
	}
	return d.String()
}

// admit applies the rate limits to a request that costs tokens; it answers
// 429 and returns false when over.
func (c *call) admit(tokens int, model string) bool {
	if c.s.limits == nil {
		return true
	}
	v, st := c.s.limits.admit(time.Now(), tokens)
	c.rl = st
	if !v.ok {
		c.rateLimited(v, model)
	}
	return v.ok
}
