package testkit

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const page = `# HELP sluice_requests_total Requests.
# TYPE sluice_requests_total counter
sluice_requests_total{route="chat",code="200"} 7
sluice_requests_total{route="chat",code="429"} 2
sluice_requests_total{route="embeddings",code="200"} 1
# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
# HELP sluice_wait_seconds Wait.
# TYPE sluice_wait_seconds histogram
sluice_wait_seconds_bucket{le="1"} 3
sluice_wait_seconds_bucket{le="+Inf"} 5
sluice_wait_seconds_sum 2.5
sluice_wait_seconds_count 5
`

func TestMetricsValue(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
		ok     bool
	}{
		{"sluice_requests_total", []string{`code="429"`}, 2, true},
		{"sluice_requests_total", []string{`route="embeddings"`, `code="200"`}, 1, true},
		{"sluice_requests_total", []string{`route="embeddings"`, `code="429"`}, 0, false},
		{"sluice_requests_total", []string{`route="chat"`}, 9, true}, // every matching sample: 7 + 2
		{"go_goroutines", nil, 42, true},
		{"sluice_wait_seconds", nil, 5, true},
		{"sluice_missing", nil, 0, false},
	} {
		got, ok := m.Value(c.name, c.labels...)
		if got != c.want || ok != c.ok {
			t.Errorf("Value(%s, %v) = %v, %v; want %v, %v", c.name, c.labels, got, ok, c.want, c.ok)
		}
	}
	if got := m.Sum("sluice_requests_total"); got != 10 {
		t.Errorf("Sum = %v, want 10", got)
	}
	if got := m.Sum("sluice_missing"); got != 0 {
		t.Errorf("Sum of a missing metric = %v, want 0", got)
	}
}

func TestParseMetricsRejectsBrokenText(t *testing.T) {
	if _, err := ParseMetrics(strings.NewReader("sluice_x{a=\"1\" 2\n")); err == nil {
		t.Fatal("a broken line parsed")
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(page))
	}))
	defer srv.Close()
	m, err := Scrape(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Value("go_goroutines"); v != 42 {
		t.Fatalf("go_goroutines = %v, want 42", v)
	}
	if _, err := Scrape(srv.URL + "/nope"); err == nil {
		t.Fatal("a 404 scraped without an error")
	}
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !Poll(time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Fatal("Poll gave up on a condition that holds on the third call")
	}
	start := time.Now()
	if Poll(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("Poll reported a condition that never holds")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("Poll gave up after %v, before its 50ms", d)
	}
}

// TestGather: a registry read in process gives the same families as a
// scrape, by name, with labels to select.
func TestGather(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"stage"})
	reg.MustRegister(c)
	c.WithLabelValues("a").Add(2)
	c.WithLabelValues("b").Add(3)
	m, err := Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Value("x_total", `stage="b"`); !ok || v != 3 {
		t.Fatalf("x_total{stage=b} = %v %v; want 3", v, ok)
	}
	if s := m.Sum("x_total"); s != 5 {
		t.Fatalf("sum %v; want 5", s)
	}
}
