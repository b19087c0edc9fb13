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
