package main

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"sluice/config"
	"sluice/configs"
	"sluice/policy"
	"sluice/policy/queue"
	"sluice/policy/tokens"
	"sluice/proxy"
)

// family is what the catalogue says of one metric.
type family struct {
	typ    string
	labels []string
}

// recorder is a Registerer that notes the type and label names of every
// collector registered through it, then registers it on reg.
type recorder struct {
	reg      *prometheus.Registry
	families map[string]family
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	descConst  = regexp.MustCompile(`constLabels: \{([^}]*)\}`)
)

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	// A vector's type from its Go type: without children it is not
	// gathered.
	vecType := ""
	switch c.(type) {
	case *prometheus.CounterVec:
		vecType = "counter"
	case *prometheus.GaugeVec:
		vecType = "gauge"
	case *prometheus.HistogramVec:
		vecType = "histogram"
	case *prometheus.SummaryVec:
		vecType = "summary"
	}
	dc := make(chan *prometheus.Desc, 512)
	go func() { c.Describe(dc); close(dc) }()
	for d := range dc {
		s := d.String()
		name := descName.FindStringSubmatch(s)[1]
		var labels []string
		for _, re := range []*regexp.Regexp{descLabels, descConst} {
			if m := re.FindStringSubmatch(s); m != nil && m[1] != "" {
				for _, l := range strings.Split(m[1], ",") {
					l, _, _ = strings.Cut(strings.TrimSpace(l), "=")
					labels = append(labels, l)
				}
			}
		}
		sort.Strings(labels)
		// Plain metrics get their type from Gather (see types).
		r.families[name] = family{typ: vecType, labels: labels}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// registered builds Sluice as serve does, with every optional part on: the
// limiter, a tiered cache (memory in front of Redis, so both tiers register),
// the queue and JSONL transcripts. Nothing listens and Redis is never dialled.
func registered(t *testing.T) map[string]family {
	t.Helper()
	env := map[string]string{
		"SLUICE_CACHE_STORE":     "tiered",
		"SLUICE_REDIS_ADDR":      "127.0.0.1:1",
		"SLUICE_TRANSCRIPTS":     "jsonl",
		"SLUICE_TRANSCRIPTS_DIR": t.TempDir(),
		"SLUICE_SPOOL_DIR":       t.TempDir(),
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := config.Parse("sluice.yaml", configs.Sluice, lookup)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	rec := &recorder{reg: prometheus.NewRegistry(), families: map[string]family{}}
	// What serve does, in its order: the policy through a reloader (serve
	// -policies FILE), then the rest.
	polPath := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(polPath, configs.Policies, 0o600); err != nil {
		t.Fatal(err)
	}
	reloader, err := policy.NewReloader(policy.ReloaderOptions{Path: polPath, Apply: func(*policy.Policy) {},
		Registry: rec, Logger: log, LookupEnv: lookup})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := reloader.Load()
	if err != nil {
		t.Fatal(err)
	}
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rc, cacheRC := newRedisClients(cfg, log)
	if rc != nil {
		defer func() { _ = rc.Close() }()
	}
	if cacheRC != nil && cacheRC != rc {
		defer func() { _ = cacheRC.Close() }()
	}
	limiter, closeStore, err := newLimiter(cfg, rec, log, rc)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	defer limiter.Close()
	respCache, err := newCache(cfg, rec, log, cacheRC)
	if err != nil {
		t.Fatal(err)
	}
	budgets, fallback := limiter.Stores()
	if _, err := proxy.New(proxy.Options{Config: cfg, Policy: pol, Registry: rec, Logger: log, Version: buildVersion(),
		Limiter: limiter, Tokens: tokens.NewCounter(tokens.Options{}), Cache: respCache,
		BudgetStore: budgets, BudgetFallback: fallback, Replicas: pol.Replicas, QueueMetrics: queue.NewMetrics(rec)}); err != nil {
		t.Fatal(err)
	}
	transcripts, _, err := newSink(cfg, rec, log)
	if err != nil {
		t.Fatal(err)
	}
	if transcripts == nil {
		t.Fatal("transcripts off: the sink's metrics would not be checked")
	}
	defer func() { _ = transcripts.Stop(context.Background()) }()
	mfs, err := rec.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if f, ok := rec.families[mf.GetName()]; ok && f.typ == "" {
			f.typ = strings.ToLower(mf.GetType().String())
			rec.families[mf.GetName()] = f
		}
	}
	return rec.families
}

// catalogued reads the table of docs/metrics.md.
func catalogued(t *testing.T) (exact map[string]family, prefixes []string) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exact = map[string]family{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "<!-- catalogue:start -->"):
			in = true
			continue
		case strings.Contains(line, "<!-- catalogue:end -->"):
			in = false
		}
		if !in || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 7 {
			t.Errorf("docs/metrics.md: row without 5 cells: %s", line)
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if p, ok := strings.CutSuffix(name, "*"); ok {
			prefixes = append(prefixes, p)
			continue
		}
		var labels []string
		for _, l := range strings.Split(cells[3], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		sort.Strings(labels)
		if _, dup := exact[name]; dup {
			t.Errorf("docs/metrics.md: %s listed twice", name)
		}
		exact[name] = family{typ: strings.TrimSpace(cells[2]), labels: labels}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(exact) == 0 {
		t.Fatal("docs/metrics.md: no catalogue rows between the markers")
	}
	return exact, prefixes
}

// TestMetricCatalogue: docs/metrics.md and the registered collectors agree
// on names, types and label names, both ways.
func TestMetricCatalogue(t *testing.T) {
	got := registered(t)
	doc, prefixes := catalogued(t)
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fam := got[n]
		d, ok := doc[n]
		if !ok {
			if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(n, p) }) {
				t.Errorf("%s (%s, labels %v) is registered but not in docs/metrics.md", n, fam.typ, fam.labels)
			}
			continue
		}
		if d.typ != fam.typ {
			t.Errorf("%s: docs/metrics.md says %s, the code registers a %s", n, d.typ, fam.typ)
		}
		if !slices.Equal(d.labels, fam.labels) {
			t.Errorf("%s: docs/metrics.md lists labels %v, the code has %v", n, d.labels, fam.labels)
		}
		if !strings.HasPrefix(n, "sluice_") {
			t.Errorf("%s: Sluice's own metrics start with sluice_", n)
		}
		if fam.typ == "counter" && !strings.HasSuffix(n, "_total") {
			t.Errorf("%s: a counter's name ends in _total", n)
		}
	}
	for n := range doc {
		if _, ok := got[n]; !ok {
			t.Errorf("%s is in docs/metrics.md but Sluice does not register it", n)
		}
	}
	for _, p := range prefixes {
		if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, p) }) {
			t.Errorf("docs/metrics.md lists %s* but nothing registered starts with it", p)
		}
	}
	t.Logf("%d metric families registered, %d catalogued by name", len(got), len(doc))
}
