package limit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The parity test feeds the same timeline of operations to a Memory and a
// Redis store and requires identical Decisions (and errors) at every step.
// It also checks, at every denial a step asks about, that RetryAfter is exact.

// step is one operation of a timeline.
type step struct {
	op      byte    // 'R' Reserve, 'A' AdjustAt, 'C' Cancel, 'L' Release
	advance int64   // µs the clock moves forward before the operation
	rules   []Rule  // R: the request's rules; A: rules[0] is adjusted
	leases  []Lease // R: the request's leases
	maxWait int64   // R: µs
	delta   int64   // A: units
	ref     int     // C, L: which earlier admitted reservation (modulo their count)
	retry   bool    // R: if denied, retry at RetryAfter-1 (denied) and RetryAfter (admitted)
}

func TestParity(t *testing.T) {
	rpm := func(cost int64) Rule { return Rule{Key: "rpm", Interval: 100 * ms, Burst: 3, Cost: cost} }
	tpm := func(cost int64) Rule { return Rule{Key: "tpm", Interval: ms, Burst: 1000, Cost: cost} }
	day := func(cost int64) Rule {
		return Rule{Key: "day", Interval: 1, Burst: 1000, Cost: cost, Until: t0 + 12*sec}
	}
	conc := []Lease{{Key: "conc", Limit: 2, TTL: sec}}
	c := newRedisClient(t)
	for name, steps := range map[string][]step{
		"burst and rate": {
			{op: 'R', rules: []Rule{rpm(1)}}, {op: 'R', rules: []Rule{rpm(1)}}, {op: 'R', rules: []Rule{rpm(1)}},
			{op: 'R', rules: []Rule{rpm(1)}, retry: true},
			{op: 'R', advance: 50 * ms, rules: []Rule{rpm(2)}, retry: true},
			{op: 'R', advance: 10 * sec, rules: []Rule{rpm(3)}},
			{op: 'R', rules: []Rule{rpm(4)}}, // never
		},
		"tokens reserved then settled": {
			{op: 'R', rules: []Rule{rpm(1), tpm(700)}, leases: conc},
			{op: 'R', rules: []Rule{rpm(1), tpm(700)}, leases: conc, retry: true},
			{op: 'A', advance: 200 * ms, rules: []Rule{tpm(0)}, delta: -500}, // used 200 of 700
			{op: 'L', ref: 0},
			{op: 'R', rules: []Rule{rpm(1), tpm(700)}, leases: conc},
			{op: 'A', advance: 100 * ms, rules: []Rule{tpm(0)}, delta: 900}, // used 1600 of 700
			{op: 'R', rules: []Rule{rpm(1), tpm(1)}, leases: conc, retry: true},
			{op: 'R', rules: []Rule{rpm(0), tpm(0)}},
		},
		"future slots and cancel": {
			{op: 'R', rules: []Rule{rpm(3)}},
			{op: 'R', rules: []Rule{rpm(1)}, leases: conc, maxWait: sec},
			{op: 'R', rules: []Rule{rpm(2)}, leases: conc, maxWait: sec},
			{op: 'R', rules: []Rule{rpm(1)}, leases: conc, maxWait: sec, retry: true}, // lease full
			{op: 'C', advance: 10 * ms, ref: 1},
			{op: 'R', rules: []Rule{rpm(1)}, leases: conc, maxWait: 150 * ms, retry: true},
			{op: 'R', advance: 2 * sec, rules: []Rule{rpm(0)}, leases: conc},
		},
		"a key listed twice": {
			{op: 'R', rules: []Rule{rpm(1), rpm(2)}, leases: []Lease{conc[0], conc[0]}},
			{op: 'R', rules: []Rule{rpm(2), rpm(1)}, retry: true},
			{op: 'C', ref: 0},
			{op: 'R', rules: []Rule{rpm(0), rpm(3)}, leases: conc},
		},
		"a window counter": {
			{op: 'R', rules: []Rule{rpm(1), day(600)}},
			{op: 'R', rules: []Rule{day(500)}, maxWait: sec}, // spent: no wait helps
			{op: 'A', advance: 100 * ms, rules: []Rule{day(0)}, delta: -300},
			{op: 'R', rules: []Rule{day(500), rpm(1)}, leases: conc},
			{op: 'R', advance: 10 * sec, rules: []Rule{day(300)}, maxWait: sec}, // time refills nothing
			{op: 'C', ref: 0},
			{op: 'R', rules: []Rule{day(799)}},
			{op: 'R', rules: []Rule{day(0), tpm(0)}},
			{op: 'R', advance: 500 * ms, rules: []Rule{day(1), tpm(5)}, retry: true}, // admitted once the window ends
			{op: 'R', advance: sec, rules: []Rule{day(5)}},
			{op: 'A', rules: []Rule{day(0)}, delta: 5}, // a settle after the window: nothing
		},
		"leases expire": {
			{op: 'R', leases: conc}, {op: 'R', advance: 300 * ms, leases: conc},
			{op: 'R', leases: conc, retry: true},
			{op: 'R', advance: sec, leases: conc},
			{op: 'L', ref: 1}, {op: 'L', ref: 2}, {op: 'R', leases: conc},
		},
	} {
		t.Run(name, func(t *testing.T) { runParity(t, c, steps) })
	}
}

// runParity runs steps through fresh Memory and Redis stores.
func runParity(t *testing.T, c *redis.Client, steps []step) {
	t.Helper()
	ctx := context.Background()
	mem := NewMemory(MemoryOptions{})
	defer mem.Close()
	prefix := uniquePrefix()
	rs := NewRedis(c, RedisOptions{Prefix: prefix, Timeout: 5 * time.Second})
	defer deletePrefix(c, prefix)

	now := int64(t0)
	var admitted []Request // reservations that were allowed, for 'C' and 'L'
	var dm, dr Decision
	fail := func(i int, format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d %+v: %s\nsteps: %+v", i, steps[i], fmt.Sprintf(format, args...), steps)
	}
	for i, s := range steps {
		now += s.advance
		switch s.op {
		case 'R':
			req := Request{Rules: s.rules, Leases: s.leases, LeaseID: fmt.Sprintf("r%d", i), MaxWait: s.maxWait, Now: now}
			em, er := mem.Reserve(ctx, &req, &dm), rs.Reserve(ctx, &req, &dr)
			if !sameErr(em, er) || !equalDecision(dm, dr) {
				fail(i, "memory %s (%v) != redis %s (%v)", show(dm), em, show(dr), er)
			}
			if em != nil {
				continue
			}
			if dm.Allowed {
				admitted = append(admitted, req)
				continue
			}
			if !s.retry || dm.RetryAfter < 0 {
				continue
			}
			// RetryAfter is exact: 1 µs earlier is denied, at RetryAfter admitted.
			ra := dm.RetryAfter
			for _, late := range []int64{ra - 1, ra} {
				req.Now = now + late
				em, er = mem.Reserve(ctx, &req, &dm), rs.Reserve(ctx, &req, &dr)
				if em != nil || er != nil || !equalDecision(dm, dr) {
					fail(i, "retry after %d: memory %s (%v) != redis %s (%v)", late, show(dm), em, show(dr), er)
				}
				if dm.Allowed != (late == ra) {
					fail(i, "retried %d µs later (RetryAfter %d): %s", late, ra, show(dm))
				}
			}
			now = req.Now
			admitted = append(admitted, req)
		case 'A':
			em, er := mem.AdjustAt(ctx, s.rules[0], s.delta, now), rs.AdjustAt(ctx, s.rules[0], s.delta, now)
			if !sameErr(em, er) {
				fail(i, "memory %v != redis %v", em, er)
			}
		case 'C', 'L':
			if len(admitted) == 0 {
				continue
			}
			k := s.ref % len(admitted)
			req := admitted[k]
			admitted = append(admitted[:k], admitted[k+1:]...)
			var em, er error
			if s.op == 'C' {
				req.Now = now
				em, er = mem.Cancel(ctx, &req), rs.Cancel(ctx, &req)
			} else {
				em, er = mem.Release(ctx, req.Leases, req.LeaseID), rs.Release(ctx, req.Leases, req.LeaseID)
			}
			if em != nil || er != nil {
				fail(i, "memory %v, redis %v", em, er)
			}
		}
	}
}

// sameErr reports whether both stores succeeded or both refused the request
// as invalid.
func sameErr(a, b error) bool {
	return (a == nil && b == nil) || (errors.Is(a, ErrInvalid) && errors.Is(b, ErrInvalid))
}

// FuzzParity decodes random timelines (decodeSteps) and runs them through
// both stores. Each input costs a few dozen Redis round trips, so run it by
// count: go test -run='^$' -fuzz='^FuzzParity$' -fuzztime=2000x ./policy/limit/
func FuzzParity(f *testing.F) {
	c := newRedisClient(f)
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		seed := make([]byte, 160)
		for i := range seed {
			seed[i] = byte(rng.UintN(256))
		}
		f.Add(seed)
	}
	f.Add([]byte{2, 3, 5, 1, 0, 4, 6, 1, 2, 30, 2, 1, 0xff, 3, 3, 3, 0, 1, 0xff, 9, 9, 9, 1, 5, 0, 0, 0xff, 1, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		runParity(t, c, decodeSteps(b))
	})
}

// decodeSteps turns bytes into a timeline of at most 48 steps over three rules
// and two lease sets whose parameters come from the first bytes. Missing
// bytes read as 0.
func decodeSteps(b []byte) []step {
	next := func() int64 {
		if len(b) == 0 {
			return 0
		}
		v := int64(b[0])
		b = b[1:]
		return v
	}
	unit := []int64{1, 7, ms, 100 * ms, sec}[next()%5]                         // time scale of the advances, waits and TTLs
	intervals := []int64{0, 1, unit, 2 * unit, 3 * unit, 10 * unit, 60 * unit} // 0 disables
	var rules [3]Rule
	for i := range rules {
		rules[i] = Rule{Key: fmt.Sprintf("r%d", i), Interval: intervals[next()%7], Burst: 1 + next()%16}
	}
	if w := next(); w%2 == 1 { // the last rule a window counter, ending within the timeline one time in two
		rules[2].Until = t0 + (1+w/2)*unit*4
	}
	var leases [2]Lease
	for j := range leases {
		limit := next() % 32 // 0 (never admits) one time in 32, else 1..4
		if limit > 0 {
			limit = 1 + limit%4
		}
		leases[j] = Lease{Key: fmt.Sprintf("l%d", j), Limit: limit, TTL: (1 + next()%64) * unit}
	}
	var steps []step
	for len(b) > 0 && len(steps) < 48 {
		s := step{advance: next() % 16 * unit / 4}
		switch op := next() % 8; {
		case op < 4:
			s.op = 'R'
			mask := next()
			for i, r := range rules {
				if mask&(1<<i) != 0 {
					r.Cost = next() % (r.Burst + 1)
					if mask&0x70 == 0x70 {
						r.Cost = r.Burst + 1 // never fits (one time in eight)
					}
					s.rules = append(s.rules, r)
				}
			}
			for j, l := range leases {
				if mask&(8<<j) != 0 {
					s.leases = append(s.leases, l)
				}
			}
			mw := next()
			s.maxWait = mw % 4 * (mw / 4) * unit // 0 one time in four
			s.retry = mask&0x80 != 0
		case op == 4:
			s.op = 'A'
			s.rules = []Rule{rules[next()%3]}
			s.delta = next() - 128
		case op == 5:
			s.op, s.ref = 'C', int(next())
		case op == 6:
			s.op, s.ref = 'L', int(next())
		default: // a longer pause
			s.advance = next() * unit * 8
		}
		steps = append(steps, s)
	}
	return steps
}
