package limit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Slot is a retry slot in a book the replicas share (the queue's retry
// slots): booked for one user (flow) of one upstream by one replica (the
// owner, which reserves its capacity when it comes due), claimable by the
// user's retry on any replica.
type Slot struct {
	// At is the slot's time, Until the end of its claim window; µs since
	// the Unix epoch on the replicas' clocks.
	At, Until int64
	// Owner names the replica that booked it.
	Owner string
	// Reserved reports that the owner reserved its capacity: in the
	// upstream's key Key, for a request of Tokens tokens.
	Reserved bool
	Key      int
	Tokens   int64
}

// Outcomes of SlotBook.BookSlot.
const (
	SlotNew      = iota // booked for the caller
	SlotExisting        // the user already had one: that one is returned
	SlotTooLate         // past latest: nothing booked; Slot.At is when it would be
)

// SlotBook is a book of retry slots shared by replicas. Times are µs on
// the callers' clocks (the replicas must agree on the time, as their
// retry-after headers do). The Redis store implements it; a book of a
// single replica needs none (the queue keeps its own).
type SlotBook interface {
	// BookSlot books flow's slot in book at max(earliest, the last slot
	// booked + span), with a claim window of max(minTol, a tenth of the
	// wait) after it, unless that is past latest. A slot flow already has
	// is returned instead.
	BookSlot(ctx context.Context, book, flow string, earliest, span, latest, minTol, now int64, owner string) (Slot, int, error)
	// ClaimSlot takes flow's slot when now is within [At-early, Until]:
	// once, whichever replica asks.
	ClaimSlot(ctx context.Context, book, flow string, now, early int64) (Slot, bool, error)
	// MarkSlot records the owner's reservation of the slot at at; false
	// when it is gone (claimed meanwhile).
	MarkSlot(ctx context.Context, book, flow string, at int64, key int, tokens int64) (bool, error)
	// DropSlot deletes the slot at at; false when it was already gone
	// (claimed).
	DropSlot(ctx context.Context, book, flow string, at int64) (bool, error)
}

var _ SlotBook = (*Redis)(nil)

// A slot is one string key, prefix+book+":slot:"+flow, holding "at until
// owner" and, once reserved, " key tokens"; it expires a second after its
// window. prefix+book+":slot-last" holds the last slot's time, kept a
// minute past it. Both keys share book's hash tag ("up:{openai}").
var (
	bookSlotScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2])
if cur then return {1, cur} end
local earliest, span, latest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local mintol, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local at = earliest
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) + span > at then at = tonumber(last) + span end
if at > latest then return {2, string.format('%.0f', at)} end
local tol = math.max(mintol, math.floor((at - now) / 10))
local rec = string.format('%.0f %.0f ', at, at + tol) .. ARGV[6]
redis.call('SET', KEYS[2], rec, 'PX', string.format('%.0f', math.ceil((at + tol - now) / 1000) + 1000))
redis.call('SET', KEYS[1], string.format('%.0f', at), 'PX', string.format('%.0f', math.ceil((at - now) / 1000) + 60000))
return {0, rec}`)
	claimSlotScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
local at, untl = string.match(cur, '^(%d+) (%d+)')
local now = tonumber(ARGV[1])
if now < tonumber(at) - tonumber(ARGV[2]) or now > tonumber(untl) then return false end
redis.call('DEL', KEYS[1])
return cur`)
	markSlotScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, '^(%d+)') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], cur .. ' ' .. ARGV[2] .. ' ' .. ARGV[3], 'KEEPTTL')
return 1`)
	dropSlotScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, '^(%d+)') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1`)
)

func (s *Redis) slotKey(book, flow string) string { return s.prefix + book + ":slot:" + flow }

// BookSlot implements SlotBook.
func (s *Redis) BookSlot(ctx context.Context, book, flow string, earliest, span, latest, minTol, now int64, owner string) (Slot, int, error) {
	res, err := s.run(ctx, bookSlotScript, []string{s.prefix + book + ":slot-last", s.slotKey(book, flow)},
		[]any{earliest, span, latest, minTol, now, owner})
	if err != nil {
		return Slot{}, 0, fmt.Errorf("redis book slot: %w", err)
	}
	v, ok := res.([]any)
	if !ok || len(v) != 2 {
		return Slot{}, 0, fmt.Errorf("redis book slot: unexpected reply %v", res)
	}
	outcome, _ := v[0].(int64)
	rec, _ := v[1].(string)
	if outcome == SlotTooLate {
		at, err := strconv.ParseInt(rec, 10, 64)
		return Slot{At: at}, SlotTooLate, err
	}
	sl, err := parseSlot(rec)
	return sl, int(outcome), err
}

// ClaimSlot implements SlotBook.
func (s *Redis) ClaimSlot(ctx context.Context, book, flow string, now, early int64) (Slot, bool, error) {
	res, err := s.run(ctx, claimSlotScript, []string{s.slotKey(book, flow)}, []any{now, early})
	if errors.Is(err, redis.Nil) {
		return Slot{}, false, nil
	}
	if err != nil {
		return Slot{}, false, fmt.Errorf("redis claim slot: %w", err)
	}
	rec, _ := res.(string)
	sl, err := parseSlot(rec)
	return sl, err == nil, err
}

// MarkSlot implements SlotBook.
func (s *Redis) MarkSlot(ctx context.Context, book, flow string, at int64, key int, tokens int64) (bool, error) {
	res, err := s.run(ctx, markSlotScript, []string{s.slotKey(book, flow)}, []any{at, key, tokens})
	if err != nil {
		return false, fmt.Errorf("redis mark slot: %w", err)
	}
	return res == int64(1), nil
}

// DropSlot implements SlotBook.
func (s *Redis) DropSlot(ctx context.Context, book, flow string, at int64) (bool, error) {
	res, err := s.run(ctx, dropSlotScript, []string{s.slotKey(book, flow)}, []any{at})
	if err != nil {
		return false, fmt.Errorf("redis drop slot: %w", err)
	}
	return res == int64(1), nil
}

// parseSlot reads "at until owner[ key tokens]".
func parseSlot(rec string) (Slot, error) {
	f := strings.Fields(rec)
	if len(f) != 3 && len(f) != 5 {
		return Slot{}, fmt.Errorf("redis slot: malformed record %q", rec)
	}
	var sl Slot
	var err error
	if sl.At, err = strconv.ParseInt(f[0], 10, 64); err == nil {
		sl.Until, err = strconv.ParseInt(f[1], 10, 64)
	}
	sl.Owner = f[2]
	if err == nil && len(f) == 5 {
		sl.Reserved = true
		if sl.Key, err = strconv.Atoi(f[3]); err == nil {
			sl.Tokens, err = strconv.ParseInt(f[4], 10, 64)
		}
	}
	if err != nil {
		return Slot{}, fmt.Errorf("redis slot: malformed record %q: %w", rec, err)
	}
	return sl, nil
}
