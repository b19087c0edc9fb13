package e2e

// The fault suite's first part: dependencies failing. Each test drives one
// fault of the provider (or of Redis) through the built binary with the
// official SDK and checks what the client saw, the metric that counted it,
// one transcript record per request ("0 lost"), and that the process is
// back to its baseline afterwards: no leaked goroutine or descriptor, no
// panic in its output (checkSettled). Select them with -run 'TestFault'.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// depEnv (dependency faults) is an env whose sluice writes its transcripts
// as JSONL into dir, with the resources it held once warm.
type depEnv struct {
	env
	dir  string
	base resources
	sent int // requests the test sent, for the transcript count
}

// transcriptsYAML is a transcripts section writing JSONL to dir quickly.
func transcriptsYAML(dir string) string {
	return "transcripts:\n  flush_interval: 50ms\n  jsonl:\n    dir: " + dir + "\n"
}

// newDepEnv starts the fake and sluice (config: makeConfig(co) plus the
// transcripts section, or cfg when not ""), sends one good request so that
// the pools are warm, and takes the resource baseline.
func newDepEnv(t *testing.T, co configOptions, cfg, policies string) *depEnv {
	t.Helper()
	f := startFake(t, fakeai.Config{})
	dir := t.TempDir()
	if cfg == "" {
		cfg = makeConfig(co)
	}
	cfg += transcriptsYAML(dir)
	if policies == "" {
		policies = trustedPolicies()
	}
	e := &depEnv{env: env{fake: f, s: startSluice(t, sluiceOptions{Config: cfg, Policies: policies, BaseURL: f.URL})}, dir: dir}
	if _, err := e.chat(t, "warm up"); err != nil {
		t.Fatalf("warm-up request: %v", err)
	}
	e.records(t) // the transcript file is open before the baseline
	e.base = e.s.resources(t)
	return e
}

func chatParams(prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt)}
}

// client is an SDK client for the demo key whose requests ask Sluice to
// close their connection after the answer: a connection the test process
// keeps open is not one Sluice leaked.
func (e *depEnv) client() *openai.Client {
	return e.s.client(demoKey, option.WithHeader("Connection", "close"))
}

// chat sends one non-stream chat through sluice.
func (e *depEnv) chat(t *testing.T, prompt string, opts ...option.RequestOption) (*openai.ChatCompletion, error) {
	t.Helper()
	e.sent++
	c, err := e.client().Chat.Completions.New(testContext(t, 20*time.Second), chatParams(prompt), opts...)
	return c, release(err)
}

// release reads an API error's body to its end, so that the connection
// goes back to the client's pool (the SDK leaves the body open for the
// caller) and Sluice's side of it is idle, not held by the test; the body
// stays readable.
func release(err error) error {
	var ae *openai.Error
	if errors.As(err, &ae) && ae.Response != nil && ae.Response.Body != nil {
		b, _ := io.ReadAll(ae.Response.Body)
		_ = ae.Response.Body.Close()
		ae.Response.Body = io.NopCloser(bytes.NewReader(b))
	}
	return err
}

// stream sends one stream chat through sluice and drains it.
func (e *depEnv) stream(t *testing.T, prompt string, opts ...option.RequestOption) streamResult {
	t.Helper()
	e.sent++
	r := readChatStream(time.Now(), e.client().Chat.Completions.NewStreaming(
		testContext(t, 20*time.Second), chatParams(prompt), opts...))
	r.err = release(r.err)
	return r
}

// records waits until the transcripts hold one record per request sent
// (never more) and returns them by their request text.
func (e *depEnv) records(t *testing.T) map[string]map[string]any {
	t.Helper()
	var recs []map[string]any
	if !waitFor(5*time.Second, func() bool { recs = jsonlRecords(t, e.dir); return len(recs) >= e.sent }) || len(recs) != e.sent {
		t.Fatalf("%d transcript records for %d requests: a record was lost or doubled", len(recs), e.sent)
	}
	byPrompt := make(map[string]map[string]any, len(recs))
	for _, r := range recs {
		req, _ := r["request"].(string)
		byPrompt[req] = r
	}
	return byPrompt
}

// record returns the transcript record of the request whose prompt was p.
func (e *depEnv) record(t *testing.T, recs map[string]map[string]any, p string) map[string]any {
	t.Helper()
	for req, r := range recs {
		if strings.Contains(req, `"`+p+`"`) {
			return r
		}
	}
	t.Fatalf("no transcript record for the request %q", p)
	return nil
}

// wantRecord checks a record's status and error type.
func wantRecord(t *testing.T, r map[string]any, status int, errType string) {
	t.Helper()
	if r["status"] != float64(status) || r["error_type"] != errType {
		t.Fatalf("transcript record status %v error_type %q, want %d %q: %v", r["status"], r["error_type"], status, errType, r)
	}
}

// settle closes the test's idle client connections and checks that sluice
// is back to its baseline with no panic in its output.
func (e *depEnv) settle(t *testing.T) {
	t.Helper()
	http.DefaultClient.CloseIdleConnections()
	start, now := time.Now(), e.s.resources(t)
	after := e.s.checkSettled(t, e.base)
	t.Logf("settled in %v: goroutines %v -> %v -> %v, fds %v -> %v -> %v (baseline, end of scenario, settled)",
		time.Since(start).Round(100*time.Millisecond), e.base.goroutines, now.goroutines, after.goroutines, e.base.fds, now.fds, after.fds)
}

// metricValue reads a metric sample (0 when absent).
func metricValue(t *testing.T, s *sluiceProc, name string, labels ...string) float64 {
	t.Helper()
	v, _ := s.metric(t, name, labels...)
	return v
}

// TestFaultUpstream429Storm: the provider answers every call 429 with
// retry-after 1.5 s and the tier may wait 2 s. Each request is paused and
// retried once within its max wait, then the client gets a clear 429 with
// a retry-after; the provider sees at most two calls per request.
func TestFaultUpstream429Storm(t *testing.T) {
	cfg := queueConfig(600, 10, 0, 20, "", "")
	e := newDepEnv(t, configOptions{}, cfg, queuePolicy(1000, "2s"))
	e.fake.SetFault(429)
	before := e.fake.Stats().Requests
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	took := make([]time.Duration, n)
	for i := range n {
		e.sent++
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 50 * time.Millisecond) // after the first 429 set the pause
			start := time.Now()
			_, err := e.client().Chat.Completions.New(testContext(t, 20*time.Second),
				chatParams(fmt.Sprint("storm ", i)))
			errs[i] = release(err)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	calls := e.fake.Stats().Requests - before
	codes := map[string]int{}
	for i, err := range errs {
		ae := asAPIError(t, err)
		if ae.StatusCode != 429 || ae.Response.Header.Get("Retry-After") == "" {
			t.Fatalf("request %d: %d %s, retry-after %q; want a 429 with retry-after", i, ae.StatusCode, ae.RawJSON(),
				ae.Response.Header.Get("Retry-After"))
		}
		// The provider's own 429 once the retries used the max wait, or
		// Sluice's up front when the paused queue cannot serve in time.
		switch {
		case ae.Code == "rate_limit_exceeded" && ae.Type == "requests":
		case ae.Code == "provider_capacity" && ae.Type == "requests" && ae.Response.Header.Get("X-Sluice-Queue-Position") != "":
		default:
			t.Fatalf("request %d: %s, headers %v", i, ae.RawJSON(), ae.Response.Header)
		}
		codes[ae.Code]++
		if took[i] > 3500*time.Millisecond {
			t.Fatalf("request %d answered after %v, beyond its 2 s max wait", i, took[i])
		}
	}
	throttled := metricValue(t, e.s, "sluice_upstream_throttled_total", `status="429"`)
	retries := metricValue(t, e.s, "sluice_upstream_retries_total")
	limited := metricValue(t, e.s, "sluice_requests_total", `route="chat_completions"`, `status_class="4xx"`)
	t.Logf("%d requests: answers %v; provider calls %d, upstream 429s counted %v, retries %v, 4xx answered %v, waits %v",
		n, codes, calls, throttled, retries, limited, took)
	// An SDK with its default 2 retries would make 3 calls per request; the
	// pause holds them back to at most 1.5 per request.
	if calls > n*3/2 || calls < 1 || retries < 1 {
		t.Fatalf("the provider saw %d calls for %d requests (retries %v); want 1 to %d", calls, n, retries, n*3/2)
	}
	if throttled != float64(calls) || limited != n {
		t.Fatalf("throttled %v (provider calls %d), 4xx answers %v (want %d)", throttled, calls, limited, n)
	}
	recs := e.records(t)
	for i := range n {
		wantRecord(t, e.record(t, recs, fmt.Sprint("storm ", i)), 429, "requests")
	}
	e.fake.SetFault(0)
	if _, err := e.chat(t, "after the storm"); err != nil {
		t.Fatalf("after the storm: %v", err)
	}
	e.settle(t)
}

// TestFaultUpstream5xx: an upstream 5xx fails over to the route's fallback
// (the client never sees it); when the fallback fails too, the last
// upstream's own answer passes through unchanged, before any stream event.
func TestFaultUpstream5xx(t *testing.T) {
	backup := startFake(t, fakeai.Config{APIKey: upstreamKey})
	cfg := fmt.Sprintf(`
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
upstreams:
  - name: primary
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
  - name: backup
    base_url: %s
    api_key: ${OPENAI_API_KEY}
routes:
  - model: "*"
    upstream: primary
    fallbacks: [backup]
`, backup.URL)
	e := newDepEnv(t, configOptions{}, cfg, "")

	t.Run("failover", func(t *testing.T) {
		for _, status := range []int{500, 502, 503} {
			e.fake.SetFault(status)
			c, err := e.chat(t, fmt.Sprint("failover ", status))
			if err != nil || c.Choices[0].Message.Content != fmt.Sprint("echo: failover ", status) {
				t.Fatalf("primary %d: %v %+v; want the backup's answer", status, err, c)
			}
			r := e.stream(t, fmt.Sprint("stream failover ", status))
			if r.err != nil || r.content != fmt.Sprint("echo: stream failover ", status) {
				t.Fatalf("primary %d, stream: %v %q", status, r.err, r.content)
			}
		}
		e.fake.SetFault(0)
		if v := metricValue(t, e.s, "sluice_upstream_retries_total", `upstream="primary"`); v != 6 {
			t.Fatalf("sluice_upstream_retries_total{upstream=primary} = %v, want 6", v)
		}
		if v := metricValue(t, e.s, "sluice_upstream_throttled_total", `upstream="primary"`, `status="503"`); v != 2 {
			t.Fatalf("sluice_upstream_throttled_total{status=503} = %v, want 2", v)
		}
		if got := backup.Stats().Requests; got != 6 {
			t.Fatalf("the backup served %d requests, want 6", got)
		}
	})

	t.Run("both_fail", func(t *testing.T) {
		e.fake.SetFault(502)
		backup.SetFault(500)
		defer backup.SetFault(0)
		defer e.fake.SetFault(0)
		_, err := e.chat(t, "both fail")
		ae := asAPIError(t, err)
		if ae.StatusCode != 500 || ae.Type != "server_error" {
			t.Fatalf("got %d %s, want the backup's own 500 server_error", ae.StatusCode, ae.RawJSON())
		}
		_, _, fBody := backup.LastResponse()
		if got := errorBody(t, ae); !bytes.Equal(got, fBody) {
			t.Fatalf("body changed:\n got %s\nwant %s", got, fBody)
		}
		r := e.stream(t, "both fail stream")
		if r.chunks != 0 {
			t.Fatalf("got %d chunks from failing upstreams", r.chunks)
		}
		if ae := asAPIError(t, r.err); ae.StatusCode != 500 || ae.Type != "server_error" {
			t.Fatalf("stream: %d %s", ae.StatusCode, ae.RawJSON())
		}
		if v := metricValue(t, e.s, "sluice_requests_total", `route="chat_completions"`, `status_class="5xx"`); v != 2 {
			t.Fatalf("sluice_requests_total{5xx} = %v, want 2", v)
		}
	})

	recs := e.records(t)
	for _, s := range []int{500, 502, 503} {
		r := e.record(t, recs, fmt.Sprint("failover ", s))
		wantRecord(t, r, 200, "")
		if r["upstream"] != "backup" || r["retries"] != float64(1) {
			t.Fatalf("failover record: upstream %v retries %v", r["upstream"], r["retries"])
		}
	}
	wantRecord(t, e.record(t, recs, "both fail"), 500, "server_error")
	wantRecord(t, e.record(t, recs, "both fail stream"), 500, "server_error")
	e.settle(t)
}

// TestFaultUpstreamHang: an upstream that accepts the call and never sends
// a byte gets a 504 upstream_timeout after first_byte, stream or not, and
// its call is released.
func TestFaultUpstreamHang(t *testing.T) {
	e := newDepEnv(t, configOptions{firstByte: "500ms", idle: "500ms"}, "", "")
	hang := option.WithHeader(fakeai.HeaderHang, "1")
	start := time.Now()
	_, err := e.chat(t, "hang", hang)
	checkSluiceError(t, err, 504, "server_error", "upstream_timeout", "")
	r := e.stream(t, "hang stream", hang)
	if r.chunks != 0 {
		t.Fatalf("got %d chunks from a silent upstream", r.chunks)
	}
	checkSluiceError(t, r.err, 504, "server_error", "upstream_timeout", "")
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("two 500ms timeouts took %v", d)
	}
	if !waitFor(2*time.Second, func() bool { return e.fake.Stats().Aborted >= 2 }) {
		t.Fatalf("the hanging upstream calls were not released (stats %+v)", e.fake.Stats())
	}
	if v := metricValue(t, e.s, "sluice_upstream_errors_total", `reason="timeout"`); v != 2 {
		t.Fatalf("sluice_upstream_errors_total{reason=timeout} = %v, want 2", v)
	}
	recs := e.records(t)
	wantRecord(t, e.record(t, recs, "hang"), 504, "server_error")
	wantRecord(t, e.record(t, recs, "hang stream"), 504, "server_error")
	e.settle(t)
}

// TestFaultUpstreamTrickle: an answer that comes one byte at a time is
// relayed whole while every pause stays within the idle timeout; a pause
// beyond it, or a trickle that outlasts the total timeout, ends the call
// with 504 upstream_timeout (before any byte reached the client) or a
// stream that ends with an error.
func TestFaultUpstreamTrickle(t *testing.T) {
	cfg := strings.Replace(makeConfig(configOptions{firstByte: "1s", idle: "300ms"}), "total: 5m", "total: 3s", 1)
	e := newDepEnv(t, configOptions{}, cfg, "")

	t.Run("slow_within_timeouts", func(t *testing.T) {
		start := time.Now()
		c, err := e.chat(t, "trickle ok", option.WithHeader(fakeai.HeaderTrickle, "1ms"))
		if err != nil || c.Choices[0].Message.Content != "echo: trickle ok" {
			t.Fatalf("trickled answer: %v %+v", err, c)
		}
		mid := time.Now()
		r := e.stream(t, "trickle stream ok", option.WithHeader(fakeai.HeaderTrickle, "1ms"), option.WithHeader(fakeai.HeaderChunks, "1"))
		if r.err != nil || r.content != "echo: trickle stream ok" || r.finish != "stop" {
			t.Fatalf("trickled stream: %v %q %q", r.err, r.content, r.finish)
		}
		t.Logf("trickled at 1 byte/ms: answer in %v, stream in %v (total timeout 3 s each)",
			mid.Sub(start).Round(time.Millisecond), time.Since(mid).Round(time.Millisecond))
	})

	t.Run("pause_beyond_idle", func(t *testing.T) {
		before := metricValue(t, e.s, "sluice_upstream_errors_total", `reason="timeout"`)
		_, err := e.chat(t, "trickle idle", option.WithHeader(fakeai.HeaderTrickle, "600ms"))
		checkSluiceError(t, err, 504, "server_error", "upstream_timeout", "")
		// The stream's headers went out; the first pause cuts it.
		r := e.stream(t, "trickle idle stream", option.WithHeader(fakeai.HeaderTrickle, "600ms"))
		if r.err == nil || r.chunks != 0 {
			t.Fatalf("a stream stalled beyond idle: %d chunks, err %v; want none and an error", r.chunks, r.err)
		}
		if v := metricValue(t, e.s, "sluice_upstream_errors_total", `reason="timeout"`); v != before+2 {
			t.Fatalf("sluice_upstream_errors_total{reason=timeout} went %v -> %v, want +2", before, v)
		}
	})

	t.Run("beyond_total", func(t *testing.T) {
		// 100 ms per byte is within idle, but the answer needs ~30 s.
		start := time.Now()
		_, err := e.chat(t, "slowloris", option.WithHeader(fakeai.HeaderTrickle, "100ms"))
		checkSluiceError(t, err, 504, "server_error", "upstream_timeout", "")
		if d := time.Since(start); d < 2800*time.Millisecond || d > 5*time.Second {
			t.Fatalf("504 after %v, want about the 3 s total timeout", d)
		}
	})
	if !waitFor(3*time.Second, func() bool { return e.fake.Stats().Aborted >= 3 }) {
		t.Fatalf("the trickling upstream calls were not released (stats %+v)", e.fake.Stats())
	}

	recs := e.records(t)
	wantRecord(t, e.record(t, recs, "trickle ok"), 200, "")
	wantRecord(t, e.record(t, recs, "trickle stream ok"), 200, "")
	wantRecord(t, e.record(t, recs, "trickle idle"), 504, "server_error")
	wantRecord(t, e.record(t, recs, "slowloris"), 504, "server_error")
	// The stalled stream's 200 had gone out: the record keeps that status
	// and says the answer failed.
	wantRecord(t, e.record(t, recs, "trickle idle stream"), 200, "server_error")
	e.settle(t)
}

// TestFaultUpstreamStreamCut: the provider drops the connection mid-stream.
// The client gets the events sent before the cut, then an error (no [DONE],
// no clean end); the transcript keeps the partial text.
func TestFaultUpstreamStreamCut(t *testing.T) {
	e := newDepEnv(t, configOptions{}, "", "")
	before := metricValue(t, e.s, "sluice_upstream_errors_total", `reason="unreachable"`)
	r := e.stream(t, "cut me please now", option.WithHeader(fakeai.HeaderCutAfter, "3"), option.WithHeader(fakeai.HeaderChunks, "5"))
	if r.chunks != 3 || r.err == nil || r.finish != "" {
		t.Fatalf("cut stream: %d chunks, finish %q, err %v; want the 3 sent, no finish, an error", r.chunks, r.finish, r.err)
	}
	// A non-stream answer cut mid-body is a 502: nothing reached the client yet.
	_, err := e.chat(t, "cut body", option.WithHeader(fakeai.HeaderCutAfter, "40"))
	checkSluiceError(t, err, 502, "server_error", "upstream_unreachable", "")
	if v := metricValue(t, e.s, "sluice_upstream_errors_total", `reason="unreachable"`); v != before+2 {
		t.Fatalf("sluice_upstream_errors_total{reason=unreachable} went %v -> %v, want +2", before, v)
	}
	if line := e.s.waitLogLine(time.Second, "upstream stream failed"); line == "" {
		t.Fatalf("the cut stream was not logged")
	}
	recs := e.records(t)
	rec := e.record(t, recs, "cut me please now")
	wantRecord(t, rec, 200, "server_error")
	if rec["finish_reason"] != "" || !strings.HasPrefix(r.content, "echo:") || rec["response"] != r.content {
		t.Fatalf("cut stream record: %v (client got %q)", rec, r.content)
	}
	wantRecord(t, e.record(t, recs, "cut body"), 502, "server_error")
	e.settle(t)
}

// TestFaultUpstreamMalformedSSE: a stream with a bad event in it is relayed
// byte for byte (Sluice is no validator of the provider's events), the
// events around it are counted and kept, and nothing in Sluice panics.
func TestFaultUpstreamMalformedSSE(t *testing.T) {
	e := newDepEnv(t, configOptions{}, "", "")
	for _, kind := range []string{"json", "nodata", "garbage"} {
		t.Run(kind, func(t *testing.T) {
			prompt := "malformed " + kind
			// Raw: what the client receives equals what the provider sent.
			body := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":%q}]}`, prompt+" raw")
			req, _ := http.NewRequest(http.MethodPost, e.s.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+demoKey)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(fakeai.HeaderMalformedSSE, kind)
			e.sent++
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			_, _, sent := e.fake.LastResponse()
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, sent) || !bytes.HasSuffix(got, []byte("data: [DONE]\n\n")) {
				t.Fatalf("relayed %d %v:\n%s\nthe provider sent:\n%s", resp.StatusCode, err, got, sent)
			}
			// The SDK: what it makes of it is its own affair; record it.
			// The SDK: a data line that is not JSON ends its stream with a
			// decode error after the first chunk; events without data and
			// lines that are no field are skipped.
			r := e.stream(t, prompt, option.WithHeader(fakeai.HeaderMalformedSSE, kind))
			t.Logf("%s: the SDK read %d chunks, content %q, err %v", kind, r.chunks, r.content, r.err)
			if kind == "json" {
				if r.chunks != 1 || r.err == nil {
					t.Fatalf("%s: %d chunks, err %v; want 1 and a decode error", kind, r.chunks, r.err)
				}
			} else if r.err != nil || r.content != "echo: "+prompt || r.finish != "stop" {
				t.Fatalf("%s: content %q finish %q err %v; want the whole answer", kind, r.content, r.finish, r.err)
			}
		})
	}
	recs := e.records(t)
	for _, kind := range []string{"json", "nodata", "garbage"} {
		r := e.record(t, recs, "malformed "+kind+" raw")
		wantRecord(t, r, 200, "")
		if r["response"] != "echo: malformed "+kind+" raw" || r["finish_reason"] != "stop" {
			t.Fatalf("%s: record response %q finish %q: the good events around the bad one were not assembled", kind, r["response"], r["finish_reason"])
		}
	}
	e.settle(t)
}

// TestFaultUpstreamNonJSON: a body that is not JSON — an HTML error page or
// plain text from a proxy in front of the provider — passes through with
// its status, content type and bytes unchanged; Sluice neither crashes nor
// invents usage from it.
func TestFaultUpstreamNonJSON(t *testing.T) {
	e := newDepEnv(t, configOptions{}, "", "")
	cases := []struct {
		name, kind, status string
		code               int
		stream             bool
	}{
		{"html_200", "html", "", 200, false},
		{"text_200", "text", "", 200, false},
		{"html_502", "html", "502", 502, false},
		{"text_500", "text", "500", 500, false},
		{"html_200_stream", "html", "", 200, true},
		{"html_502_stream", "html", "502", 502, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := []option.RequestOption{option.WithHeader(fakeai.HeaderBody, tc.kind)}
			if tc.status != "" {
				opts = append(opts, option.WithHeader(fakeai.HeaderStatus, tc.status))
			}
			var resp *http.Response
			opts = append(opts, option.WithResponseInto(&resp))
			var err error
			if tc.stream {
				r := e.stream(t, "non-json "+tc.name, opts...)
				err = r.err
				if r.chunks != 0 {
					t.Fatalf("%d chunks parsed from a non-JSON body", r.chunks)
				}
			} else {
				_, err = e.chat(t, "non-json "+tc.name, opts...)
			}
			fStatus, fHeader, fBody := e.fake.LastResponse()
			if tc.code == 200 && tc.stream {
				// Passed through as it came: the SDK finds no event in an
				// HTML page and ends the stream empty, without an error.
				if err != nil || resp == nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != fHeader.Get("Content-Type") {
					t.Fatalf("err %v, response %v; the provider sent %d %q", err, resp, fStatus, fHeader.Get("Content-Type"))
				}
				return
			}
			if err == nil {
				t.Fatalf("the SDK took a non-JSON body as an answer")
			}
			t.Logf("SDK: %v", err)
			var ae *openai.Error
			if errors.As(err, &ae) {
				got := errorBody(t, ae)
				if ae.StatusCode != tc.code || !bytes.Equal(got, fBody) || ae.Response.Header.Get("Content-Type") != fHeader.Get("Content-Type") {
					t.Fatalf("client got %d %q %q, the provider sent %d %q %q", ae.StatusCode,
						ae.Response.Header.Get("Content-Type"), got, fStatus, fHeader.Get("Content-Type"), fBody)
				}
				return
			}
			if resp == nil || resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != fHeader.Get("Content-Type") {
				t.Fatalf("client got %v, the provider sent %d %q", resp, fStatus, fHeader.Get("Content-Type"))
			}
		})
	}
	if v := metricValue(t, e.s, "sluice_requests_total", `route="chat_completions"`, `status_class="5xx"`); v != 3 {
		t.Fatalf("sluice_requests_total{5xx} = %v, want 3", v)
	}
	recs := e.records(t)
	for _, tc := range cases {
		r := e.record(t, recs, "non-json "+tc.name)
		if r["status"] != float64(tc.code) || r["total_tokens"] != float64(0) {
			t.Fatalf("%s: record %v", tc.name, r)
		}
		t.Logf("%s: record status %v error_type %q response %q", tc.name, r["status"], r["error_type"], r["response"])
	}
	e.settle(t)
}

// TestFaultUpstreamUnreachable: the provider cannot be reached — its name
// does not resolve, or nothing listens on its port. The client gets 502
// upstream_unreachable at once, stream or not, counted by reason.
func TestFaultUpstreamUnreachable(t *testing.T) {
	for name, baseURL := range map[string]string{
		"dns":     "http://nonexistent.invalid/v1",
		"refused": "http://" + freeAddr(t) + "/v1",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := startSluice(t, sluiceOptions{BaseURL: baseURL, Config: makeConfig(configOptions{}) + transcriptsYAML(dir),
				Policies: trustedPolicies()})
			base := s.resources(t)
			e := &depEnv{env: env{s: s}, dir: dir, base: base}
			start := time.Now()
			_, err := e.chat(t, "anyone "+name)
			checkSluiceError(t, err, 502, "server_error", "upstream_unreachable", "")
			r := e.stream(t, "anyone stream "+name)
			if r.chunks != 0 {
				t.Fatalf("%d chunks from an unreachable upstream", r.chunks)
			}
			checkSluiceError(t, r.err, 502, "server_error", "upstream_unreachable", "")
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("two unreachable calls took %v", d)
			}
			if v := metricValue(t, s, "sluice_upstream_errors_total", `reason="unreachable"`); v != 2 {
				t.Fatalf("sluice_upstream_errors_total{reason=unreachable} = %v, want 2", v)
			}
			if v := metricValue(t, s, "sluice_requests_total", `route="chat_completions"`, `status_class="5xx"`); v != 2 {
				t.Fatalf("sluice_requests_total{5xx} = %v, want 2", v)
			}
			recs := e.records(t)
			wantRecord(t, e.record(t, recs, "anyone "+name), 502, "server_error")
			wantRecord(t, e.record(t, recs, "anyone stream "+name), 502, "server_error")
			e.settle(t)
		})
	}
}

// TestFaultRedisKilledUnderLoad: the limits' Redis is SIGKILLed (by PID)
// under steady load and restarted 2 s later on the same port. While it is
// down every request is answered by the tier's on_store_error — allow: 200,
// deny: 503 limiter_unavailable — and counted as a store error; once it is
// back the store answers again within a second and requests are limited
// through it; every request has its transcript record; nothing leaks.
func TestFaultRedisKilledUnderLoad(t *testing.T) {
	testRedis(t) // the suite runs with Redis; this test starts its own to kill
	for _, mode := range []string{"allow", "deny"} {
		t.Run(mode, func(t *testing.T) {
			r := startRedis(t)
			pol := "on_store_error: " + mode + "\n" + fmt.Sprintf(limitsPolicy, 100000, 100000, 100_000_000, 100_000_000)
			cfg := limitsConfig(r.addr, "fault-"+nonce()+":")
			cfg = strings.Replace(cfg, "timeout: 2s", "timeout: 200ms", 1)
			e := newDepEnv(t, configOptions{}, cfg, pol)

			// Phases: 0 Redis up, 1 killed, 2 restarted.
			var phase atomic.Int32
			type result struct {
				phase  int32 // -1: the request straddled a change
				status int
				code   string
				took   time.Duration
			}
			var mu sync.Mutex
			var results []result
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-time.After(20 * time.Millisecond):
						}
						p0, start := phase.Load(), time.Now()
						_, err := e.client().Chat.Completions.New(testContext(t, 10*time.Second),
							chatParams(fmt.Sprintf("load %d %d", w, i)))
						res := result{phase: p0, status: 200, took: time.Since(start)}
						if phase.Load() != p0 {
							res.phase = -1
						}
						var ae *openai.Error
						if errors.As(release(err), &ae) {
							res.status, res.code = ae.StatusCode, ae.Code
						} else if err != nil {
							t.Errorf("request: %v", err)
							res.status = -1
						}
						mu.Lock()
						results = append(results, res)
						mu.Unlock()
					}
				})
			}
			time.Sleep(time.Second)
			phase.Store(1)
			r.kill(t)
			time.Sleep(time.Second)
			downUp := metricValue(t, e.s, "sluice_limiter_store_up")
			time.Sleep(time.Second)
			phase.Store(2)
			restarted := time.Now()
			r.start(t)
			var recovery time.Duration
			if !waitFor(5*time.Second, func() bool {
				return e.s.waitLogLine(0, "bucket store answers again") != "" && metricValue(t, e.s, "sluice_limiter_store_up") == 1
			}) {
				t.Fatalf("the store was not used again within 5 s of Redis coming back")
			}
			recovery = time.Since(restarted)
			phase.Store(3)
			time.Sleep(time.Second)
			close(stop)
			wg.Wait()

			count := map[int32]map[string]int{}
			var slowest time.Duration
			for _, res := range results {
				if count[res.phase] == nil {
					count[res.phase] = map[string]int{}
				}
				count[res.phase][fmt.Sprint(res.status, res.code)]++
				slowest = max(slowest, res.took)
			}
			storeErrs := metricValue(t, e.s, "sluice_limiter_store_errors_total")
			outcome := metricValue(t, e.s, "sluice_limiter_decisions_total", `outcome="store_error_`+map[string]string{"allow": "allowed", "deny": "denied"}[mode]+`"`)
			t.Logf("%s: %d requests; by phase (0 up, 1 killed, 2 restarting, 3 back, -1 straddling): %v; store up while down %v, "+
				"store errors %v, %s decisions %v; store used again %v after the restart; slowest answer %v",
				mode, len(results), count, downUp, storeErrs, mode, outcome, recovery.Round(time.Millisecond), slowest.Round(time.Millisecond))

			for _, p := range []int32{0, 3} {
				if n := count[p]["200"]; n == 0 || n != sum(count[p]) {
					t.Fatalf("phase %d (Redis up): %v; want every request answered 200", p, count[p])
				}
			}
			down := count[1]
			want := "200"
			if mode == "deny" {
				want = "503limiter_unavailable"
			}
			if down[want] == 0 || down[want] != sum(down) {
				t.Fatalf("while Redis was down: %v; want every request answered %s", down, want)
			}
			if downUp != 0 {
				t.Fatalf("sluice_limiter_store_up = %v while Redis was down, want 0", downUp)
			}
			if storeErrs < 1 || outcome < float64(down[want]) {
				t.Fatalf("store errors %v, %s decisions %v; want >= 1 and >= the %d answered while down", storeErrs, mode, outcome, down[want])
			}
			if slowest > 2*time.Second {
				t.Fatalf("a request took %v; the store's failure must not hold requests", slowest)
			}
			e.sent += len(results)
			recs := jsonlRecords(t, e.dir)
			if !waitFor(5*time.Second, func() bool { recs = jsonlRecords(t, e.dir); return len(recs) >= e.sent }) || len(recs) != e.sent {
				t.Fatalf("%d transcript records for %d requests", len(recs), e.sent)
			}
			statuses := map[float64]int{}
			for _, rec := range recs {
				statuses[rec["status"].(float64)]++
			}
			if mode == "deny" && statuses[503] != down[want]+count[-1]["503limiter_unavailable"]+count[2]["503limiter_unavailable"] {
				t.Fatalf("transcripts by status %v; the 503s answered were %v", statuses, count)
			}
			e.settle(t)
		})
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
