// Package dashboards holds Sluice's Grafana dashboards and Prometheus alert
// rules. Its test checks that every metric they query is one Sluice exports.
package dashboards

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"

	"sluice/cache"
	"sluice/config"
	"sluice/configs"
	"sluice/policy"
	"sluice/policy/limit"
	"sluice/policy/queue"
	"sluice/policy/tokens"
	"sluice/proxy"
	"sluice/sink"
)

// exported returns the metric family names a running Sluice exposes.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	cfg, err := config.Parse("sluice.yaml", configs.Sluice, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("policies.yaml", configs.Policies, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	defer mem.Close()
	limiter := policy.NewLimiter(policy.LimiterOptions{Store: mem, Registry: reg})
	cmem := cache.NewMemory(cache.MemoryOptions{})
	respCache, err := cache.New(cache.Options{Store: cmem, Memory: cmem, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.New(proxy.Options{Config: cfg, Policy: pol, Registry: reg, Logger: slog.New(slog.DiscardHandler),
		Limiter: limiter, Tokens: tokens.NewCounter(tokens.Options{}), Cache: respCache, QueueMetrics: queue.NewMetrics(reg)}); err != nil {
		t.Fatal(err)
	}
	sk, err := sink.New(sink.Options{Writer: discard{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Stop(context.Background()) //nolint:errcheck // a discard writer
	// Vectors without children are not gathered; their names come from
	// Describe.
	names := map[string]bool{}
	ch := make(chan *prometheus.Desc, 256)
	go func() { reg.Describe(ch); close(ch) }()
	descName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

var metricRef = regexp.MustCompile(`\b((?:sluice|process|go)_[a-z0-9_]+)`)

func checkExprs(t *testing.T, file string, exprs []string, names map[string]bool) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatalf("%s: no queries found", file)
	}
	for _, e := range exprs {
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			n := m[1]
			base := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suf)
			}
			if !names[n] && !names[base] {
				t.Errorf("%s: query uses %s, which Sluice does not export: %s", file, n, e)
			}
		}
	}
}

func TestDashboardsUseExportedMetrics(t *testing.T) {
	names := exported(t)
	files, _ := filepath.Glob("*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string `json:"uid"`
			Panels []struct {
				Title       string `json:"title"`
				FieldConfig struct {
					Defaults struct {
						Unit string `json:"unit"`
					} `json:"defaults"`
				} `json:"fieldConfig"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var exprs []string
		for _, p := range d.Panels {
			if p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: panel %q has no unit", f, p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
		checkExprs(t, f, exprs, names)
	}
}

func TestAlertRulesUseExportedMetrics(t *testing.T) {
	data, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("rule without a name or expression: %+v", r)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	checkExprs(t, "alerts.yaml", exprs, exported(t))
}

// discard is a sink writer that drops batches.
type discard struct{}

func (discard) Write(context.Context, []*sink.Record) error { return nil }
func (discard) Close() error                                { return nil }
