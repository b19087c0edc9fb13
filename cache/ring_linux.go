package cache

import (
	"fmt"
	"syscall"
)

// newRing maps n bytes of anonymous memory, outside the Go heap. Pages take
// memory when first written, so a large bound costs nothing until the cache
// fills; no swap is reserved up front (MAP_NORESERVE), as for the heap. The
// mapping fails only when the address space is exhausted (RLIMIT_AS), where
// a heap of that size would fail too: that is a panic at start.
func newRing(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err != nil {
		panic(fmt.Sprintf("cache: mapping the memory store's %d bytes: %v", n, err))
	}
	return b
}

// freeRing unmaps a ring newRing mapped.
func freeRing(b []byte) {
	_ = syscall.Munmap(b)
}
