package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

const adminToken = "admin-e2e-token-3b1f"

// sample is one request made with the official SDK whose transcript is
// checked field by field.
type sample struct {
	user, prompt, id     string
	stream               bool
	status               int
	content, finish      string
	prompt_, completion_ int64
	errType              string
}

// runSamples sends n chat requests through the SDK: half plain, half
// streamed (with usage), and one failing upstream (a 500).
func runSamples(t *testing.T, s *sluiceProc, n int) []sample {
	t.Helper()
	client := s.client(appKey)
	ctx := testContext(t, 60*time.Second)
	out := make([]sample, n)
	for i := range out {
		sm := &out[i]
		sm.user = fmt.Sprintf("sample-%03d", i)
		sm.prompt = fmt.Sprintf("sample %d says \"hi\" ünïcode %s", i, nonce())
		sm.stream = i%2 == 1
		var resp *http.Response
		opts := []option.RequestOption{option.WithHeader("X-Sluice-User", sm.user), option.WithResponseInto(&resp)}
		params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages(sm.prompt)}
		switch {
		case i == n-1:
			_, err := client.Chat.Completions.New(ctx, params, append(opts, option.WithHeader(fakeai.HeaderStatus, "500"))...)
			apiErr := asAPIError(t, err)
			var body struct {
				Error struct {
					Type string `json:"type"`
				} `json:"error"`
			}
			_ = json.Unmarshal(errorBody(t, apiErr), &body)
			sm.status, sm.errType = apiErr.StatusCode, body.Error.Type
		case sm.stream:
			params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			r := readChatStream(time.Now(), client.Chat.Completions.NewStreaming(ctx, params, opts...))
			if r.err != nil {
				t.Fatalf("sample %d stream: %v", i, r.err)
			}
			sm.status, sm.content, sm.finish = 200, r.content, r.finish
			sm.prompt_, sm.completion_ = r.usage.PromptTokens, r.usage.CompletionTokens
		default:
			c, err := client.Chat.Completions.New(ctx, params, opts...)
			if err != nil {
				t.Fatalf("sample %d: %v", i, err)
			}
			sm.status, sm.content, sm.finish = 200, c.Choices[0].Message.Content, c.Choices[0].FinishReason
			sm.prompt_, sm.completion_ = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
		if resp == nil || resp.Header.Get("X-Request-Id") == "" {
			t.Fatalf("sample %d: no X-Request-Id", i)
		}
		sm.id = resp.Header.Get("X-Request-Id")
		if sm.content == "" && sm.status == 200 {
			t.Fatalf("sample %d: empty answer", i)
		}
	}
	return out
}

// sampleRow is a transcript row as checkSample reads it.
type sampleRow struct {
	requestID, user, keyID, team, tier, endpoint, asked, model, upstream string
	request, response, finish, errType, ua                               string
	stream, gone                                                         uint8
	promptT, completionT, totalT                                         int64
	status                                                               uint16
	latency, ttft                                                        float64
	n                                                                    int
}

// sampleRows reads the rows of the samples in one query (FINAL: one per
// request), by the X-Request-Id the SDK saw.
func sampleRows(t *testing.T, conn driver.Conn, table string, samples []sample) map[string]*sampleRow {
	t.Helper()
	// 18.16 binds a slice as an Array, not an IN list: quote the ids.
	ids := make([]string, len(samples))
	for i, sm := range samples {
		ids[i] = "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(sm.id) + "'"
	}
	rows, err := conn.Query(context.Background(), `SELECT upstream_request_id, request_id, user, key_id, team, tier, endpoint,
		model_requested, model, upstream, request, response, finish_reason, error_type, user_agent, stream, client_gone,
		prompt_tokens, completion_tokens, total_tokens, status, latency_ms, ttft_ms FROM `+table+` FINAL
		WHERE upstream_request_id IN (`+strings.Join(ids, ", ")+`)`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]*sampleRow{}
	for rows.Next() {
		var id string
		r := &sampleRow{}
		if err := rows.Scan(&id, &r.requestID, &r.user, &r.keyID, &r.team, &r.tier, &r.endpoint, &r.asked, &r.model, &r.upstream,
			&r.request, &r.response, &r.finish, &r.errType, &r.ua, &r.stream, &r.gone, &r.promptT, &r.completionT, &r.totalT,
			&r.status, &r.latency, &r.ttft); err != nil {
			t.Fatal(err)
		}
		if prev := out[id]; prev != nil {
			r.n = prev.n
		}
		r.n++
		out[id] = r
	}
	return out
}

// checkSample compares a sample's row with what the SDK saw.
func checkSample(t *testing.T, rows map[string]*sampleRow, sm sample) {
	t.Helper()
	r := rows[sm.id]
	if r == nil || r.n != 1 {
		t.Fatalf("sample %s (%s): no single row (%+v)", sm.user, sm.id, r)
	}
	requestID, user, keyID, team, tier, endpoint, asked, model, upstream := r.requestID, r.user, r.keyID, r.team, r.tier, r.endpoint, r.asked, r.model, r.upstream
	request, response, finish, errType, ua := r.request, r.response, r.finish, r.errType, r.ua
	stream, gone, promptT, completionT, totalT, status, latency, ttft := r.stream, r.gone, r.promptT, r.completionT, r.totalT, r.status, r.latency, r.ttft
	promptJSON, _ := json.Marshal(sm.prompt)
	check := func(field string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("sample %s (%s) %s = %v, want %v", sm.user, sm.id, field, got, want)
		}
	}
	check("user", user, sm.user)
	check("key_id", keyID, "app")
	check("team", team, "apps")
	check("tier", tier, "default")
	check("endpoint", endpoint, "chat_completions")
	check("model_requested", asked, "gpt-4o-mini")
	check("model", model, "gpt-4o-mini")
	check("upstream", upstream, "openai")
	check("stream", stream == 1, sm.stream)
	check("status", status, sm.status)
	check("client_gone", gone, 0)
	check("request has the prompt", strings.Contains(request, string(promptJSON)), true)
	check("user_agent is the SDK's", strings.HasPrefix(ua, "OpenAI/Go"), true)
	check("request_id is sluice's own", strings.HasPrefix(requestID, "req_") && requestID != sm.id, true)
	if sm.status == 200 {
		check("response", response, sm.content)
		check("finish_reason", finish, sm.finish)
		check("prompt_tokens", promptT, sm.prompt_)
		check("completion_tokens", completionT, sm.completion_)
		check("total_tokens", totalT, sm.prompt_+sm.completion_)
		check("error_type", errType, "")
		check("0 < ttft <= latency", ttft > 0 && ttft <= latency, true)
	} else {
		check("error_type", errType, sm.errType)
		check("response", response, "")
	}
	check("latency > 0", latency > 0, true)
}

// waitRows waits up to d for the shipped query to count want requests and
// returns the last count.
func waitRows(t *testing.T, conn driver.Conn, table string, want uint64, d time.Duration) uint64 {
	t.Helper()
	var got uint64
	waitFor(d, func() bool {
		n, _, err := shippedRequests(t, conn, table)
		got = n
		return err == nil && n >= want
	})
	return got
}

// clientIDs returns the X-Request-Id values a load and samples saw.
func clientIDs(res *loadResult, samples []sample) map[string]int {
	ids := map[string]int{}
	res.mu.Lock()
	for id, st := range res.ids {
		ids[id] = st
	}
	res.mu.Unlock()
	for _, sm := range samples {
		ids[sm.id] = sm.status
	}
	return ids
}

// checkEveryIDOnce fails unless every id has exactly one row by the shipped
// dedup (FINAL).
func checkEveryIDOnce(t *testing.T, conn driver.Conn, table string, ids map[string]int) {
	t.Helper()
	// The client saw the upstream's x-request-id, or Sluice's own when Sluice
	// answered by itself (a 503 while draining).
	rows, err := conn.Query(context.Background(), "SELECT if(upstream_request_id = '', request_id, upstream_request_id) AS client_id, count() FROM "+
		table+" FINAL GROUP BY client_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[string]uint64{}
	for rows.Next() {
		var id string
		var n uint64
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		seen[id] = n
	}
	missing := 0
	for id := range ids {
		switch seen[id] {
		case 1:
		case 0:
			missing++
			if missing <= 5 {
				t.Errorf("request %s (status %d) has no row", id, ids[id])
			}
		default:
			t.Errorf("request %s counted %d times by the shipped dedup", id, seen[id])
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d requests have no row", missing, len(ids))
	}
}

// sinkMetric reads a sluice_sink_* metric.
func sinkMetric(t *testing.T, s *sluiceProc, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.metric(t, name, labels...)
	if !ok {
		t.Fatalf("metric %s%v not exported", name, labels)
	}
	return v
}

func droppedTotal(t *testing.T, s *sluiceProc) float64 {
	var n float64
	for _, r := range []string{"queue_full", "stopped", "spool_full", "spool_error", "corrupt", "write_error"} {
		n += sinkMetric(t, s, "sluice_sink_dropped_total", `reason="`+r+`"`)
	}
	return n
}

// TestTranscripts100kRequestsToClickHouse sends 100,000 requests through
// sluice (a sample of 101 with the official SDK, streams and an error
// included) and finds exactly 100,000 rows in ClickHouse 18.16, the sample
// matching field by field, and the admin endpoint serving a user's history.
func TestTranscripts100kRequestsToClickHouse(t *testing.T) {
	ch := startClickHouse(t)
	f := startFake(t, fakeai.Config{})
	const db, total = "e2e_100k", 100_000
	table := db + ".transcripts"
	s := startSluice(t, sluiceOptions{Config: transcriptConfig(t.TempDir(), db, "10s"), Policies: trustedPolicies(), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_CLICKHOUSE_ADDR": ch.addr, "SLUICE_ADMIN_TOKEN": adminToken}})

	samples := runSamples(t, s, 101)
	start := time.Now()
	res := runLoad(testContext(t, 5*time.Minute), loadOptions{url: s.URL, n: total - len(samples), conc: 16, tag: "bulk " + nonce()})
	took := time.Since(start)
	if got := res.statusCount(200); got != total-len(samples) || res.failed.Load() != 0 {
		t.Fatalf("load: %d answered 200, %d failed; want %d answered", got, res.failed.Load(), total-len(samples))
	}
	conn := ch.conn()
	got := waitRows(t, conn, table, total, 60*time.Second)
	t.Logf("%d requests in %v (%.0f req/s); rows counted %v after the load", total, took.Round(time.Millisecond),
		float64(total-len(samples))/took.Seconds(), time.Since(start)-took)
	requests, ids, err := shippedRequests(t, conn, table)
	if err != nil || requests != total || ids != total || got != total {
		t.Fatalf("shipped query: %d requests, %d request ids (err %v); want exactly %d", requests, ids, err, total)
	}
	if raw := rawRows(t, conn, table); raw != total {
		t.Fatalf("%d raw rows, want exactly %d (no outage, so no replay)", raw, total)
	}
	checkEveryIDOnce(t, conn, table, clientIDs(res, samples))
	rows := sampleRows(t, conn, table, samples)
	for _, sm := range samples {
		checkSample(t, rows, sm)
	}
	if v := sinkMetric(t, s, "sluice_sink_written_total"); v != total {
		t.Errorf("sluice_sink_written_total = %v, want %d", v, total)
	}
	if v := sinkMetric(t, s, "sluice_sink_enqueued_total"); v != total {
		t.Errorf("sluice_sink_enqueued_total = %v, want %d", v, total)
	}
	if v := droppedTotal(t, s); v != 0 {
		t.Errorf("sluice_sink_dropped_total = %v, want 0", v)
	}

	// A user who comes back finds their history; without the token, 401.
	sm := samples[1]
	get := func(token string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, s.AdminURL+"/admin/transcripts?user="+sm.user+"&since=1h", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("/admin/transcripts without a token: %d, want 401", code)
	}
	if code, _ := get("wrong-token"); code != http.StatusUnauthorized {
		t.Fatalf("/admin/transcripts with a wrong token: %d, want 401", code)
	}
	code, body := get(adminToken)
	var hist struct {
		Transcripts []struct {
			User              string `json:"user"`
			UpstreamRequestID string `json:"upstream_request_id"`
			Response          string `json:"response"`
			Stream            bool   `json:"stream"`
		} `json:"transcripts"`
	}
	if err := json.Unmarshal(body, &hist); err != nil || code != 200 {
		t.Fatalf("/admin/transcripts: %d %s (%v)", code, body, err)
	}
	if len(hist.Transcripts) != 1 || hist.Transcripts[0].UpstreamRequestID != sm.id || hist.Transcripts[0].Response != sm.content || !hist.Transcripts[0].Stream {
		t.Fatalf("history of %s: %s", sm.user, body)
	}
}

// TestTranscriptsSurviveClickHouseKilled kills ClickHouse (SIGKILL, by PID)
// for 30 s under load, then restarts it: every request has exactly one row
// by the shipped queries, the spool empties, and the metrics show the
// outage, the spooling and the replay.
func TestTranscriptsSurviveClickHouseKilled(t *testing.T) {
	ch := startClickHouse(t)
	f := startFake(t, fakeai.Config{})
	const db, rate, outage = "e2e_kill", 400, 30 * time.Second
	table := db + ".transcripts"
	s := startSluice(t, sluiceOptions{Config: transcriptConfig(t.TempDir(), db, "2s"), Policies: trustedPolicies(), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_CLICKHOUSE_ADDR": ch.addr}})
	n := rate * int((outage + 6*time.Second).Seconds())
	baseRes := s.resources(t)
	done := make(chan *loadResult, 1)
	go func() {
		done <- runLoad(testContext(t, 3*time.Minute), loadOptions{url: s.URL, n: n, conc: 8, rate: rate, tag: "kill " + nonce()})
	}()
	time.Sleep(3 * time.Second)
	ch.kill()
	killed := time.Now()
	time.Sleep(outage / 2)
	spooledMid := sinkMetric(t, s, "sluice_sink_spool_bytes")
	time.Sleep(outage - time.Since(killed))
	ch.start()
	t.Logf("clickhouse down for %v; spool held %.0f bytes half way", time.Since(killed).Round(time.Millisecond), spooledMid)
	res := <-done
	if got := res.statusCount(200); got != n || res.failed.Load() != 0 {
		t.Fatalf("load: %d of %d answered 200, %d failed", got, n, res.failed.Load())
	}
	conn := ch.conn()
	if !waitFor(90*time.Second, func() bool {
		requests, _, err := shippedRequests(t, conn, table)
		return err == nil && requests >= uint64(n) && sinkMetric(t, s, "sluice_sink_spool_segments") == 0
	}) {
		requests, _, err := shippedRequests(t, conn, table)
		t.Fatalf("after the restart: %d of %d requests (err %v), %v spool segments left", requests, n, err,
			sinkMetric(t, s, "sluice_sink_spool_segments"))
	}
	requests, ids, err := shippedRequests(t, conn, table)
	if err != nil || requests != uint64(n) || ids != uint64(n) {
		t.Fatalf("shipped query: %d requests, %d ids; want exactly %d", requests, ids, n)
	}
	checkEveryIDOnce(t, conn, table, clientIDs(res, nil))
	raw := rawRows(t, conn, table)
	spooled := sinkMetric(t, s, "sluice_sink_spooled_total")
	replayed := sinkMetric(t, s, "sluice_sink_replayed_total")
	errs := sinkMetric(t, s, "sluice_sink_clickhouse_errors_total")
	t.Logf("%d requests: %d raw rows (replays), spooled %v, replayed %v, clickhouse errors %v", n, raw, spooled, replayed, errs)
	if spooledMid == 0 || spooled == 0 || replayed != spooled || errs == 0 {
		t.Fatalf("metrics do not show the outage: spool bytes mid-outage %v, spooled %v, replayed %v, errors %v",
			spooledMid, spooled, replayed, errs)
	}
	if sinkMetric(t, s, "sluice_sink_spool_bytes") != 0 {
		t.Fatal("spool bytes not back to 0")
	}
	if v := droppedTotal(t, s); v != 0 {
		t.Fatalf("sluice_sink_dropped_total = %v, want 0", v)
	}
	s.checkSettled(t, baseRes)
}

// TestTranscriptsSIGTERMWhileClickHouseDown stops sluice under load while
// ClickHouse is down, then starts ClickHouse and a new sluice on the same
// spool: every request the clients got an answer for has its row.
func TestTranscriptsSIGTERMWhileClickHouseDown(t *testing.T) {
	ch := startClickHouse(t)
	f := startFake(t, fakeai.Config{})
	const db = "e2e_sigterm"
	table := db + ".transcripts"
	spool := t.TempDir()
	cfg := transcriptConfig(spool, db, "2s")
	env := map[string]string{"SLUICE_CLICKHOUSE_ADDR": ch.addr}
	s1 := startSluice(t, sluiceOptions{Config: cfg, Policies: trustedPolicies(), BaseURL: f.URL, Env: env})
	done := make(chan *loadResult, 1)
	go func() {
		done <- runLoad(testContext(t, time.Minute), loadOptions{url: s1.URL, n: 8000, conc: 8, rate: 1000, tag: "term " + nonce()})
	}()
	time.Sleep(time.Second)
	ch.kill()
	time.Sleep(2 * time.Second)
	s1.signal(t, syscall.SIGTERM)
	if err := s1.waitExit(t, 30*time.Second); err != nil {
		t.Fatalf("sluice exited with %v:\n%s", err, s1.Output())
	}
	res := <-done
	answered := clientIDs(res, nil)
	if len(answered) < 1000 {
		t.Fatalf("only %d requests answered before the shutdown", len(answered))
	}
	if line := s1.waitLogLine(time.Second, "transcript sink flushed"); line == "" {
		t.Fatalf("no flush at shutdown:\n%s", s1.Output())
	}
	segs, _ := filepath.Glob(filepath.Join(spool, "seg-*.spool"))
	if len(segs) == 0 {
		t.Fatal("nothing spooled while ClickHouse was down")
	}
	t.Logf("%d answered (%d with 200), %d failed after the listener closed; %d spool segments left by sluice 1",
		len(answered), res.statusCount(200), res.failed.Load(), len(segs))

	ch.start()
	s2 := startSluice(t, sluiceOptions{Config: cfg, Policies: trustedPolicies(), BaseURL: f.URL, Env: env})
	conn := ch.conn()
	if !waitFor(60*time.Second, func() bool { return sinkMetric(t, s2, "sluice_sink_spool_segments") == 0 }) {
		t.Fatal("the spool did not empty after the restart")
	}
	waitRows(t, conn, table, uint64(len(answered)), 30*time.Second)
	checkEveryIDOnce(t, conn, table, answered)
	requests, ids, err := shippedRequests(t, conn, table)
	if err != nil || requests != ids {
		t.Fatalf("shipped query: %d requests, %d ids (%v)", requests, ids, err)
	}
	if replayed := sinkMetric(t, s2, "sluice_sink_replayed_total"); replayed == 0 {
		t.Fatal("sluice 2 replayed nothing")
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Fatalf("spool files left: %d", len(left))
	}
}

// TestSinkNeverSlowsRequests measures request latency with ClickHouse
// healthy, then frozen (SIGSTOP): p99 must stay within noise of the
// baseline, and every row arrives once ClickHouse is thawed.
func TestSinkNeverSlowsRequests(t *testing.T) {
	ch := startClickHouse(t)
	f := startFake(t, fakeai.Config{})
	const db, n = "e2e_frozen", 6000
	table := db + ".transcripts"
	s := startSluice(t, sluiceOptions{Config: transcriptConfig(t.TempDir(), db, "1s"), Policies: trustedPolicies(), BaseURL: f.URL,
		Env: map[string]string{"SLUICE_CLICKHOUSE_ADDR": ch.addr}})
	ctx := testContext(t, 3*time.Minute)
	load := func(tag string) *loadResult {
		r := runLoad(ctx, loadOptions{url: s.URL, n: n, conc: 4, rate: 2000, tag: tag + " " + nonce()})
		if r.statusCount(200) != n {
			t.Fatalf("%s: %d of %d answered 200", tag, r.statusCount(200), n)
		}
		return r
	}
	load("warm-up")
	res := s.resources(t)
	base := load("baseline")
	ch.signal(syscall.SIGSTOP)
	frozen := load("frozen")
	spooled := sinkMetric(t, s, "sluice_sink_spooled_total")
	ch.signal(syscall.SIGCONT)
	after := load("thawed")
	t.Logf("p50/p99 baseline %v/%v, clickhouse frozen %v/%v, thawed %v/%v; %v rows spooled while frozen",
		base.percentile(.5), base.percentile(.99), frozen.percentile(.5), frozen.percentile(.99),
		after.percentile(.5), after.percentile(.99), spooled)
	if spooled == 0 {
		t.Fatal("nothing spooled: the freeze was not felt by the sink")
	}
	// Noise on a shared 2-core machine: twice the baseline plus 2 ms.
	if limit := 2*base.percentile(.99) + 2*time.Millisecond; frozen.percentile(.99) > limit {
		t.Fatalf("p99 with clickhouse frozen %v > %v (baseline %v)", frozen.percentile(.99), limit, base.percentile(.99))
	}
	conn := ch.conn()
	if got := waitRows(t, conn, table, 4*n, 60*time.Second); got != 4*n {
		t.Fatalf("%d rows after the thaw, want %d", got, 4*n)
	}
	s.checkSettled(t, res)
}
