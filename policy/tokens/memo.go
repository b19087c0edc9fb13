package tokens

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
)

// memo remembers token counts by a 64-bit hash of (unit, encoding, raw
// JSON bytes). It is a two-way set-associative table of atomic words, each
// holding a 40-bit hash tag and a 24-bit count: bounded, lock-free, no
// allocation after construction; a full set evicts one of its two entries
// at random (by a hash bit). A false hit needs two different units to share
// the slot pair and all 40 tag bits.
type memo struct {
	seed  maphash.Seed
	slots []atomic.Uint64
	mask  uint64
}

const (
	memoValBits = 24
	memoValMax  = 1<<memoValBits - 2 // larger counts are not memoized
)

func newMemo(n int) *memo {
	n = max(2, min(n, 1<<memoValBits))
	n = 1 << bits.Len(uint(n-1))
	return &memo{seed: maphash.MakeSeed(), slots: make([]atomic.Uint64, n), mask: uint64(n - 1)}
}

func (m *memo) key(unit uint8, enc Encoding, v []byte) uint64 {
	h := maphash.Bytes(m.seed, v)
	h ^= uint64(unit)<<8 | uint64(enc)
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

func (m *memo) get(h uint64) (uint64, bool) {
	i := h & m.mask
	for _, j := range [2]uint64{i, i ^ 1} {
		if e := m.slots[j].Load(); e != 0 && e>>memoValBits == h>>memoValBits {
			return e&(1<<memoValBits-1) - 1, true
		}
	}
	return 0, false
}

func (m *memo) put(h, n uint64) {
	if n > memoValMax {
		return
	}
	i := h & m.mask
	if m.slots[i].Load() != 0 && m.slots[i^1].Load() == 0 || m.slots[i].Load() != 0 && h>>63 == 1 {
		i ^= 1
	}
	m.slots[i].Store(h>>memoValBits<<memoValBits | (n + 1))
}

// estMemo remembers what Estimate priced a unit at: its sum and the text
// weights it added to the walk's headroom (both in 1/4096 token), so a
// conversation that resends its history is scanned only for its new
// messages. Each entry is two atomic words, each holding a different 24 bits
// of the key's hash beside a 40-bit value: a reader accepts the pair only
// when both tags match, so it never pairs one unit's sum with another's
// weights, and a false hit needs the slot and 48 tag bits to agree.
// Direct-mapped (a new entry replaces the old one) and keyed by the count
// memo's hash of the same unit.
type estMemo struct {
	slots []atomic.Uint64 // two per entry
	mask  uint64
}

const (
	estValBits = 40
	estValMask = 1<<estValBits - 1
)

func newEstMemo(n int) *estMemo {
	n = max(2, min(n, 1<<memoValBits))
	n = 1 << bits.Len(uint(n-1))
	return &estMemo{slots: make([]atomic.Uint64, 2*n), mask: uint64(n - 1)}
}

// estTags are the two 24-bit tags of h, shifted above the value; each has
// its low bit set, so an empty slot (0) never matches.
func estTags(h uint64) (a, b uint64) {
	return (h>>40 | 1) << estValBits, (h>>16&(1<<24-1) | 1) << estValBits
}

func (m *estMemo) get(h uint64) (sum, stat uint64, ok bool) {
	i := 2 * (h & m.mask)
	ta, tb := estTags(h)
	a := m.slots[i].Load()
	if a&^estValMask != ta {
		return 0, 0, false
	}
	b := m.slots[i+1].Load()
	if b&^estValMask != tb {
		return 0, 0, false
	}
	return a & estValMask, b & estValMask, true
}

func (m *estMemo) put(h, sum, stat uint64) {
	if sum > estValMask || stat > estValMask {
		return
	}
	i := 2 * (h & m.mask)
	ta, tb := estTags(h)
	m.slots[i].Store(ta | sum)
	m.slots[i+1].Store(tb | stat)
}
