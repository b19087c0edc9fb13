package sink

import (
	"context"
	"testing"
	"time"
)

// BenchmarkJSONLWrite writes batches of 1,000 transcript records (without
// fsync) to a JSONL file; ns/op is per record.
func BenchmarkJSONLWrite(b *testing.B) {
	j, err := NewJSONL(JSONLOptions{Dir: b.TempDir(), NoSync: true, MaxFileBytes: 1 << 40,
		Now: func() time.Time { return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC) }})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	batch := make([]*Record, 1000)
	for i := range batch {
		batch[i] = rec(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(batch) == 0 {
			if err := j.Write(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
		}
		i++
	}
}
