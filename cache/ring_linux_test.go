package cache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestMemoryLargeBoundCostsNothingUpFront: a bound far above the machine's
// memory maps, and only what is written takes memory.
func TestMemoryLargeBoundCostsNothingUpFront(t *testing.T) {
	if b, err := os.ReadFile("/proc/sys/vm/overcommit_memory"); err != nil || bytes.TrimSpace(b)[0] == '2' {
		t.Skip("strict overcommit: a mapping this large is refused")
	}
	before := selfRSS(t)
	m := NewMemory(MemoryOptions{MaxBytes: 64 << 30}) // 64 GiB
	if _, err := m.Get(context.Background(), keyOf(1)); err != ErrNotFound {
		t.Fatalf("empty store: %v", err)
	}
	v := bytes.Repeat([]byte("v"), 1<<20)
	for i := range 8 {
		_ = m.Set(context.Background(), keyOf(i), v, time.Hour)
	}
	if got, err := m.Get(context.Background(), keyOf(7)); err != nil || !bytes.Equal(got, v) {
		t.Fatalf("get after set: %v", err)
	}
	if grew := selfRSS(t) - before; grew > 64<<20 {
		t.Errorf("RSS grew by %d MiB for 8 MiB of entries under a 64 GiB bound", grew>>20)
	}
}

// TestMemoryRingHugePages: where the kernel gives transparent huge pages to
// who asks (mode "always" or "madvise"), the ring's pages are huge once
// written, so filling the cache takes one fault per 2 MiB.
func TestMemoryRingHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || bytes.Contains(mode, []byte("[never]")) {
		t.Skipf("transparent huge pages off here (%q)", bytes.TrimSpace(mode))
	}
	m := NewMemory(MemoryOptions{MaxBytes: 64 << 20})
	v := bytes.Repeat([]byte("v"), 1000)
	for i := range 16 << 10 { // ~16 MiB
		_ = m.Set(context.Background(), keyOf(i), v, time.Hour)
	}
	huge := mappingField(t, uintptr(unsafe.Pointer(&m.ring[0])), "AnonHugePages:")
	if huge < 8<<20 {
		t.Errorf("the ring's AnonHugePages after 16 MiB written: %d KiB, want at least 8 MiB", huge>>10)
	}
	runtime.KeepAlive(m)
}

// mappingField returns a size field (in bytes) of the mapping that holds
// addr, from /proc/self/smaps.
func mappingField(t *testing.T, addr uintptr, field string) int64 {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, field) {
			var kb int64
			if _, err := fmt.Sscan(strings.TrimPrefix(line, field), &kb); err != nil {
				t.Fatalf("smaps %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s for the mapping at %#x in smaps", field, addr)
	return 0
}

// selfRSS is this process's resident set in bytes.
func selfRSS(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, rss int64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		t.Fatal(err)
	}
	return rss * int64(os.Getpagesize())
}
