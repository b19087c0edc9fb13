// Package dashboards holds Sluice's Grafana dashboards and Prometheus rules.
// Its tests check the dashboards' structure, that every metric a query or
// rule names is one Sluice exports, and that every alert has a promtool unit
// test (alerts_test.yaml, run by scripts/test.sh). e2e's
// TestPrometheusEvaluatesDashboardsAndRules evaluates them on a real
// Prometheus.
package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

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
	reg := prometheus.NewRegistry()
	// The policy comes through a reloader, as with serve -policies FILE.
	polPath := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(polPath, configs.Policies, 0o600); err != nil {
		t.Fatal(err)
	}
	reloader, err := policy.NewReloader(policy.ReloaderOptions{Path: polPath, Apply: func(*policy.Policy) {},
		Registry: reg, Logger: slog.New(slog.DiscardHandler), LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := reloader.Load()
	if err != nil {
		t.Fatal(err)
	}
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

// rule is one Prometheus rule of alerts.yaml.
type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// readRules returns the rules of alerts.yaml in file order.
func readRules(t *testing.T) []rule {
	t.Helper()
	data, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var out []rule
	for _, g := range file.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// recordedName matches the level:metric:operations names of recording rules.
var recordedName = regexp.MustCompile(`\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b`)

func TestAlertRulesUseExportedMetrics(t *testing.T) {
	names := exported(t)
	recorded := map[string]bool{}
	var exprs []string
	for _, r := range readRules(t) {
		if (r.Alert == "") == (r.Record == "") || r.Expr == "" {
			t.Errorf("rule needs exactly one of alert and record, and an expression: %+v", r)
		}
		if r.Record != "" {
			recorded[r.Record] = true
		}
		// A recorded series a rule reads must be recorded by an earlier rule.
		for _, n := range recordedName.FindAllString(r.Expr, -1) {
			if !recorded[n] {
				t.Errorf("rule %s%s reads %s, which no earlier recording rule records", r.Alert, r.Record, n)
			}
		}
		exprs = append(exprs, recordedName.ReplaceAllString(r.Expr, ""))
	}
	checkExprs(t, "alerts.yaml", exprs, names)
}

// TestEveryAlertUnitTested: alerts_test.yaml (run by promtool test rules in
// scripts/test.sh) has a firing case for every alert of alerts.yaml.
func TestEveryAlertUnitTested(t *testing.T) {
	data, err := os.ReadFile("alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, r := range readRules(t) {
		if r.Alert == "" {
			continue
		}
		n++
		if !fires[r.Alert] {
			t.Errorf("alert %s has no firing case in alerts_test.yaml", r.Alert)
		}
	}
	if n == 0 {
		t.Fatal("no alerts in alerts.yaml")
	}
}

// discard is a sink writer that drops batches.
type discard struct{}

func (discard) Write(context.Context, []*sink.Record) error { return nil }
func (discard) Close() error                                { return nil }

// board is the part of a Grafana dashboard the structure test reads.
type board struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		GridPos *struct {
			X, Y, W, H int
		} `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			RefID      string `json:"refId"`
			Expr       string `json:"expr"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

// wantBoards are the dashboards the SRE view is made of.
var wantBoards = []string{"sluice-overview.json", "sluice-limits-queue.json", "sluice-cache.json",
	"sluice-transcripts.json", "sluice-upstreams.json"}

// TestDashboardStructure: every dashboard has a uid and title of its own, a
// Prometheus datasource variable that every panel and query uses, unique
// panel ids, a unit, a grid position and at least one query on every panel,
// and unique refIds within a panel.
func TestDashboardStructure(t *testing.T) {
	files, _ := filepath.Glob("*.json")
	for _, w := range wantBoards {
		if !slices.Contains(files, w) {
			t.Errorf("dashboard %s is missing", w)
		}
	}
	uids := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d board
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid %q, title %q: both are required", f, d.UID, d.Title)
		}
		if prev, ok := uids[d.UID]; ok {
			t.Errorf("%s: uid %q already used by %s", f, d.UID, prev)
		}
		uids[d.UID] = f
		hasDS := false
		for _, v := range d.Templating.List {
			if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
				hasDS = true
			}
		}
		if !hasDS {
			t.Errorf("%s: no datasource variable (name datasource, type datasource, query prometheus)", f)
		}
		if len(d.Panels) == 0 {
			t.Errorf("%s: no panels", f)
		}
		ids := map[int]string{}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s: panel %d %q", f, p.ID, p.Title)
			if p.ID <= 0 {
				t.Errorf("%s: id must be positive", where)
			}
			if prev, ok := ids[p.ID]; ok {
				t.Errorf("%s: id already used by %q", where, prev)
			}
			ids[p.ID] = p.Title
			if p.Title == "" || p.Type == "" {
				t.Errorf("%s: title and type are required", where)
			}
			if p.FieldConfig.Defaults.Unit == "" {
				t.Errorf("%s: no unit (fieldConfig.defaults.unit)", where)
			}
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: bad or missing gridPos %+v", where, p.GridPos)
			}
			if p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource %+v, want the ${datasource} variable", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: query %q with refId %q (empty or repeated)", where, tg.Expr, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource.UID != "" && tg.Datasource.UID != "${datasource}" {
					t.Errorf("%s: query datasource %q, want ${datasource}", where, tg.Datasource.UID)
				}
			}
		}
	}
}

// githubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// punctuation other than '-' and '_' dropped, spaces as '-'.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// runbookURL is an alert's runbook_url: the runbooks file and an anchor.
var runbookURL = regexp.MustCompile(`^docs/runbooks\.md#([a-z0-9_-]+)$`)

// dashboardURL is an alert's dashboard_url: a Grafana path to one of the
// dashboards by uid, optionally with variables.
var dashboardURL = regexp.MustCompile(`^/d/([a-z0-9-]+)(\?.*)?$`)

// TestAlertsActionable: every alert has a severity (critical, warning,
// info), a summary, a description, a runbook_url whose anchor is a section
// of docs/runbooks.md, and a dashboard_url naming one of the dashboards; and
// every section of the runbooks belongs to an alert.
func TestAlertsActionable(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			sections[githubAnchor(h)] = true
		}
	}
	uids := map[string]bool{}
	for _, f := range wantBoards {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d board
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		uids[d.UID] = true
	}
	used := map[string]bool{}
	n := 0
	for _, r := range readRules(t) {
		if r.Alert == "" {
			continue
		}
		n++
		if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" && sev != "info" {
			t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, sev)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: no %s", r.Alert, a)
			}
		}
		if m := runbookURL.FindStringSubmatch(r.Annotations["runbook_url"]); m == nil {
			t.Errorf("alert %s: runbook_url %q is not docs/runbooks.md#section", r.Alert, r.Annotations["runbook_url"])
		} else if !sections[m[1]] {
			t.Errorf("alert %s: runbook_url %q: docs/runbooks.md has no section with anchor #%s", r.Alert, r.Annotations["runbook_url"], m[1])
		} else {
			used[m[1]] = true
		}
		if m := dashboardURL.FindStringSubmatch(r.Annotations["dashboard_url"]); m == nil {
			t.Errorf("alert %s: dashboard_url %q is not /d/UID", r.Alert, r.Annotations["dashboard_url"])
		} else if !uids[m[1]] {
			t.Errorf("alert %s: dashboard_url %q: no dashboard has uid %s", r.Alert, r.Annotations["dashboard_url"], m[1])
		}
	}
	if n == 0 {
		t.Fatal("no alerts in alerts.yaml")
	}
	for s := range sections {
		if !used[s] {
			t.Errorf("docs/runbooks.md: section #%s belongs to no alert", s)
		}
	}
}

// oncallBoard is the part of a dashboard TestDashboardsForOnCall reads.
type oncallBoard struct {
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title       string                   `json:"title"`
		Type        string                   `json:"type"`
		GridPos     struct{ X, Y, W, H int } `json:"gridPos"`
		FieldConfig struct {
			Defaults struct {
				Unit       string `json:"unit"`
				Thresholds *struct {
					Steps []struct {
						Color string   `json:"color"`
						Value *float64 `json:"value"`
					} `json:"steps"`
				} `json:"thresholds"`
				Mappings []any    `json:"mappings"`
				Max      *float64 `json:"max"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// boardVars are the variables each dashboard must have: job and instance
// everywhere, upstream and tier where their metrics are.
var boardVars = map[string][]string{
	"sluice-overview.json":     {"datasource", "job", "instance", "tier"},
	"sluice-limits-queue.json": {"datasource", "job", "instance", "upstream", "tier"},
	"sluice-cache.json":        {"datasource", "job", "instance"},
	"sluice-transcripts.json":  {"datasource", "job", "instance"},
	"sluice-upstreams.json":    {"datasource", "job", "instance", "upstream"},
}

// TestDashboardsForOnCall: every panel has thresholds chosen for it (not
// Grafana's default green, red at 80), 0-1 ratios have a max of 1 and
// thresholds inside it, 0/1 health gauges have value mappings; the variables
// are there and every query filters by instance; policy reloads are
// annotated; the overview's first row answers "is it healthy"; and every
// metric of docs/metrics.md has a panel.
func TestDashboardsForOnCall(t *testing.T) {
	all := ""
	for _, f := range wantBoards {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d oncallBoard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var names []string
		for _, v := range d.Templating.List {
			names = append(names, v.Name)
		}
		for _, want := range boardVars[f] {
			if !slices.Contains(names, want) {
				t.Errorf("%s: no %s variable (has %v)", f, want, names)
			}
		}
		reloads := false
		for _, a := range d.Annotations.List {
			if strings.Contains(a.Expr, "sluice_policy_") {
				reloads = true
			}
		}
		if !reloads {
			t.Errorf("%s: no annotation for policy reloads", f)
		}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s: panel %q", f, p.Title)
			def := p.FieldConfig.Defaults
			if def.Thresholds == nil || len(def.Thresholds.Steps) == 0 {
				t.Errorf("%s: no thresholds (Grafana's default is green, red at 80)", where)
				continue
			}
			steps := def.Thresholds.Steps
			if len(steps) == 2 && steps[1].Value != nil && *steps[1].Value == 80 {
				t.Errorf("%s: Grafana's default thresholds (red at 80)", where)
			}
			if def.Unit == "percentunit" && len(steps) > 1 {
				if def.Max == nil || *def.Max != 1 {
					t.Errorf("%s: a 0-1 ratio with thresholds needs max 1", where)
				}
				for _, s := range steps[1:] {
					if s.Value == nil || *s.Value <= 0 || *s.Value > 1 {
						t.Errorf("%s: threshold %v outside the ratio's 0-1", where, s.Value)
					}
				}
			}
			if def.Unit == "bool_yes_no" && len(def.Mappings) == 0 {
				t.Errorf("%s: a 0/1 health gauge needs value mappings", where)
			}
			for _, tg := range p.Targets {
				all += tg.Expr + "\n"
				if strings.Contains(tg.Expr, `job=~"$job"`) && !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("%s: query does not filter by $instance: %s", where, tg.Expr)
				}
			}
		}
		if f == "sluice-overview.json" {
			var first []string
			for _, p := range d.Panels {
				if p.GridPos.Y == 0 {
					first = append(first, p.Title)
					if p.Type != "stat" {
						t.Errorf("%s: first row panel %q is a %s; want stat", f, p.Title, p.Type)
					}
				}
			}
			for _, want := range []string{"Targets down", "Error ratio (5xx)", "429 ratio", "Time to first token p95"} {
				if !slices.Contains(first, want) {
					t.Errorf("%s: first row %v lacks %q", f, first, want)
				}
			}
		}
	}
	data, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	catalogued := regexp.MustCompile("(?m)^\\| `(sluice_[a-z0-9_]+)`").FindAllStringSubmatch(string(data), -1)
	if len(catalogued) < 50 {
		t.Fatalf("only %d metrics read from docs/metrics.md", len(catalogued))
	}
	for _, m := range catalogued {
		if !regexp.MustCompile(`\b` + m[1] + `(_bucket|_count|_sum)?\b`).MatchString(all) {
			t.Errorf("metric %s has no panel", m[1])
		}
	}
}
