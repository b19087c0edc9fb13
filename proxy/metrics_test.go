package proxy

import (
	"net"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// TestUsedTokens: usage is counted by direction, tier and model group, one
// pair of children per tier and group.
func TestUsedTokens(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	m.usedTokens("free", "gpt-4o*", usage{prompt: 10, completion: 3, ok: true}, 0.25)
	m.usedTokens("free", "gpt-4o*", usage{prompt: 5, completion: 2, ok: true}, 0.5)
	m.usedTokens("pro", "*", usage{prompt: 1, completion: 1, ok: true}, 0)
	for _, c := range []struct {
		dir, tier, group string
		want             float64
	}{{"prompt", "free", "gpt-4o*", 15}, {"completion", "free", "gpt-4o*", 5}, {"prompt", "pro", "*", 1}} {
		if got := testutil.ToFloat64(m.tokens.WithLabelValues(c.dir, c.tier, c.group)); got != c.want {
			t.Errorf("sluice_tokens_total{%s,%s,%s} = %v; want %v", c.dir, c.tier, c.group, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.tokens); n != 4 {
		t.Errorf("%d children; want 4 (two directions × two tier/group pairs)", n)
	}
	if got := testutil.ToFloat64(m.spend.WithLabelValues("free", "gpt-4o*")); got != 0.75 {
		t.Errorf("sluice_spend_usd_total{free,gpt-4o*} = %v; want 0.75", got)
	}
}

// TestForgetTiers: the series of a tier a reload removed are deleted, the
// others kept.
func TestForgetTiers(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	m.usedTokens("free", "gpt-4o*", usage{prompt: 1, completion: 1, ok: true}, 0.5)
	m.usedTokens("gone", "gpt-4o*", usage{prompt: 1, completion: 1, ok: true}, 0.5)
	m.routedRequest("free", "gpt-4o*", "hit", 200)
	m.routedRequest("gone", "gpt-4o*", "hit", 200)
	m.forgetTiers(func(tier string) bool { return tier == "free" })
	if n := testutil.CollectAndCount(m.tokens) + testutil.CollectAndCount(m.spend) + testutil.CollectAndCount(m.routed); n != 4 {
		t.Fatalf("%d children after the reload; want 4 (free's tokens ×2, spend, routed)", n)
	}
	if len(m.tokenPairs) != 1 || len(m.routedBy) != 1 {
		t.Fatalf("cached handles: %d token pairs, %d routed; want 1 and 1", len(m.tokenPairs), len(m.routedBy))
	}
	m.usedTokens("gone", "gpt-4o*", usage{prompt: 1, completion: 1, ok: true}, 0)
	if got := testutil.ToFloat64(m.tokens.WithLabelValues("prompt", "gone", "gpt-4o*")); got != 1 {
		t.Fatalf("a tier added back starts again at %v; want 1", got)
	}
}

func TestRoutedRequest(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	m.routedRequest("free", "gpt-4o*", "hit", 200)
	m.routedRequest("free", "gpt-4o*", "hit", 200)
	m.routedRequest("free", "gpt-4o*", "", 502)
	if got := testutil.ToFloat64(m.routed.WithLabelValues("free", "gpt-4o*", "hit", "2xx")); got != 2 {
		t.Errorf("hits = %v; want 2", got)
	}
	if got := testutil.ToFloat64(m.routed.WithLabelValues("free", "gpt-4o*", "none", "5xx")); got != 1 {
		t.Errorf("uncached 5xx = %v; want 1", got)
	}
	if n := testing.AllocsPerRun(50, func() { m.routedRequest("free", "gpt-4o*", "hit", 200) }); n != 0 && !raceEnabled {
		t.Errorf("routedRequest allocates %v times per call; want 0", n)
	}
}

// TestRequestCodes: finished requests are counted by their status code when
// it is one of the fixed list, else as "other" within their class; the
// children exist from the start and counting allocates nothing.
func TestRequestCodes(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	for _, st := range []int{200, 200, 429, 401, 418, 503, 599, 0, 1000} {
		m.done(epChat, st, 0.1)
	}
	route := endpointLabels[epChat]
	for _, c := range []struct {
		code, class string
		want        float64
	}{{"200", "2xx", 2}, {"429", "4xx", 1}, {"401", "4xx", 1}, {"other", "4xx", 1}, {"503", "5xx", 1},
		{"other", "5xx", 1}, {"other", "other", 2}, {"400", "4xx", 0}} {
		if got := testutil.ToFloat64(m.requests[epChat][slotOf(t, c.code, c.class)]); got != c.want {
			t.Errorf("sluice_requests_total{route=%q,code=%q,status_class=%q} = %v; want %v", route, c.code, c.class, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(50, func() { m.done(epChat, 429, 0.1) }); n != 0 && !raceEnabled {
		t.Errorf("done allocates %v times per call; want 0", n)
	}
}

// slotOf finds the code slot with these label values.
func slotOf(t *testing.T, code, class string) int {
	t.Helper()
	for slot := range codeCount {
		if c, cl := codeLabels(slot); c == code && cl == class {
			return slot
		}
	}
	t.Fatalf("no code slot %s/%s", code, class)
	return 0
}

// TestCodeSlotsBounded: every status maps to a slot whose class matches the
// status's, so code and status_class never disagree, and the slots are few.
func TestCodeSlotsBounded(t *testing.T) {
	if codeCount > 32 {
		t.Fatalf("%d code slots; the code label must stay small", codeCount)
	}
	for st := -1; st < 700; st++ {
		code, class := codeLabels(codeSlot(st))
		if want := statusClasses[statusClass(st)]; class != want {
			t.Errorf("status %d: class %q, want %q", st, class, want)
		}
		if code != "other" && code != strconv.Itoa(st) {
			t.Errorf("status %d counted as code %s", st, code)
		}
	}
}

// TestUpstreamResponsesThroughProxy: a request through the proxy counts the
// upstream's answers by class, the client's by code, and the upstream's
// queue gauges are reported at scrape time.
func TestUpstreamResponsesThroughProxy(t *testing.T) {
	upLn := fasthttputil.NewInmemoryListener()
	fail := false
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		if fail {
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			ctx.SetBodyString(`{"error":{"message":"boom","type":"server_error"}}`)
			return
		}
		ctx.SetBodyString(chatAnswer)
	}}
	go upSrv.Serve(upLn) //nolint:errcheck // ends when the listener closes
	defer upLn.Close()
	reg := prometheus.NewRegistry()
	s := newTestServer(t, "upstreams:\n  - name: mem\n    base_url: http://upstream/v1\n    api_key: sk-up\n    max_attempts: 1\n    max_queue: 77\n", Options{Registry: reg})
	s.upstreams[0].conns.dial = func(string) (net.Conn, error) { return upLn.Dial() }
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	defer ln.Close()
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	req := chatRequest([]byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
	resp := fasthttp.AcquireResponse()
	for _, f := range []bool{false, true} {
		fail = f
		if err := client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(s.m.upstreamResponses.WithLabelValues("mem", "2xx")); got != 1 {
		t.Errorf(`sluice_upstream_responses_total{upstream="mem",status_class="2xx"} = %v; want 1`, got)
	}
	if got := testutil.ToFloat64(s.m.upstreamResponses.WithLabelValues("mem", "5xx")); got != 1 {
		t.Errorf(`sluice_upstream_responses_total{upstream="mem",status_class="5xx"} = %v; want 1`, got)
	}
	if got := testutil.ToFloat64(s.m.requests[epChat][slotOf(t, "500", "5xx")]); got != 1 {
		t.Errorf(`sluice_requests_total{code="500"} = %v; want 1 (the upstream's 500 passed on)`, got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"sluice_upstream_queue_length": 0, "sluice_upstream_queue_max": 77}
	for _, mf := range mfs {
		if v, ok := want[mf.GetName()]; ok {
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != v {
				t.Errorf("%s = %v; want %v", mf.GetName(), got, v)
			}
			delete(want, mf.GetName())
		}
	}
	for n := range want {
		t.Errorf("%s not gathered", n)
	}
}
