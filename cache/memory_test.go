package cache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// TestMemoryRingModel drives a small ring through many wraps with random
// sets, gets and deletes of random sizes, against a map of what was last
// written: a get returns exactly that value or nothing, an entry once gone
// never comes back, the newest entry is always there, and the byte and
// entry counts match the entries found.
func TestMemoryRingModel(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4} {
		rng := rand.New(rand.NewPCG(seed, 99))
		evicted := 0
		const maxBytes = 4000
		m := NewMemory(MemoryOptions{MaxBytes: maxBytes, OnEvict: func() { evicted++ }})
		ctx := context.Background()
		want := map[Key][]byte{} // what a get may return; absent: nothing
		sets := 0
		for i := range 20000 {
			k := keyOf(rng.IntN(64))
			switch op := rng.IntN(10); {
			case op < 5:
				v := bytes.Repeat([]byte{byte(i)}, rng.IntN(400))
				v = append(v, byte(i>>8), byte(i>>16))
				_ = m.Set(ctx, k, v, time.Hour)
				want[k] = v
				sets++
				if got, err := m.Get(ctx, k); err != nil || !bytes.Equal(got, v) {
					t.Fatalf("seed %d op %d: the entry just set: %v", seed, i, err)
				}
			case op < 9:
				got, err := m.Get(ctx, k)
				switch {
				case errors.Is(err, ErrNotFound):
					delete(want, k) // evicted: must stay gone
				case err != nil || !bytes.Equal(got, want[k]):
					t.Fatalf("seed %d op %d: get = %d bytes, %v; want %d bytes", seed, i, len(got), err, len(want[k]))
				}
			default:
				_ = m.Delete(ctx, k)
				delete(want, k)
			}
		}
		// Look at the ring without getting (a get may move an entry).
		b, n := m.Stats()
		var sum int64
		found := 0
		for k := range 64 {
			pos, ok := m.index[keyOf(k)]
			if v, live := want[keyOf(k)]; !live || !ok {
				if ok {
					t.Fatalf("seed %d: key %d is back", seed, k)
				}
				continue
			} else if rec := m.record(pos); !bytes.Equal(rec[entryOverhead:], v) || Key(rec[:keyEnd]) != keyOf(k) {
				t.Fatalf("seed %d: key %d's record differs", seed, k)
			}
			sum += int64(entryOverhead + len(want[keyOf(k)]))
			found++
		}
		if n != found || b != sum || b > maxBytes {
			t.Errorf("seed %d: stats %d bytes %d entries; found %d entries of %d bytes (bound %d)", seed, b, n, found, sum, maxBytes)
		}
		if evicted == 0 || evicted > sets {
			t.Errorf("seed %d: %d evictions for %d sets", seed, evicted, sets)
		}
	}
}

// TestMemoryEntriesOffHeap: a full 64 MiB store adds little to the Go heap,
// so the GC neither scans its entries nor grows the heap for them.
func TestMemoryEntriesOffHeap(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes the heap")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := NewMemory(MemoryOptions{})
	v := bytes.Repeat([]byte("x"), 600)
	n := DefaultMaxBytes / (entryOverhead + len(v))
	for i := range n {
		var k Key
		k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
		_ = m.Set(context.Background(), k, v, time.Hour)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	b, entries := m.Stats()
	t.Logf("%d entries, %d MiB held; Go heap grew by %.1f MiB", entries, b>>20, float64(heap)/(1<<20))
	if entries != n {
		t.Errorf("%d entries, want %d", entries, n)
	}
	if heap > 16<<20 {
		t.Errorf("the Go heap grew by %d MiB for %d MiB of entries", heap>>20, b>>20)
	}
	runtime.KeepAlive(m)
}

// BenchmarkMemoryFirstFill stores 1 KB entries into an empty 64 MiB store
// until it is full: the cost while a cache fills, first writes to its pages
// included (ns/put). The same puts into a full store cost ~0.35 us.
func BenchmarkMemoryFirstFill(b *testing.B) {
	v := bytes.Repeat([]byte("v"), 1000)
	const puts = (64 << 20) / (1000 + entryOverhead)
	for b.Loop() {
		b.StopTimer()
		m := NewMemory(MemoryOptions{MaxBytes: 64 << 20})
		b.StartTimer()
		for i := range puts {
			_ = m.Set(context.Background(), keyOf(i), v, time.Hour)
		}
		b.StopTimer()
		runtime.KeepAlive(m)
		runtime.GC() // the ring is unmapped by m's cleanup
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*puts), "ns/put")
}
