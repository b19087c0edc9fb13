//go:build !race

package queue

import (
	"testing"
	"time"

	"sluice/policy/limit"
)

// TestAcquireFastPathAllocs fails when granting with nobody waiting starts
// allocating (the race detector allocates, hence the build tag).
func TestAcquireFastPathAllocs(t *testing.T) {
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	s := New(Options{Name: "allocs", Budget: Budget{RPM: 1 << 40, TPM: 1 << 40, Concurrent: 1 << 20}, Store: mem})
	defer s.Close()
	deadline := time.Now().Add(time.Hour)
	run := func() {
		tk := NewTicket()
		tk.Flow, tk.Tokens, tk.Deadline, tk.ID = "u", 100, deadline, "req-1"
		if ok, err := s.Acquire(tk); !ok || err != nil {
			t.Fatal(ok, err)
		}
		s.Done(tk, 80)
	}
	run() // first use creates the buckets
	if n := testing.AllocsPerRun(1000, run); n != 0 {
		t.Fatalf("Acquire + Done allocates %v times, want 0", n)
	}
}
