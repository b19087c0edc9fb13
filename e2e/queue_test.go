package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// queueConfig is a sluice.yaml whose one upstream has a budget (rpm, rpm
// burst, tpm) and the given max_attempts; with redisAddr the budget (and
// the users' buckets) live in Redis under prefix.
func queueConfig(rpm, rpmBurst, tpm, attempts int, redisAddr, prefix string) string {
	c := fmt.Sprintf(`
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  shutdown_timeout: 10s
upstreams:
  - name: fake
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
    max_conns: 2048
    max_attempts: %d
    budget: {rpm: %d, rpm_burst: %d, tpm: %d}
`, attempts, rpm, rpmBurst, tpm)
	if redisAddr != "" {
		c += fmt.Sprintf("limits:\n  store: redis\nredis:\n  addr: %s\n  prefix: %q\n  timeout: 2s\n", redisAddr, prefix)
	}
	return c
}

// queuePolicy: an app key whose end users each get rpm per minute and may
// wait maxWait; the demo key's user "demo" is in the same tier.
func queuePolicy(rpm int, maxWait string) string {
	return fmt.Sprintf(`
tiers:
  users:
    rpm: %d
    max_wait: %s
    max_queue: 200
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: users
  - id: app
    sha256: %s
    trusted: true
    team: apps
    tier: users
`, rpm, maxWait, sha256Hex(appKey))
}

// queueLoad is what one run of the queue load saw.
type queueLoad struct {
	served, servedLate, rejectedUpFront, retriesOK, otherErrs int64
	rejectedAtDeadline                                        int64 // 429s after waiting the max wait
	userLimited                                               int64 // 429s naming a user's own limit
	waits                                                     []time.Duration
	attempts                                                  map[int]int64 // requests by attempts needed
}

// runUsers sends one chat request per user, at a random time within window,
// through c; a 429 is retried after its Retry-After (up to 6 attempts).
func runUsers(t *testing.T, c *openai.Client, users int, share float64, window, maxWait time.Duration, seed uint64) *queueLoad {
	r := rand.New(rand.NewPCG(seed, 7))
	res := &queueLoad{attempts: map[int]int64{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for u := range users {
		if r.Float64() >= share {
			continue
		}
		at := time.Duration(r.Int64N(int64(window)))
		wg.Go(func() {
			time.Sleep(time.Until(start.Add(at)))
			user := fmt.Sprintf("user-%04d", u)
			for attempt := 1; attempt <= 6; attempt++ {
				var resp *http.Response
				t0 := time.Now()
				_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model: "gpt-4o-mini", Messages: userMessages("hello " + user), MaxTokens: openai.Int(20),
				}, option.WithHeader("X-Sluice-User", user), option.WithResponseInto(&resp))
				took := time.Since(t0)
				mu.Lock()
				if err == nil {
					res.served++
					res.waits = append(res.waits, took)
					if took > maxWait+2*time.Second {
						res.servedLate++
					}
					if attempt > 1 {
						res.retriesOK++
					}
					res.attempts[attempt]++
					mu.Unlock()
					return
				}
				e, limited := rateLimited(err)
				if !limited {
					res.otherErrs++
					mu.Unlock()
					t.Errorf("user %s: %v", user, err)
					return
				}
				if e.Code != "provider_capacity" {
					res.userLimited++
				}
				switch {
				case took <= time.Second:
					res.rejectedUpFront++
				case took <= maxWait+time.Second:
					// Waited its max wait (the queue's estimate was
					// short); it is booked a slot.
					res.rejectedAtDeadline++
				default:
					t.Errorf("user %s: a 429 came after %v, neither up front nor at the max wait", user, took)
				}
				mu.Unlock()
				ms, _ := strconv.Atoi(e.Response.Header.Get("Retry-After-Ms"))
				if ms <= 0 {
					t.Errorf("user %s: 429 without retry-after-ms", user)
					return
				}
				time.Sleep(time.Duration(ms) * time.Millisecond)
			}
			mu.Lock()
			res.attempts[7]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return res
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

// TestQueueLoad is the queue's load test (scripts/queue-load.sh runs it
// alone): 1,000 simulated users against a fake provider enforcing 600 RPM
// and 100k TPM, first directly (its 429s counted), then through Sluice with
// the provider's budget configured: no upstream 429, no user limited within
// their own limits, every request served within its max wait or rejected
// with a Retry-After that a retry honours: up front, or (at most 1 %, where
// the queue's estimate was short) at its max wait. Retry slots booked for
// the rejected are placed after the requests waiting, so they delay none
// of them past its max wait.
func TestQueueLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("about 80 s of load; skipped with -short")
	}
	users := envInt("SLUICE_QUEUE_LOAD_USERS", 1000)
	window := time.Duration(envInt("SLUICE_QUEUE_LOAD_SECONDS", 30)) * time.Second
	const share = 1.0 // of the users send a request in the window
	const maxWait = 5 * time.Second
	direct := startFake(t, fakeai.Config{APIKey: upstreamKey, RPM: 600, TPM: 100_000, Latency: 50 * time.Millisecond})
	via := startFake(t, fakeai.Config{APIKey: upstreamKey, RPM: 600, TPM: 100_000, Latency: 50 * time.Millisecond})
	// The budget mirrors the provider's: 600 a minute, and nearly all of
	// them at once when idle (its bucket holds a minute); a margin of five
	// requests covers the two clocks' rounding at the bucket's edge.
	s := startSluice(t, sluiceOptions{BaseURL: via.URL, Config: queueConfig(600, 595, 100_000, 5, "", ""),
		Policies: queuePolicy(6, maxWait.String())})

	var wg sync.WaitGroup
	var d, q *queueLoad
	wg.Go(func() {
		// Directly: the same users with the official SDK's default retries
		// off, so every 429 the provider gives is seen.
		c := direct.directClient()
		d = runUsers(t, c, users, share, window, maxWait, 1)
	})
	wg.Go(func() {
		c := s.client(appKey)
		q = runUsers(t, c, users, share, window, maxWait, 1)
	})
	wg.Wait()
	st := via.Stats()
	t.Logf("direct to the provider: %d served, %d answered 429 by the provider (%d provider 429s in all)",
		d.served, d.rejectedUpFront, direct.Stats().RateLimited)
	t.Logf("through Sluice: %d served (waits p50 %v p99 %v max %v), %d served late, %d 429s up front and %d at the max wait (all with Retry-After), "+
		"%d served after retrying, attempts %v, %d user-limit 429s, %d other errors; provider saw %d requests, %d provider 429s",
		q.served, percentile(q.waits, .5), percentile(q.waits, .99), percentile(q.waits, 1), q.servedLate, q.rejectedUpFront, q.rejectedAtDeadline,
		q.retriesOK, q.attempts, q.userLimited, q.otherErrs, st.Requests, st.RateLimited)
	if direct.Stats().RateLimited == 0 {
		t.Errorf("the direct run saw no provider 429s: the load does not exceed the provider's limits")
	}
	if st.RateLimited != 0 {
		t.Errorf("the provider answered %d requests through Sluice with 429", st.RateLimited)
	}
	if q.userLimited != 0 || q.servedLate != 0 || q.otherErrs != 0 {
		t.Errorf("through Sluice: %d user-limit 429s, %d served past max wait, %d errors; want none", q.userLimited, q.servedLate, q.otherErrs)
	}
	if q.rejectedAtDeadline > int64(users)/100 {
		t.Errorf("%d requests were answered 429 at their max wait; want at most 1%%", q.rejectedAtDeadline)
	}
	if q.attempts[7] != 0 {
		t.Errorf("%d users were never served after 6 attempts", q.attempts[7])
	}
	if v, _ := s.metric(t, "sluice_queue_outcomes_total", `stage="provider"`, `outcome="served"`); v == 0 {
		t.Errorf("sluice_queue_outcomes_total{stage=provider,outcome=served} is 0: nothing waited")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestQueueUserWaitsForOwnSlot: a user over their own rpm waits for the
// slot their bucket reserved instead of getting a 429, and is told how
// long; past the max wait the 429 comes at once with an exact
// Retry-After; X-Sluice-Max-Wait shortens the wait.
func TestQueueUserWaitsForOwnSlot(t *testing.T) {
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(0, 0, 0, 3, "", ""),
		Policies: strings.Replace(queuePolicy(60, "1500ms"), "rpm: 60", "rpm: {limit: 60, burst: 1}", 1)})
	c := s.client(demoKey)
	ask := func(opts ...option.RequestOption) (*http.Response, time.Duration, error) {
		var resp *http.Response
		start := time.Now()
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("wait " + nonce()), MaxTokens: openai.Int(5),
		}, append(opts, option.WithResponseInto(&resp))...)
		return resp, time.Since(start), err
	}
	if _, _, err := ask(); err != nil {
		t.Fatal(err)
	}
	// The burst is spent: the next slot is a second away, within 1.5 s.
	resp, took, err := ask()
	if err != nil {
		t.Fatalf("second request: %v (want a wait, not an error)", err)
	}
	waited, _ := strconv.Atoi(resp.Header.Get("X-Sluice-Queue-Wait-Ms"))
	t.Logf("second request took %v, x-sluice-queue-wait-ms %d", took, waited)
	if took < 800*time.Millisecond || waited < 800 || waited > 1200 {
		t.Fatalf("took %v, queue wait header %d ms; want about one second", took, waited)
	}
	// One request waits for the next slot (1 s away); a second one at the
	// same time would need the slot after (2 s > 1.5 s): an immediate 429.
	waiting := make(chan error, 1)
	go func() {
		_, _, err := ask()
		waiting <- err
	}()
	time.Sleep(100 * time.Millisecond)
	_, took, err = ask()
	e, limited := rateLimited(err)
	if !limited || took > 500*time.Millisecond {
		t.Fatalf("third request: err %v after %v; want an immediate 429", err, took)
	}
	ms, _ := strconv.Atoi(e.Response.Header.Get("Retry-After-Ms"))
	if ms < 250 || ms > 550 {
		t.Fatalf("retry-after-ms %d, want about 400 (1.9 s needed − 1.5 s allowed)", ms)
	}
	if err := <-waiting; err != nil {
		t.Fatalf("the waiting request: %v", err)
	}
	// A client that will not wait more than 100 ms is refused at once.
	time.Sleep(time.Duration(ms) * time.Millisecond)
	_, took, err = ask(option.WithHeader("X-Sluice-Max-Wait", "0.1"))
	if _, limited := rateLimited(err); !limited || took > 500*time.Millisecond {
		t.Fatalf("with X-Sluice-Max-Wait 0.1: err %v after %v, want an immediate 429", err, took)
	}
	_, _, err = ask(option.WithHeader("X-Sluice-Max-Wait", "soon"))
	if e := asAPIError(t, err); e.StatusCode != 400 {
		t.Fatalf("bad X-Sluice-Max-Wait: status %d, want 400", e.StatusCode)
	}
}

// TestQueueClientsHangUp: 100 requests queued for the provider's capacity
// whose clients hang up are dropped before any upstream call, the queue
// drains, and no slot leaks.
func TestQueueClientsHangUp(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 20 s (100 hung-up clients, then the settle check): skipped under -short")
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(60, 1, 0, 3, "", ""),
		Policies: queuePolicy(1000, "300s")})
	base := s.resources(t)
	c := s.client(demoKey)
	chat := func() error {
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("hang " + nonce()), MaxTokens: openai.Int(5),
		})
		return err
	}
	if err := chat(); err != nil { // spends the burst: the next slot is 1 s away
		t.Fatal(err)
	}
	before := fake.Stats().Requests
	host := strings.TrimPrefix(s.URL, "http://")
	body := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"max_tokens":5}`
	var conns []net.Conn
	for i := range 100 {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"X-Sluice-User: u%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			host, appKey, i, len(body), body)
	}
	if !waitFor(5*time.Second, func() bool {
		v, _ := s.metric(t, "sluice_queue_depth", `stage="provider"`)
		return v == 100
	}) {
		v, _ := s.metric(t, "sluice_queue_depth", `stage="provider"`)
		t.Fatalf("queue depth %v, want 100 waiting", v)
	}
	for _, conn := range conns {
		conn.Close()
	}
	if !waitFor(2*time.Second, func() bool {
		v, _ := s.metric(t, "sluice_queue_depth", `stage="provider"`)
		return v == 0
	}) {
		t.Fatal("the queue did not drain after its clients hung up")
	}
	abandoned, _ := s.metric(t, "sluice_queue_outcomes_total", `stage="provider"`, `outcome="abandoned"`)
	if abandoned != 100 {
		t.Fatalf("abandoned %v, want 100", abandoned)
	}
	// No slot leaked: the next request is served after about one slot.
	start := time.Now()
	if err := chat(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("the next request waited %v; the hung-up requests held capacity", d)
	}
	if n := fake.Stats().Requests - before; n != 1 {
		t.Fatalf("the provider saw %d requests after the first; want 1 (none for the 100 that hung up)", n)
	}
	s.checkSettled(t, base)
}

// TestQueueUpstream429Storm: the provider answers every call with 429
// (retry-after 1.5 s) for 10 s. Clients whose max wait covers the storm see
// waits, not errors; afterwards the drain rate recovers.
func TestQueueUpstream429Storm(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10 s storm; skipped with -short")
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(600, 10, 0, 20, "", ""),
		Policies: queuePolicy(1000, "30s")})
	c := s.client(appKey)
	fake.SetFault(429)
	stormEnd := time.Now().Add(10 * time.Second)
	go func() {
		time.Sleep(time.Until(stormEnd))
		fake.SetFault(0)
	}()
	var served, failed atomic.Int64
	var waits []time.Duration
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 150 * time.Millisecond) // spread over 6 s of the storm
			start := time.Now()
			_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: userMessages("storm"), MaxTokens: openai.Int(5),
			}, option.WithHeader("X-Sluice-User", fmt.Sprint("s", i%8)))
			if err != nil {
				failed.Add(1)
				e, _ := rateLimited(err)
				if e != nil {
					t.Errorf("request %d after %v: %v (%s: %s)", i, time.Since(start), err, e.Code, e.Message)
				} else {
					t.Errorf("request %d: %v", i, err)
				}
				return
			}
			served.Add(1)
			mu.Lock()
			waits = append(waits, time.Since(start))
			mu.Unlock()
		})
	}
	wg.Wait()
	retries, _ := s.metric(t, "sluice_upstream_retries_total")
	throttled, _ := s.metric(t, "sluice_upstream_throttled_total", `status="429"`)
	t.Logf("served %d, failed %d, waits p50 %v max %v; upstream 429s %v, retries %v, provider calls %d",
		served.Load(), failed.Load(), percentile(waits, .5), percentile(waits, 1), throttled, retries, fake.Stats().Requests)
	if served.Load() != 40 {
		t.Fatalf("%d of 40 served through a 10 s storm", served.Load())
	}
	// The queue, not the clients, absorbed the storm, and did not hammer
	// the provider: at most a few calls per retry-after window.
	if fake.Stats().Errors > 60 {
		t.Fatalf("the provider answered %d calls with 429 during the storm; the pause should hold calls back", fake.Stats().Errors)
	}
	// The drain recovers: successes raise the factor back to 1.
	for i := 0; i < 30; i++ {
		_, _ = c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("after"), MaxTokens: openai.Int(5),
		}, option.WithHeader("X-Sluice-User", "after"))
	}
	if f, _ := s.metric(t, "sluice_upstream_drain_factor", `upstream="fake"`); f != 1 {
		t.Fatalf("drain factor %v after the storm and 30 successes, want 1", f)
	}
}

// TestQueueReplicasShareBudget: two replicas on one Redis keep the provider
// within its budget together.
func TestQueueReplicasShareBudget(t *testing.T) {
	redisAddr := testRedis(t)
	if testing.Short() {
		t.Skip("20 s of load; skipped with -short")
	}
	const rpm = 120
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey, RPM: rpm})
	cfg := queueConfig(rpm, 2, 0, 3, redisAddr, fmt.Sprintf("e2e-q-%s:", nonce()))
	pol := queuePolicy(1000, "5s")
	a := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol})
	b := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol})
	var served, busy atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	const duration = 20 * time.Second
	for w := range 16 { // 16 closed-loop clients, 8 per replica
		p := a
		if w%2 == 1 {
			p = b
		}
		wg.Go(func() {
			c := p.client(appKey)
			for time.Since(start) < duration {
				_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model: "gpt-4o-mini", Messages: userMessages("r"), MaxTokens: openai.Int(5),
				}, option.WithHeader("X-Sluice-User", fmt.Sprint("w", w)))
				if e, limited := rateLimited(err); limited {
					busy.Add(1)
					ms, _ := strconv.Atoi(e.Response.Header.Get("Retry-After-Ms"))
					time.Sleep(time.Duration(min(max(ms, 100), 2000)) * time.Millisecond)
					continue
				} else if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				served.Add(1)
			}
		})
	}
	wg.Wait()
	st := fake.Stats()
	elapsed := time.Since(start)
	allowed := float64(rpm)*elapsed.Minutes() + rpm // the provider's bucket starts full
	ga, _ := a.metric(t, "sluice_upstream_grants_total", `upstream="fake"`)
	gb, _ := b.metric(t, "sluice_upstream_grants_total", `upstream="fake"`)
	t.Logf("served %d in %v (replica grants %v + %v), %d rejected up front; provider 429s %d",
		served.Load(), elapsed.Round(time.Millisecond), ga, gb, busy.Load(), st.RateLimited)
	if st.RateLimited != 0 {
		t.Fatalf("the provider answered %d calls with 429: the replicas overdrew its budget", st.RateLimited)
	}
	if ga == 0 || gb == 0 {
		t.Fatalf("grants %v and %v: both replicas should have served", ga, gb)
	}
	// Together at the budget's rate: 2 per second, not twice that.
	rate := float64(served.Load()) / elapsed.Seconds()
	if rate > 2.3 || float64(served.Load()) > allowed {
		t.Fatalf("served %.2f/s together, budget 2/s", rate)
	}
}

// TestQueueFailoverAndBreaker: the primary upstream answers 500; calls fail
// over to the route's fallback, the primary's breaker opens so it stops
// being called, and after its cooldown a success closes it again.
func TestQueueFailoverAndBreaker(t *testing.T) {
	primary := startFake(t, fakeai.Config{APIKey: upstreamKey})
	backup := startFake(t, fakeai.Config{APIKey: upstreamKey})
	cfg := fmt.Sprintf(`
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
upstreams:
  - name: primary
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
    breaker: {failure_ratio: 0.5, min_calls: 10, window: 10s, cooldown: 2s}
  - name: backup
    base_url: %s
    api_key: ${OPENAI_API_KEY}
routes:
  - model: "*"
    upstream: primary
    fallbacks: [backup]
`, backup.URL)
	s := startSluice(t, sluiceOptions{BaseURL: primary.URL, Config: cfg, Policies: queuePolicy(10000, "5s")})
	c := s.client(demoKey)
	chat := func() error {
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("failover"), MaxTokens: openai.Int(5),
		})
		return err
	}
	primary.SetFault(500)
	for i := range 30 {
		if err := chat(); err != nil {
			t.Fatalf("request %d with the primary failing: %v (want the fallback's answer)", i, err)
		}
	}
	p, b := primary.Stats().Requests, backup.Stats().Requests
	state, _ := s.metric(t, "sluice_upstream_breaker_state", `upstream="primary"`)
	t.Logf("primary called %d times, backup %d; primary breaker state %v", p, b, state)
	if b != 30 || p != 10 || state != 2 {
		t.Fatalf("primary %d calls, backup %d, breaker %v; want 10 calls until the breaker opened (state 2) and all 30 served by the backup", p, b, state)
	}
	// Healed: after the cooldown the next call goes to the primary and
	// closes the breaker.
	primary.SetFault(0)
	time.Sleep(2100 * time.Millisecond)
	if err := chat(); err != nil {
		t.Fatal(err)
	}
	if n := primary.Stats().Requests; n != p+1 {
		t.Fatalf("after the cooldown the primary got %d calls, want 1", n-p)
	}
	if state, _ := s.metric(t, "sluice_upstream_breaker_state", `upstream="primary"`); state != 0 {
		t.Fatalf("breaker state %v after a successful call, want 0 (closed)", state)
	}
}

// TestQueueStreamKeepalive: a stream request that must wait and asks for
// keep-alives gets its 200 at once and ": queued" comments while it waits;
// the official SDK ignores them and reads the answer. When the upstream
// then fails, the client gets the error as a stream error event.
func TestQueueStreamKeepalive(t *testing.T) {
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(60, 1, 0, 1, "", ""),
		Policies: queuePolicy(1000, "30s")})
	c := s.client(demoKey)
	params := openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: userMessages("keep me alive"), MaxTokens: openai.Int(20)}
	if _, err := c.Chat.Completions.New(context.Background(), params); err != nil { // the burst: next slot in 1 s
		t.Fatal(err)
	}
	// Raw HTTP first, to see the comments.
	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"raw"}],"max_tokens":5}`
	req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+demoKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sluice-Queue-Keepalive", "0.2")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	headersAfter := time.Since(start)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	comments := strings.Count(string(raw), ": queued position=")
	t.Logf("headers after %v, whole answer after %v, %d keep-alive comments", headersAfter, time.Since(start), comments)
	if resp.StatusCode != 200 || headersAfter > 300*time.Millisecond || comments < 3 ||
		!strings.Contains(string(raw), "data: [DONE]") {
		t.Fatalf("status %d, headers after %v, %d comments, answer:\n%s", resp.StatusCode, headersAfter, comments, raw)
	}
	// The official SDK: the comments are ignored, the answer arrives.
	stream := c.Chat.Completions.NewStreaming(context.Background(), params, option.WithHeader("X-Sluice-Queue-Keepalive", "0.2"))
	var text strings.Builder
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || text.Len() == 0 {
		t.Fatalf("SDK stream after keep-alives: err %v, text %q", err, text.String())
	}
	// The upstream fails after the 200 went out: a stream error.
	fake.SetFault(500)
	stream = c.Chat.Completions.NewStreaming(context.Background(), params, option.WithHeader("X-Sluice-Queue-Keepalive", "0.2"))
	for stream.Next() {
	}
	err = stream.Err()
	t.Logf("upstream failure after the 200: %v", err)
	if err == nil || !strings.Contains(err.Error(), "error") {
		t.Fatalf("stream err %v, want the upstream's error as a stream error", err)
	}
}

// TestQueueShutdownAnswersQueued: SIGTERM answers every queued request
// at once with 503 and a retry hint, while the request in flight finishes.
func TestQueueShutdownAnswersQueued(t *testing.T) {
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(60, 1, 0, 1, "", ""),
		Policies: queuePolicy(1000, "60s")})
	c := s.client(appKey)
	ask := func(user string, opts ...option.RequestOption) error {
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("drain"), MaxTokens: openai.Int(5),
		}, append(opts, option.WithHeader("X-Sluice-User", user))...)
		return err
	}
	// In flight while the signal comes: a slow answer holding the slot.
	inFlight := make(chan error, 1)
	go func() { inFlight <- ask("slow", option.WithHeader("X-Fake-Latency", "1500ms")) }()
	if !waitFor(5*time.Second, func() bool { return fake.Stats().Requests == 1 }) {
		t.Fatal("the slow request did not reach the upstream")
	}
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, 5)
	for i := range 5 {
		go func() {
			start := time.Now()
			err := ask(fmt.Sprint("q", i))
			results <- result{err, time.Since(start)}
		}()
	}
	if !waitFor(5*time.Second, func() bool {
		v, _ := s.metric(t, "sluice_queue_depth", `stage="provider"`)
		return v == 5
	}) {
		t.Fatal("5 requests did not queue")
	}
	s.signal(t, syscall.SIGTERM)
	for range 5 {
		r := <-results
		e := asAPIError(t, r.err)
		if e.StatusCode != 503 || e.Code != "shutting_down" || e.Response.Header.Get("Retry-After") != "1" || r.took > 2*time.Second {
			t.Fatalf("queued request: status %d code %q retry-after %q after %v; want an immediate 503 shutting_down with retry-after 1",
				e.StatusCode, e.Code, e.Response.Header.Get("Retry-After"), r.took)
		}
	}
	if err := <-inFlight; err != nil {
		t.Fatalf("the request in flight: %v (want its answer)", err)
	}
	if err := s.waitExit(t, 10*time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
}

// TestQueueFairnessThroughSluice: through the binary, 10 equal users at
// saturation get equal shares (Jain's index ≥ 0.95); then a heavy user
// sending 50× what each of 9 light users sends leaves the light users'
// p99 queue wait within two service slots.
func TestQueueFairnessThroughSluice(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s of load; skipped with -short")
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	// 600 a minute, one at a time: a service slot is 100 ms.
	const slot = 100 * time.Millisecond
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(600, 1, 0, 1, "", ""),
		Policies: queuePolicy(100000, "30s")})
	c := s.client(appKey)
	ask := func(user string) (time.Duration, error) {
		var resp *http.Response
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("fair"), MaxTokens: openai.Int(5),
		}, option.WithHeader("X-Sluice-User", user), option.WithResponseInto(&resp))
		if err != nil {
			return 0, err
		}
		ms, _ := strconv.Atoi(resp.Header.Get("X-Sluice-Queue-Wait-Ms"))
		return time.Duration(ms) * time.Millisecond, nil
	}
	// Equal users: 10 × 4 requests always outstanding, 8 s.
	served := make([]atomic.Int64, 10)
	stop := time.Now().Add(8 * time.Second)
	var wg sync.WaitGroup
	for u := range 10 {
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					if _, err := ask(fmt.Sprint("eq", u)); err != nil {
						t.Error(err)
						return
					}
					served[u].Add(1)
				}
			})
		}
	}
	wg.Wait()
	var sum, sq float64
	var counts []int64
	for u := range served {
		x := float64(served[u].Load())
		counts = append(counts, served[u].Load())
		sum += x
		sq += x * x
	}
	jain := sum * sum / (10 * sq)
	t.Logf("equal users served %v: Jain's index %.3f", counts, jain)
	if jain < 0.95 {
		t.Fatalf("Jain's index %.3f < 0.95", jain)
	}
	// Heavy vs light: the heavy user keeps 50 requests outstanding; nine
	// light users send one request every 2.5 s each, staggered (each below
	// its fair share of a tenth of the budget, one a second), so the heavy
	// user sends about 50× what each light user does.
	stop = time.Now().Add(10 * time.Second)
	for range 50 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				if _, err := ask("heavy"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(time.Second) // the heavy queue fills
	var mu sync.Mutex
	var waits []time.Duration
	for u := range 9 {
		wg.Go(func() {
			time.Sleep(time.Duration(u) * 277 * time.Millisecond)
			for time.Now().Before(stop.Add(-time.Second)) {
				start := time.Now()
				w, err := ask(fmt.Sprint("light", u))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				waits = append(waits, w)
				mu.Unlock()
				time.Sleep(2500*time.Millisecond - time.Since(start))
			}
		})
	}
	wg.Wait()
	for _, stage := range []string{"user", "provider"} {
		n, _ := s.metric(t, "sluice_queue_wait_seconds_count", `stage="`+stage+`"`)
		sum, _ := s.metric(t, "sluice_queue_wait_seconds_sum", `stage="`+stage+`"`)
		t.Logf("stage %s: %v waits, %v s in all", stage, n, sum)
	}
	p50, p99 := percentile(waits, .5), percentile(waits, .99)
	t.Logf("light users: %d requests, queue wait p50 %v p99 %v (slot %v; the heavy user had ~50 queued)", len(waits), p50, p99, slot)
	if p99 > 2*slot+50*time.Millisecond { // timer slack on a busy machine
		t.Fatalf("light p99 queue wait %v, want within two service slots (%v)", p99, 2*slot)
	}
}
