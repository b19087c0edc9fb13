package e2e

import (
	"strings"
	"testing"
	"time"

	"sluice/internal/testkit"
)

// resources is what a Sluice process holds, read from its own metrics:
// goroutines (go_goroutines) and open file descriptors (process_open_fds:
// listeners, connections, files) other than the upstream pools' connections
// (sluice_upstream_connections), which stay open, idle, for
// upstreams[].idle_conn_timeout (4 s) after use and are bounded by the pool,
// not a leak.
type resources struct {
	goroutines float64
	fds        float64
}

// resources reads the process's goroutines and open file descriptors.
func (s *sluiceProc) resources(t *testing.T) resources {
	t.Helper()
	g, ok1 := s.metric(t, "go_goroutines")
	fd, ok2 := s.metric(t, "process_open_fds")
	if !ok1 || !ok2 {
		t.Fatal("go_goroutines or process_open_fds missing from /metrics")
	}
	return resources{goroutines: g, fds: fd - s.metricSum(t, "sluice_upstream_connections")}
}

// metricSum adds up every series of the metric name.
func (s *sluiceProc) metricSum(t *testing.T, name string) float64 {
	t.Helper()
	m, err := testkit.Scrape(s.AdminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return m.Sum(name)
}

// leakSlack is how far goroutines and descriptors may sit above the
// baseline once a scenario is over: the metrics scrape's own connection,
// the admin listener's keep-alive, and fasthttp's idle worker goroutines,
// which it parks for up to MaxIdleWorkerDuration (10 s) before ending them.
const leakSlack = 8

// checkSettled fails the test unless, within 30 s, the process's goroutines
// and open descriptors come back to within leakSlack of base: nothing a
// scenario started (a connection, a stream, a queued request, an upstream
// call) outlives it. It also fails on a panic or a Go fatal error in the
// process's output.
func (s *sluiceProc) checkSettled(t *testing.T, base resources) resources {
	t.Helper()
	var now resources
	deadline := time.Now().Add(30 * time.Second)
	for {
		now = s.resources(t)
		if now.goroutines <= base.goroutines+leakSlack && now.fds <= base.fds+leakSlack {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leak: goroutines %v (baseline %v), open fds %v (baseline %v) 30 s after the scenario",
				now.goroutines, base.goroutines, now.fds, base.fds)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.checkNoPanic(t)
	return now
}

// checkNoPanic fails the test when the process's output holds a panic, a
// Go fatal error or a data race report.
func (s *sluiceProc) checkNoPanic(t *testing.T) {
	t.Helper()
	out := s.Output()
	for _, bad := range []string{"panic:", "fatal error:", "WARNING: DATA RACE", "goroutine 1 ["} {
		if strings.Contains(out, bad) {
			i := strings.Index(out, bad)
			t.Fatalf("sluice output holds %q:\n%s", bad, out[max(0, i-200):min(len(out), i+2000)])
		}
	}
}
