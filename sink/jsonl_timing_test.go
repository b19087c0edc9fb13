package sink

import (
	"context"
	"runtime"
	"strings"
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

// BenchmarkSinkStallOneP measures what the sink's goroutines cost other
// goroutines when the process has one P (a gateway pinned to one core): a
// goroutine standing in for request handling wakes every 200 µs while 2,000
// records (a second's transcripts at 2,000 req/s) go through the batcher
// (default redaction) and the JSONL shipper; max-late-ms is the longest it
// was kept waiting past its wake-up time.
func BenchmarkSinkStallOneP(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	next := stallWork(b)
	var worst time.Duration
	for b.Loop() {
		s, recs := next()
		stop := make(chan struct{})
		late := make(chan time.Duration)
		go func() {
			var max time.Duration
			for {
				select {
				case <-stop:
					late <- max
					return
				default:
				}
				t := time.Now()
				time.Sleep(200 * time.Microsecond)
				max = maxDur(max, time.Since(t)-200*time.Microsecond)
			}
		}()
		time.Sleep(time.Millisecond)
		for _, r := range recs {
			if !s.Enqueue(r) {
				b.Fatal("dropped")
			}
		}
		if err := s.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		close(stop)
		worst = maxDur(worst, <-late)
	}
	b.ReportMetric(float64(worst)/1e6, "max-late-ms")
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// stallWork returns what the stall benchmarks time, made fresh for each run:
// a sink with the default redaction in front of a JSONL shipper, and 2,000
// records with ~750-byte requests.
func stallWork(b *testing.B) func() (*Sink, []*Record) {
	j, err := NewJSONL(JSONLOptions{Dir: b.TempDir(), NoSync: true, MaxFileBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	red, _ := NewRedactor(DefaultRedactRules)
	return func() (*Sink, []*Record) {
		s, err := New(Options{Writer: keepOpen{j}, QueueSize: 4096, Redactor: red, FlushInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		recs := batchOf(0, 2000)
		for _, r := range recs {
			r.Request = `[{"role":"user","content":"` + strings.Repeat("word ", 150) + `"}]`
		}
		return s, recs
	}
}
