package cache

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"
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
