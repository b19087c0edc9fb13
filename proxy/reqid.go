package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
)

// idGen makes request ids: "req_" and 32 hex digits, a random per-process
// half and a counter, so ids are unique without a random read per request.
type idGen struct {
	prefix [16]byte
	n      atomic.Uint64
}

func (g *idGen) init() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	hex.Encode(g.prefix[:], b[:])
}

// reqIDLen is the length of an id: "req_", 16 hex digits of prefix, 16 of
// counter.
const reqIDLen = 4 + 16 + 16

// next appends a new id to dst.
func (g *idGen) next(dst []byte) []byte {
	n := g.n.Add(1)
	dst = append(dst, "req_"...)
	dst = append(dst, g.prefix[:]...)
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[(n>>uint(shift))&0xf])
	}
	return dst
}
