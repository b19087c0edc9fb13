package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/fakeai"
	"sluice/internal/testkit"
)

// The soak: SLUICE_SOAK (a duration, e.g. "10m") of mixed load through the
// binary at a fixed rate, watching the process's memory, goroutines and
// descriptors for growth. scripts/faults.sh and a step of scripts/test.sh
// run it; without SLUICE_SOAK (the normal -race pass) it is skipped.

// soakConfig: the fake behind two upstreams, one unbudgeted for most of the
// traffic and one that lets two calls run at once, for the models named
// slow-* (so bursts of them wait at the provider stage); the memory cache;
// JSONL transcripts flushed every 200 ms into SOAK_TRANSCRIPTS.
const soakConfig = `
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  access_log: false
  shutdown_timeout: 5s
upstreams:
  - name: fake
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
  - name: narrow
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
    budget: {concurrent: 2}
routes:
  - model: "slow-*"
    upstream: narrow
  - model: "*"
    upstream: fake
cache:
  store: memory
transcripts:
  mode: jsonl
  flush_interval: 200ms
  jsonl:
    dir: ${SOAK_TRANSCRIPTS}
`

// soakPolicy: demo (unlimited, may wait 10 s at the provider); the trusted
// app key names end users of the tight tier, 30 requests a minute each and
// no waiting, so most of their requests are 429s.
func soakPolicy() string {
	return `
tiers:
  users:
    max_wait: 10s
    max_queue: 100
  tight:
    rpm: 30
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: users
  - id: app
    sha256: ` + sha256Hex(appKey) + `
    trusted: true
    team: apps
    tier: users
    user_tier: tight
`
}

// soakSample is one reading of the process's resources.
type soakSample struct {
	at         time.Duration // since the load began
	rss        float64       // process_resident_memory_bytes
	goroutines float64       // go_goroutines
	fds        float64       // process_open_fds
}

// scrapeResources reads the three series from one GET /metrics.
func (s *sluiceProc) scrapeResources() (soakSample, error) {
	m, err := testkit.Scrape(s.AdminURL + "/metrics")
	if err != nil {
		return soakSample{}, err
	}
	var out soakSample
	for name, dst := range map[string]*float64{"process_resident_memory_bytes": &out.rss,
		"go_goroutines": &out.goroutines, "process_open_fds": &out.fds} {
		v, ok := m.Value(name)
		if !ok {
			return soakSample{}, fmt.Errorf("/metrics: no %s", name)
		}
		*dst = v
	}
	return out, nil
}

// soakTally is what the clients saw.
type soakTally struct {
	mu sync.Mutex
	// byKind counts answers by kind of request and status.
	byKind map[string]map[int]int
	// ids maps each answer's X-Request-Id to its status.
	ids map[string]int
	// hits counts answers marked X-Sluice-Cache: hit.
	hits int
	// bad holds the first unexpected outcomes; nBad counts them all.
	bad  []string
	nBad int
}

func (r *soakTally) add(kind string, status int, id, cache string, problem string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	note := func(p string) {
		r.nBad++
		if len(r.bad) < 20 {
			r.bad = append(r.bad, kind+": "+p)
		}
	}
	if problem != "" {
		note(problem)
	}
	if status == 0 {
		return
	}
	if r.byKind[kind] == nil {
		r.byKind[kind] = map[int]int{}
	}
	r.byKind[kind][status]++
	if id == "" {
		note("answer without X-Request-Id")
	} else if _, dup := r.ids[id]; dup {
		note("X-Request-Id " + id + " seen twice")
	}
	r.ids[id] = status
	if cache == "hit" {
		r.hits++
	}
}

// soakRequest is one request of the mix.
type soakRequest struct {
	kind, path, key, user string
	body                  string
	header                map[string]string
	stream                bool
	// may429 allows a 429 (with Retry-After) besides a 200.
	may429 bool
}

// soakMix returns the i-th request of the mix, in a cycle of 20: plain chats
// (temperature 1, never cached), cacheable chats and streams from a small set
// of prompts (hits once warm), streams with usage, embeddings from a small
// set, and the tight tier's users (mostly 429s).
func soakMix(i int) soakRequest {
	chat := func(prompt string, temp int, stream, usage bool) string {
		s := fmt.Sprintf(`{"model":"gpt-4o-mini","max_tokens":16,"temperature":%d,"messages":[{"role":"user","content":%q}]`, temp, prompt)
		if stream {
			s += `,"stream":true`
			if usage {
				s += `,"stream_options":{"include_usage":true}`
			}
		}
		return s + "}"
	}
	r := soakRequest{path: "/v1/chat/completions", key: demoKey}
	switch slot := i % 20; {
	case slot < 8:
		r.kind, r.body = "chat", chat(fmt.Sprintf("soak plain %d", i), 1, false, false)
	case slot < 11:
		r.kind, r.body = "chat_cacheable", chat(fmt.Sprintf("soak cached %d", i%32), 0, false, false)
	case slot < 14:
		r.kind, r.body, r.stream = "stream", chat(fmt.Sprintf("soak stream %d", i), 1, true, slot != 13), true
	case slot == 14:
		r.kind, r.body, r.stream = "stream_cacheable", chat(fmt.Sprintf("soak cached stream %d", i%16), 0, true, false), true
	case slot < 17:
		r.kind, r.path = "embedding", "/v1/embeddings"
		r.body = fmt.Sprintf(`{"model":"text-embedding-3-small","input":"soak embed %d"}`, i%64)
	default:
		r.kind, r.key, r.user, r.may429 = "tight_user", appKey, fmt.Sprintf("soak-tight-%d", i%5), true
		r.body = chat(fmt.Sprintf("soak tight %d", i), 1, false, false)
	}
	return r
}

// soakQueued is one of a burst of three slow calls to the narrow upstream,
// which runs two at once: the third waits at the provider stage.
func soakQueued(i int) soakRequest {
	return soakRequest{kind: "provider_queued", path: "/v1/chat/completions", key: demoKey,
		body:   fmt.Sprintf(`{"model":"slow-mini","max_tokens":8,"temperature":1,"messages":[{"role":"user","content":"soak queued %d"}]}`, i),
		header: map[string]string{fakeai.HeaderLatency: "300ms"}}
}

// do sends r and tallies the answer; a transport error, an unexpected
// status or a stream without [DONE] is a problem.
func (r soakRequest) do(client *http.Client, base string, tally *soakTally) {
	req, _ := http.NewRequest(http.MethodPost, base+r.path, strings.NewReader(r.body))
	req.Header.Set("Authorization", "Bearer "+r.key)
	req.Header.Set("Content-Type", "application/json")
	if r.user != "" {
		req.Header.Set("X-Sluice-User", r.user)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		tally.add(r.kind, 0, "", "", err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	problem := ""
	switch {
	case err != nil:
		problem = "reading the answer: " + err.Error()
	case resp.StatusCode == http.StatusTooManyRequests && r.may429:
		if resp.Header.Get("Retry-After") == "" {
			problem = "429 without Retry-After"
		}
	case resp.StatusCode != http.StatusOK:
		problem = fmt.Sprintf("status %d: %.200s", resp.StatusCode, body)
	case r.stream && !bytes.HasSuffix(bytes.TrimSpace(body), []byte("data: [DONE]")):
		problem = fmt.Sprintf("stream without [DONE]: %.300q", body)
	case !r.stream && !json.Valid(body):
		problem = fmt.Sprintf("invalid JSON answer: %.200q", body)
	}
	tally.add(r.kind, resp.StatusCode, resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Sluice-Cache"), problem)
}

// Flatness, stated: after the warm-up (the first third), the maximum of the
// last third may exceed the maximum of the second third by at most 10% plus
// a small absolute slack (in-flight requests at the moment of a sample
// vary), and never pass the absolute bounds.
const (
	soakTolerance     = 0.10
	soakRSSSlack      = 16 << 20
	soakCountSlack    = 64 // goroutines and descriptors
	soakMaxRSS        = 512 << 20
	soakMaxGoroutines = 4000
	soakMaxFDs        = 2000
)

// TestSoak drives SLUICE_SOAK (e.g. "10m") of mixed load through the binary
// at SLUICE_SOAK_RATE requests per second (default 200) plus a burst of
// three provider-queued calls every 600 ms, samples the process's RSS,
// goroutines and open descriptors from its /metrics every few seconds, and
// checks: the samples are flat after the warm-up; every request was
// answered with an expected status (200; 200 or 429 for the tight tier);
// no panic; everything settles back to the baseline afterwards; and the
// JSONL transcripts hold exactly one record per answered request, with its
// status.
func TestSoak(t *testing.T) {
	spec := os.Getenv("SLUICE_SOAK")
	if spec == "" {
		t.Skip("SLUICE_SOAK unset (e.g. SLUICE_SOAK=10m; scripts/faults.sh sets it)")
	}
	if testing.Short() {
		t.Skip("soak: not under -short")
	}
	dur, err := time.ParseDuration(spec)
	if err != nil || dur < 30*time.Second {
		t.Fatalf("SLUICE_SOAK=%q: want a duration of at least 30s", spec)
	}
	rate := 200
	if v := os.Getenv("SLUICE_SOAK_RATE"); v != "" {
		if rate, err = strconv.Atoi(v); err != nil || rate < 20 || rate > 2000 {
			t.Fatalf("SLUICE_SOAK_RATE=%q: want 20..2000 requests per second", v)
		}
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl) < dur+3*time.Minute {
		t.Fatalf("the test deadline is %v away; the soak needs %v plus about 3 minutes: raise go test -timeout", time.Until(dl).Round(time.Second), dur)
	}

	dir := t.TempDir()
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: soakConfig, Policies: soakPolicy(),
		Env: map[string]string{"SOAK_TRANSCRIPTS": dir}})
	base := s.resources(t)

	tally := &soakTally{byKind: map[string]map[int]int{}, ids: map[string]int{}}
	// At most 64 connections: Sluice's descriptors and goroutines then
	// measure Sluice, not how many connections a stalled client opened.
	tr := &http.Transport{MaxConnsPerHost: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	inflight := make(chan struct{}, 1024) // bounds the client, not the rate
	var sent atomic.Int64
	send := func(r soakRequest) {
		inflight <- struct{}{}
		sent.Add(1)
		wg.Go(func() {
			defer func() { <-inflight }()
			r.do(client, s.URL, tally)
		})
	}

	// Sample every few seconds while the load runs.
	every := min(max(dur/100, time.Second), 5*time.Second)
	var samples []soakSample
	var sampleErr error
	start := time.Now()
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			smp, err := s.scrapeResources()
			if err != nil {
				sampleErr = err
				return
			}
			smp.at = time.Since(start)
			samples = append(samples, smp)
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	// The load, on a fixed schedule (a late sender catches up, so the
	// count is exactly rate × duration): request i of the mix at i/rate,
	// and a burst of three slow calls every 600 ms.
	interval := time.Second / time.Duration(rate)
	total := int(dur / interval)
	for i, queued := 0, 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		send(soakMix(i))
		for ; time.Duration(queued/3)*600*time.Millisecond <= time.Duration(i)*interval; queued++ {
			send(soakQueued(queued))
		}
	}
	loadTime := time.Since(start)
	wg.Wait()
	close(stopSampling)
	<-sampled
	tr.CloseIdleConnections()
	if sampleErr != nil {
		t.Fatalf("sampling /metrics: %v", sampleErr)
	}

	// Every request answered as expected.
	tally.mu.Lock()
	var kinds []string
	answered := 0
	for k, m := range tally.byKind {
		kinds = append(kinds, k)
		for _, n := range m {
			answered += n
		}
	}
	sort.Strings(kinds)
	var summary []string
	for _, k := range kinds {
		var parts []string
		for _, st := range []int{200, 429} {
			if n := tally.byKind[k][st]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d×%d", n, st))
			}
		}
		for st, n := range tally.byKind[k] {
			if st != 200 && st != 429 {
				parts = append(parts, fmt.Sprintf("%d×%d", n, st))
			}
		}
		summary = append(summary, k+" "+strings.Join(parts, " "))
	}
	t.Logf("soak: %d requests sent in %v (%.0f/s, target %d/s + 5/s queued), %d answered: %s; cache hits %d",
		sent.Load(), loadTime.Round(time.Second), float64(sent.Load())/loadTime.Seconds(), rate, answered,
		strings.Join(summary, "; "), tally.hits)
	nBad, bad, hits := tally.nBad, tally.bad, tally.hits
	n429 := tally.byKind["tight_user"][429]
	ids := tally.ids
	tally.mu.Unlock()
	if nBad > 0 {
		t.Errorf("%d requests not answered as expected; the first:\n  %s", nBad, strings.Join(bad, "\n  "))
	}
	if int64(answered) != sent.Load() {
		t.Errorf("%d requests sent, %d answered", sent.Load(), answered)
	}
	if hits == 0 || n429 == 0 {
		t.Errorf("the mix did not exercise the cache (%d hits) or the limiter (%d 429s)", hits, n429)
	}
	if v, _ := s.metric(t, "sluice_queue_outcomes_total", `stage="provider"`, `outcome="served"`); v == 0 {
		t.Error("no request waited at the provider stage")
	}

	// Flat after the warm-up.
	report := func(name string, f func(soakSample) float64, unit float64, slack, bound float64) {
		var warm, mid, last []float64
		for _, smp := range samples {
			switch v := f(smp); {
			case smp.at < loadTime/3:
				warm = append(warm, v)
			case smp.at < 2*loadTime/3:
				mid = append(mid, v)
			default:
				last = append(last, v)
			}
		}
		if len(mid) == 0 || len(last) == 0 {
			t.Fatalf("%d samples: too few to compare thirds", len(samples))
		}
		mx := func(v []float64) float64 {
			m := v[0]
			for _, x := range v {
				m = max(m, x)
			}
			return m
		}
		warmV, endV := mid[0], last[len(last)-1]
		t.Logf("soak %-10s start %8.1f  after warm-up %8.1f  end %8.1f  (max: warm-up %.1f, second third %.1f, last third %.1f)",
			name, f(samples[0])/unit, warmV/unit, endV/unit, mx(warm)/unit, mx(mid)/unit, mx(last)/unit)
		if limit := mx(mid)*(1+soakTolerance) + slack; mx(last) > limit {
			t.Errorf("%s grew: last third's max %.1f > second third's max %.1f + %.0f%% + %.0f", name,
				mx(last)/unit, mx(mid)/unit, soakTolerance*100, slack/unit)
		}
		for _, smp := range samples {
			if v := f(smp); v > bound {
				t.Errorf("%s reached %.1f at %v, over the bound %.1f", name, v/unit, smp.at.Round(time.Second), bound/unit)
				break
			}
		}
	}
	t.Logf("soak: %d samples, one every %v", len(samples), every)
	report("RSS (MiB)", func(s soakSample) float64 { return s.rss }, 1<<20, soakRSSSlack, soakMaxRSS)
	report("goroutines", func(s soakSample) float64 { return s.goroutines }, 1, soakCountSlack, soakMaxGoroutines)
	report("open fds", func(s soakSample) float64 { return s.fds }, 1, soakCountSlack, soakMaxFDs)

	// Nothing left behind, no panic.
	after := s.checkSettled(t, base)
	t.Logf("soak: settled at %v goroutines, %v fds (baseline %v, %v)", after.goroutines, after.fds, base.goroutines, base.fds)

	// One transcript per answered request, with its status.
	lines := func() int {
		n := 0
		files, _ := filepath.Glob(filepath.Join(dir, "transcripts-*.jsonl"))
		for _, p := range files {
			b, _ := os.ReadFile(p)
			n += bytes.Count(b, []byte("\n"))
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for lines() < answered && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	seen := make(map[string]bool, answered)
	records, wrong := 0, 0
	files, _ := filepath.Glob(filepath.Join(dir, "transcripts-*.jsonl"))
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			// The client saw the upstream's X-Request-Id when it sent one
			// (upstream_request_id), else Sluice's own (request_id).
			var rec struct {
				RequestID         string `json:"request_id"`
				UpstreamRequestID string `json:"upstream_request_id"`
				Status            int    `json:"status"`
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			records++
			id := rec.UpstreamRequestID
			if id == "" {
				id = rec.RequestID
			}
			st, ok := ids[id]
			if !ok || seen[id] || seen[rec.RequestID] || st != rec.Status {
				if wrong++; wrong <= 5 {
					t.Errorf("transcript %s (upstream %s) status %d: answered %t (status %d), seen before %t",
						rec.RequestID, id, rec.Status, ok, st, seen[id] || seen[rec.RequestID])
				}
			}
			seen[id], seen[rec.RequestID] = true, true // both unique
		}
		_ = f.Close()
	}
	if records != answered || wrong > 0 {
		t.Errorf("%d transcripts for %d answered requests (%d wrong)", records, answered, wrong)
	}
	t.Logf("soak: %d transcripts, one per answered request", records)
}
