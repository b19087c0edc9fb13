package queue

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsForgetTier(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, tier := range []string{"free", "pro"} {
		m.Outcome(StageUser, tier, "served")
		m.Outcome(StageProvider, tier, "expired")
		m.Wait(StageProvider, tier, time.Second)
		m.Waiting(StageProvider, tier, 1)
	}
	if n := testutil.CollectAndCount(m.outcomes); n != 4 {
		t.Fatalf("%d outcome series before, want 4", n)
	}
	m.ForgetTier("pro")
	if n := testutil.CollectAndCount(m.outcomes); n != 2 {
		t.Fatalf("%d outcome series after forgetting pro, want free's 2", n)
	}
	if n := testutil.CollectAndCount(m.waitHist); n != 1 {
		t.Fatalf("%d wait series after forgetting pro, want free's 1", n)
	}
	if n := testutil.CollectAndCount(m.depth); n != 2 {
		t.Fatalf("%d depth series, want both kept (waiting requests take themselves off)", n)
	}
	if v := testutil.ToFloat64(m.outcomes.WithLabelValues(StageUser, "free", "served")); v != 1 {
		t.Fatalf("free's served count %v after forgetting pro, want 1", v)
	}
	var none *Metrics
	none.ForgetTier("pro") // a nil *Metrics records nothing
}
