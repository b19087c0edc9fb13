package testkit

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one reading of a /metrics page, by metric family name.
type Metrics map[string]*dto.MetricFamily

// ParseMetrics reads the Prometheus text exposition format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	return Metrics(fams), nil
}

// Scrape GETs url (a /metrics address) and parses the answer. A status
// other than 200 is an error.
func Scrape(url string) (Metrics, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	m, err := ParseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return m, nil
}

// Gather reads a registry (or any Gatherer) in process, as Scrape reads a
// /metrics page.
func Gather(g prometheus.Gatherer) (Metrics, error) {
	fams, err := g.Gather()
	if err != nil {
		return nil, err
	}
	m := make(Metrics, len(fams))
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m, nil
}

// Value returns the sum of the samples of name whose labels include every
// one of labels, each written as in the exposition (`route="chat"`), and
// whether there is one (several match a partial label set, such as the codes
// of one status_class). A counter, gauge or untyped sample reads as its
// value; a histogram or summary as its sample count.
func (m Metrics) Value(name string, labels ...string) (float64, bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
	want := make(map[string]string, len(labels))
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			panic(fmt.Sprintf("testkit: label %q is not name=\"value\"", l))
		}
		want[k] = strings.Trim(v, `"`)
	}
	var sum float64
	found := false
	for _, s := range f.GetMetric() {
		if hasLabels(s, want) {
			sum, found = sum+sampleValue(s), true
		}
	}
	return sum, found
}

// Sum adds up every sample of name (0 when there is none).
func (m Metrics) Sum(name string) float64 {
	var sum float64
	for _, s := range m[name].GetMetric() {
		sum += sampleValue(s)
	}
	return sum
}

func hasLabels(s *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range s.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

func sampleValue(s *dto.Metric) float64 {
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	case s.Untyped != nil:
		return s.Untyped.GetValue()
	case s.Histogram != nil:
		return float64(s.Histogram.GetSampleCount())
	case s.Summary != nil:
		return float64(s.Summary.GetSampleCount())
	}
	return 0
}
