package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.yaml.in/yaml/v3"

	"sluice/fakeai"
	"sluice/internal/testkit"
)

// promConfig: one budgeted upstream that lets two calls run at once (so a
// burst queues at the provider stage), with a pool of two keys, and one that is unreachable (upstream
// errors) for models named dead-*; JSONL transcripts, the memory cache, the
// access log on.
const promConfig = `
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  access_log: true
  shutdown_timeout: 5s
upstreams:
  - name: fake
    base_url: ${OPENAI_BASE_URL}
    keys:
      - {id: first, api_key: "${OPENAI_API_KEY}"}
      - {id: second, api_key: "${OPENAI_API_KEY}"}
    max_attempts: 2
    budget: {concurrent: 2}
  - name: dead
    base_url: http://127.0.0.1:1/v1
    api_key: ${OPENAI_API_KEY}
    max_attempts: 1
    timeouts: {connect: 1s}
routes:
  - model: "dead-*"
    upstream: dead
  - model: "*"
    upstream: fake
cache:
  store: memory
transcripts:
  mode: jsonl
`

// promPolicy: demo may wait 10 s, under a daily budget far from spent; the
// app key's tier allows two requests a minute and never waits (rejections);
// the broke key's budget cannot pay for any request (budget refusals).
func promPolicy() string {
	return fmt.Sprintf(`
prices:
  "*": {input: 0.15, output: 0.60}
tiers:
  users:
    max_wait: 10s
    max_queue: 100
    budget: {daily_usd: 1000}
  tight:
    rpm: 2
    shadow: {rpm: 1}
  broke:
    budget: {daily_usd: 0.000001}
keys:
  - id: broke
    sha256: %s
    user: broke-user
    tier: broke
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: users
  - id: tight
    sha256: %s
    user: tight-user
    tier: tight
`, sha256Hex(brokeKey), sha256Hex(appKey))
}

// brokeKey is the key of the prometheus test's user whose budget is spent.
const brokeKey = "sk-sluice-broke-e2e-5a4b3c2d1e0f"

// TestPrometheusEvaluatesDashboardsAndRules runs a Sluice under a short mixed
// load (plain chats, streams, cache hits, provider queueing, limiter
// rejections, upstream 429s and an unreachable upstream, transcripts to
// JSONL) scraped every second by a real Prometheus (scripts/services.sh
// start_prometheus), then evaluates every query of every dashboard panel and
// every rule of dashboards/alerts.yaml over the HTTP API: each must be valid
// and return at least one series. An alert's expression is also evaluated
// without its final threshold, since a healthy load must not fire it.
func TestPrometheusEvaluatesDashboardsAndRules(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Prometheus: skipped under -short")
	}
	promURL, targets := os.Getenv("SLUICE_TEST_PROMETHEUS"), os.Getenv("SLUICE_TEST_PROMETHEUS_TARGETS")
	if promURL == "" || targets == "" {
		t.Skip("SLUICE_TEST_PROMETHEUS and SLUICE_TEST_PROMETHEUS_TARGETS unset (scripts/test.sh starts Prometheus: start_prometheus)")
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey, Latency: 20 * time.Millisecond})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: promConfig, Policies: promPolicy()})
	admin := strings.TrimPrefix(s.AdminURL, "http://")

	// Hand the target to Prometheus (file_sd, re-read every second).
	target := filepath.Join(targets, fmt.Sprintf("sluice-%d.json", os.Getpid()))
	writeFile(t, target, fmt.Sprintf(`[{"targets": [%q], "labels": {"test": "prometheus_e2e"}}]`, admin))
	t.Cleanup(func() { _ = os.Remove(target) })
	prom := &promClient{base: promURL, hc: &http.Client{Timeout: 10 * time.Second}}
	waitUntil(t, 20*time.Second, "Prometheus scraping "+admin, func() bool {
		n, _ := prom.count(fmt.Sprintf(`up{job="sluice",instance=%q} == 1`, admin))
		return n > 0
	})

	mixedLoad(t, s)

	// Every scrape is one second apart and rules are evaluated every second:
	// wait until Prometheus has seen the end of the load, then for the
	// recording rules to catch up.
	hits, _ := s.metric(t, "sluice_cache_hits_total")
	waitUntil(t, 20*time.Second, "Prometheus to see the load", func() bool {
		v, ok := prom.scalar(fmt.Sprintf(`sum(sluice_cache_hits_total{instance=%q})`, admin))
		return ok && v >= hits
	})
	time.Sleep(3 * time.Second)

	// Grafana's variables, made concrete. One minute covers the whole load.
	// The instance, upstream and tier variables at "All" (their allValue).
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__range", "1m", "$__interval", "1s",
		"${datasource}", "", "$datasource", "", "$job", "sluice",
		"$instance", ".*", "$upstream", ".*", "$tier", ".*")
	var exprs []promExpr
	files, _ := filepath.Glob(filepath.Join(moduleRoot, "dashboards", "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	for _, f := range files {
		exprs = append(exprs, dashboardExprs(t, f)...)
	}
	panelExprs := len(exprs)
	rules := ruleExprs(t, filepath.Join(moduleRoot, "dashboards", "alerts.yaml"))
	exprs = append(exprs, rules...)

	nan := 0
	for _, e := range exprs {
		q := vars.Replace(e.expr)
		res, err := prom.query(q)
		if err != nil {
			t.Errorf("%s: invalid: %v\n  %s", e.where, err, q)
			continue
		}
		if e.mayBeEmpty {
			continue
		}
		if len(res) == 0 {
			t.Errorf("%s: no series\n  %s", e.where, q)
			continue
		}
		allNaN := true
		for _, r := range res {
			if !math.IsNaN(r) {
				allNaN = false
			}
		}
		if allNaN {
			nan++
			t.Logf("%s: only NaN (no observation in the window)\n  %s", e.where, q)
		}
	}
	// Prometheus itself evaluated the rules file every second: no rule may
	// report an error.
	health := prom.ruleHealth(t)
	for name, h := range health {
		if h != "" {
			t.Errorf("rule %s: Prometheus reports %s", name, h)
		}
	}
	t.Logf("evaluated %d panel and variable queries of %d dashboards and %d rule expressions (%d rules evaluated by Prometheus itself, all healthy); %d gave only NaN",
		panelExprs, len(files), len(rules), len(health), nan)
}

// mixedLoad drives Sluice for a few seconds: every kind of request the
// dashboards and rules describe.
func mixedLoad(t *testing.T, s *sluiceProc) {
	t.Helper()
	ctx := testContext(t, 60*time.Second)
	demo := s.client(demoKey)
	tight := s.client(appKey)
	chat := func(c *openai.Client, model, prompt string, temp float64, opts ...option.RequestOption) error {
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: model, Messages: userMessages(prompt), MaxTokens: openai.Int(8), Temperature: openai.Float(temp),
		}, opts...)
		return err
	}
	// Plain chats (temperature 1: not cacheable) and embeddings.
	for i := range 10 {
		if err := chat(demo, "gpt-4o-mini", fmt.Sprintf("plain %d %s", i, nonce()), 1); err != nil {
			t.Fatalf("plain chat: %v", err)
		}
	}
	if _, err := demo.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "text-embedding-3-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed " + nonce())}}); err != nil {
		t.Fatalf("embedding: %v", err)
	}
	// Cache: one miss, then hits.
	p := "cached " + nonce()
	for range 5 {
		if err := chat(demo, "gpt-4o-mini", p, 0); err != nil {
			t.Fatalf("cacheable chat: %v", err)
		}
	}
	// Streams with usage: ten, so the rate over five minutes passes the
	// time-to-first-token alert's guard (0.02 streams/s).
	for i := range 10 {
		st := demo.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages(fmt.Sprintf("stream %d %s", i, nonce())), MaxTokens: openai.Int(8),
			Temperature:   openai.Float(1),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		for st.Next() {
		}
		if err := st.Err(); err != nil {
			t.Fatalf("stream: %v", err)
		}
	}
	// Provider queueing: 8 slow calls at once against a budget of 2.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if err := chat(demo, "gpt-4o-mini", fmt.Sprintf("queued %d %s", i, nonce()), 1,
				option.WithHeader(fakeai.HeaderLatency, "300ms")); err != nil {
				t.Errorf("queued chat: %v", err)
			}
		})
	}
	wg.Wait()
	// Limiter rejections: the tight tier allows 2 a minute.
	rejected := 0
	for i := range 4 {
		if _, limited := rateLimited(chat(tight, "gpt-4o-mini", fmt.Sprintf("tight %d", i), 1)); limited {
			rejected++
		}
	}
	if rejected == 0 {
		t.Fatal("the tight tier rejected nothing")
	}
	// A budget refusal: no request fits the broke key's budget.
	if e, limited := rateLimited(chat(s.client(brokeKey), "gpt-4o-mini", "broke "+nonce(), 1)); !limited || e.Code != "insufficient_quota" {
		t.Fatalf("the broke key's request: %v", e)
	}
	// Upstream 429s (retried once, then passed on) and an unreachable upstream.
	for range 2 {
		err := chat(demo, "gpt-4o-mini", "throttled "+nonce(), 1,
			option.WithHeader(fakeai.HeaderStatus, "429"), option.WithHeader(fakeai.HeaderRetryAfterMs, "20"))
		if err == nil {
			t.Fatal("an injected upstream 429 was answered 200")
		}
		if err := chat(demo, "dead-model", "dead "+nonce(), 1); err == nil {
			t.Fatal("a call to an unreachable upstream was answered 200")
		}
	}
	// A client that leaves a slow answer.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, _ = demo.Chat.Completions.New(short, openai.ChatCompletionNewParams{Model: "gpt-4o-mini",
		Messages: userMessages("gone " + nonce()), MaxTokens: openai.Int(8)}, option.WithHeader(fakeai.HeaderLatency, "1s"))
	cancel()
	if v, _ := s.metric(t, "sluice_sink_enqueued_total"); v == 0 {
		t.Fatal("no transcript enqueued")
	}
	// Tokens by direction, tier and model group (the routes[].model pattern).
	for _, dir := range []string{"prompt", "completion"} {
		if v, _ := s.metric(t, "sluice_tokens_total", `direction="`+dir+`"`, `tier="users"`, `model_group="*"`); v == 0 {
			t.Errorf(`sluice_tokens_total{direction=%q,tier="users",model_group="*"} is 0 after the load`, dir)
		}
	}
}

// promExpr is one PromQL expression and where it comes from.
type promExpr struct {
	where, expr string
	// mayBeEmpty: an alert's whole expression, which a healthy load must
	// not fire; it is evaluated for validity only (its threshold-free part
	// is checked for series).
	mayBeEmpty bool
}

func dashboardExprs(t *testing.T, file string) []promExpr {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []promExpr
	base := filepath.Base(file)
	// Grafana's label_values(metric, label) variable queries, as PromQL.
	for _, v := range d.Templating.List {
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		if m := labelValues.FindStringSubmatch(s); m != nil {
			out = append(out, promExpr{where: fmt.Sprintf("%s: variable %s", base, v.Name),
				expr: fmt.Sprintf("count by (%s) (%s)", m[2], m[1])})
		} else if s != "" {
			t.Errorf("%s: variable %s: query %q is not label_values(metric, label)", base, v.Name, s)
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, promExpr{where: fmt.Sprintf("%s: panel %q %s", base, p.Title, tg.RefID), expr: tg.Expr})
		}
	}
	// Annotation queries mark events (a policy reload): the whole query is
	// evaluated for validity, its part before the final threshold must
	// return series.
	for _, a := range d.Annotations.List {
		if a.Expr == "" {
			continue
		}
		signal := threshold.ReplaceAllString(a.Expr, "")
		if signal == a.Expr {
			t.Errorf("%s: annotation %s: no final threshold: %s", base, a.Name, a.Expr)
		}
		out = append(out, promExpr{where: fmt.Sprintf("%s: annotation %q", base, a.Name), expr: a.Expr, mayBeEmpty: true},
			promExpr{where: fmt.Sprintf("%s: annotation %q without its threshold", base, a.Name), expr: signal})
	}
	return out
}

// labelValues matches a Grafana variable query label_values(metric, label).
var labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// absentArg matches an alert expression absent(x) and captures x.
var absentArg = regexp.MustCompile(`^absent\((.+)\)$`)

// threshold is an alert expression's final comparison with a number.
var threshold = regexp.MustCompile(`\s*(==|!=|>=|<=|>|<)\s*[0-9.e+-]+\s*$`)

func ruleExprs(t *testing.T, file string) []promExpr {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var out []promExpr
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			expr := strings.TrimSpace(r.Expr)
			if r.Record != "" {
				out = append(out, promExpr{where: "record " + r.Record, expr: expr},
					promExpr{where: "recorded series " + r.Record, expr: r.Record})
				continue
			}
			signal := threshold.ReplaceAllString(expr, "")
			// absent(x) has no threshold: it returns a series only when x
			// has none, so x itself must return series.
			if m := absentArg.FindStringSubmatch(expr); m != nil {
				signal = m[1]
			}
			if signal == expr {
				t.Errorf("alert %s: no final threshold to strip: %s", r.Alert, expr)
			}
			out = append(out, promExpr{where: "alert " + r.Alert, expr: expr, mayBeEmpty: true},
				promExpr{where: "alert " + r.Alert + " without its threshold", expr: signal})
		}
	}
	return out
}

// promClient queries Prometheus's HTTP API.
type promClient struct {
	base string
	hc   *http.Client
}

// query evaluates an instant query now and returns the sample values.
func (p *promClient) query(q string) ([]float64, error) {
	resp, err := p.hc.Get(p.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("status %d: %w", resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", r.Data.ResultType)
	}
	out := make([]float64, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		var v float64
		switch str {
		case "NaN":
			v = math.NaN()
		case "+Inf":
			v = math.Inf(1)
		case "-Inf":
			v = math.Inf(-1)
		default:
			if _, err := fmt.Sscan(str, &v); err != nil {
				return nil, fmt.Errorf("sample value %q: %w", str, err)
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func (p *promClient) count(q string) (int, error) {
	r, err := p.query(q)
	return len(r), err
}

func (p *promClient) scalar(q string) (float64, bool) {
	r, err := p.query(q)
	if err != nil || len(r) != 1 {
		return 0, false
	}
	return r[0], true
}

// ruleHealth returns every loaded rule's last evaluation error ("" when
// healthy), by rule name.
func (p *promClient) ruleHealth(t *testing.T) map[string]string {
	t.Helper()
	resp, err := p.hc.Get(p.base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, g := range r.Data.Groups {
		for _, rl := range g.Rules {
			if rl.Health == "ok" {
				out[rl.Name] = ""
			} else {
				out[rl.Name] = rl.Health + " " + rl.LastError
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("Prometheus loaded no rules: is dashboards/alerts.yaml in its rule_files?")
	}
	return out
}

// waitUntil polls cond every 200 ms until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !testkit.PollEvery(d, 200*time.Millisecond, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
