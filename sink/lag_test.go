package sink

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gaugeValue reads a gauge family's value from reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

// TestLagAndFill: while the writer is stuck, sluice_sink_lag_seconds is the
// age of the oldest record not yet written and grows; the queue's fill
// ratio counts what waits behind it; both fall back to 0 once the writer
// takes the batches.
func TestLagAndFill(t *testing.T) {
	w := &fakeWriter{block: make(chan struct{})}
	reg := prometheus.NewRegistry()
	s := newTestSink(t, Options{Writer: w, Registry: reg, BatchRows: 1, QueueSize: 10, FlushInterval: 10 * time.Millisecond})
	if v := gaugeValue(t, reg, "sluice_sink_lag_seconds"); v != 0 {
		t.Fatalf("idle lag %v; want 0", v)
	}
	for i := range 6 {
		r := rec(i)
		r.End = time.Now().Add(-2 * time.Second) // the exchange ended 2 s ago
		if !s.Enqueue(r) {
			t.Fatalf("record %d dropped", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for gaugeValue(t, reg, "sluice_sink_lag_seconds") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("lag %v with the writer stuck on a 2 s old record; want at least 2", gaugeValue(t, reg, "sluice_sink_lag_seconds"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// One batch in the writer, one in the hand-off, one with the batcher:
	// the rest wait in the queue of 10.
	if f := gaugeValue(t, reg, "sluice_sink_queue_fill_ratio"); f <= 0 || f > 1 {
		t.Errorf("fill ratio %v with records queued; want in (0, 1]", f)
	}
	close(w.block)
	// The writer records a batch just before its write returns: wait for
	// the lag to drop as well.
	for len(w.rows()) < 6 || gaugeValue(t, reg, "sluice_sink_lag_seconds") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows written, lag %v; want 6 and 0", len(w.rows()), gaugeValue(t, reg, "sluice_sink_lag_seconds"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f := gaugeValue(t, reg, "sluice_sink_queue_fill_ratio"); f != 0 {
		t.Errorf("fill ratio %v with an empty queue; want 0", f)
	}
	_ = s.Stop(context.Background())
}
