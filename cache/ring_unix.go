//go:build unix

package cache

import "syscall"

// newRing maps n bytes of anonymous memory, outside the Go heap. Pages take
// memory when first written. A failed mapping falls back to the heap.
func newRing(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n)
	}
	return b
}

// freeRing unmaps a ring newRing mapped; a heap ring is left to the GC.
func freeRing(b []byte) {
	_ = syscall.Munmap(b) // EINVAL for a heap ring: nothing to do
}
