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
//
// The ring asks for transparent huge pages (MADV_HUGEPAGE; the kernel's
// default mode, "madvise", gives them only to who asks): while the cache
// fills, each first write to a page faults, and one 2 MiB fault replaces 512
// of 4 KiB. On a VM a fault costs ~15 us, so filling the ring with 4 KiB
// pages cost ~4.5 us per 1 KB entry stored (BenchmarkMemoryFirstFill). Where
// huge pages are off ("never") the advice is ignored.
func newRing(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE|syscall.MAP_NORESERVE)
	if err != nil {
		panic(fmt.Sprintf("cache: mapping the memory store's %d bytes: %v", n, err))
	}
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) // advice only: 4 KiB pages still work
	return b
}

// freeRing unmaps a ring newRing mapped.
func freeRing(b []byte) {
	_ = syscall.Munmap(b)
}
