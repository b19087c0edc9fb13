package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sluice_requests_active is in flight minus the requests waiting for a
// budget, never negative.
func TestActiveGauge(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	queued := int64(0)
	g := m.newActiveGauge(func() int64 { return queued })
	m.inFlight.Add(10)
	if v := testutil.ToFloat64(g); v != 10 {
		t.Fatalf("nothing waiting: active %v, want 10", v)
	}
	m.userWaiting.Add(3)
	queued = 4
	if v := testutil.ToFloat64(g); v != 3 {
		t.Fatalf("3 waiting for a user slot, 4 in the fair queue: active %v, want 3", v)
	}
	queued = 20
	if v := testutil.ToFloat64(g); v != 0 {
		t.Fatalf("active %v, want 0 (never negative)", v)
	}
}
