package sink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeWriter is a hand-written Writer: it keeps every batch it took, and
// fails while fail returns true.
type fakeWriter struct {
	mu      sync.Mutex
	batches [][]*Record
	fail    func() bool
	block   chan struct{} // when not nil, Write waits on it (or ctx)
	calls   int
}

var errFake = errors.New("fake writer down")

func (w *fakeWriter) Write(ctx context.Context, recs []*Record) error {
	w.mu.Lock()
	w.calls++
	block, fail := w.block, w.fail
	w.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil && fail() {
		return errFake
	}
	w.mu.Lock()
	w.batches = append(w.batches, recs)
	w.mu.Unlock()
	return nil
}

func (w *fakeWriter) Close() error { return nil }

func (w *fakeWriter) setFail(f func() bool) {
	w.mu.Lock()
	w.fail = f
	w.mu.Unlock()
}

// rows returns the request ids written, in order.
func (w *fakeWriter) rows() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []string
	for _, b := range w.batches {
		for _, r := range b {
			ids = append(ids, r.RequestID)
		}
	}
	return ids
}

func (w *fakeWriter) sizes() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n []int
	for _, b := range w.batches {
		n = append(n, len(b))
	}
	return n
}

// rec makes a record with request id "r<i>".
func rec(i int) *Record {
	t := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	return &Record{RequestID: fmt.Sprintf("r%06d", i), Start: t, End: t.Add(5 * time.Millisecond), User: fmt.Sprintf("u%d", i%7),
		KeyID: "k", Endpoint: "chat_completions", Model: "gpt-4o-mini", ModelRequested: "gpt-4o-mini", Status: 200,
		Request: `[{"role":"user","content":"hello ` + fmt.Sprint(i) + `"}]`, Response: "echo: hello", PromptTokens: 3,
		CompletionTokens: 4, TotalTokens: 7, LatencyMs: 5}
}

func newTestSink(t *testing.T, o Options) *Sink {
	t.Helper()
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func wantIDs(t *testing.T, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("got %d rows, want %d", len(got), n)
	}
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("row %s written twice", id)
		}
		seen[id] = true
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprintf("r%06d", i)] {
			t.Fatalf("row r%06d missing", i)
		}
	}
}
