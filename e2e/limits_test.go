package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// limitsPolicy gives the demo key tight budgets (parameters: rpm limit,
// rpm burst, tpm limit, tpm burst) plus an unlimited trusted app key.
const limitsPolicy = `
tiers:
  t:
    rpm: {limit: %d, burst: %d}
    tpm: {limit: %d, burst: %d}
    default_max_tokens: 200
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: t
`

// limitsConfig is a sluice.yaml whose buckets live in Redis at addr under
// prefix.
func limitsConfig(addr, prefix string) string {
	return fmt.Sprintf(`
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
upstreams:
  - name: fake
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
limits:
  store: redis
redis:
  addr: %s
  prefix: %q
  # Generous: these tests are about sharing, and a call cut short on a busy
  # machine would fall back to local buckets and skew the counts.
  timeout: 2s
`, addr, prefix)
}

func rateLimited(err error) (*openai.Error, bool) {
	var e *openai.Error
	if errors.As(err, &e) && e.StatusCode == http.StatusTooManyRequests {
		return e, true
	}
	return nil, false
}

// TestLimitsAnswers checks what a metered user sees: x-ratelimit-* headers,
// a 429 naming the limit with an exact retry-after that admits a client
// waiting exactly that long, a request too large to ever fit, and the usage
// chunk Sluice asked for on the client's behalf removed from its stream.
func TestLimitsAnswers(t *testing.T) {
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Policies: fmt.Sprintf(limitsPolicy, 60, 3, 60000, 3000)})
	c := s.client(demoKey)
	ctx := context.Background()
	ask := func() (*http.Response, error) {
		var resp *http.Response
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("limits " + nonce()), MaxTokens: openai.Int(50),
		}, option.WithResponseInto(&resp))
		return resp, err
	}
	for i := range 3 {
		resp, err := ask()
		if err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
		h := resp.Header
		if h.Get("X-Ratelimit-Limit-Requests") != "60" || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(2-i) ||
			h.Get("X-Ratelimit-Limit-Tokens") != "60000" || h.Get("X-Ratelimit-Reset-Requests") == "" {
			t.Fatalf("request %d: rate-limit headers %v", i, h)
		}
	}
	_, err := ask()
	e, ok := rateLimited(err)
	if !ok {
		t.Fatalf("4th request over a burst of 3: want a 429, got %v", err)
	}
	if e.Code != "rate_limit_exceeded" || e.Type != "requests" || !strings.Contains(e.Message, "requests per minute") {
		t.Fatalf("429 body: %+v", e)
	}
	ms, err := strconv.Atoi(e.Response.Header.Get("Retry-After-Ms"))
	if err != nil || ms <= 0 || ms > 1000 || e.Response.Header.Get("Retry-After") != "1" {
		t.Fatalf("retry headers: %v", e.Response.Header)
	}
	// Retry-After is honest: waiting exactly that long is enough.
	time.Sleep(time.Duration(ms) * time.Millisecond)
	if _, err := ask(); err != nil {
		t.Fatalf("retry after exactly retry-after-ms (%d ms): %v", ms, err)
	}

	// A request whose reservation exceeds the token burst never fits: a 429
	// that says so, with no retry hint.
	time.Sleep(time.Second)
	_, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: userMessages("too big"), MaxTokens: openai.Int(5000),
	})
	e, ok = rateLimited(err)
	if !ok || e.Type != "tokens" || !strings.Contains(e.Message, "too large") || e.Response.Header.Get("Retry-After") != "" {
		t.Fatalf("oversized request: want a 429 without retry-after, got %v", err)
	}

	// A stream: Sluice asks the upstream for usage to settle, and removes
	// the usage chunk since the client did not ask for it.
	time.Sleep(time.Second)
	st := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: userMessages("stream " + nonce()),
	})
	chunks := 0
	for st.Next() {
		ch := st.Current()
		chunks++
		if len(ch.Choices) == 0 || ch.JSON.Usage.Valid() && ch.Usage.TotalTokens > 0 {
			t.Fatalf("the client got a usage chunk it did not ask for: %s", ch.RawJSON())
		}
	}
	if err := st.Err(); err != nil || chunks == 0 {
		t.Fatalf("stream: %d chunks, %v", chunks, err)
	}
	last := fake.LastRequest()
	if !strings.Contains(string(last.Body), `"include_usage":true`) {
		t.Fatalf("the upstream was not asked for usage: %s", last.Body)
	}
	// Settled from usage: far less was used than reserved (max_tokens 50 or
	// the tier's 200 per request), and the difference was refunded.
	reserved, _ := s.metric(t, "sluice_limiter_tokens_total", `kind="reserved"`)
	actual, _ := s.metric(t, "sluice_limiter_tokens_total", `kind="actual"`)
	if actual <= 0 || actual >= reserved/2 {
		t.Fatalf("tokens reserved %v, actual %v: want actual well below reserved", reserved, actual)
	}
}

// TestLimitsSharedAcrossReplicas runs three Sluice processes on one Redis;
// one user sends three times their rpm for 60 s, spread over the three.
// The requests admitted must match the policy (limit over the period plus
// the burst) within 2%, as if there were one gateway.
func TestLimitsSharedAcrossReplicas(t *testing.T) {
	redisAddr := testRedis(t)
	t.Parallel()
	const (
		rpm      = 300
		burst    = 20
		duration = 60 * time.Second
	)
	if testing.Short() {
		t.Skip("60 s of load; skipped with -short")
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	cfg := limitsConfig(redisAddr, fmt.Sprintf("e2e-%s:", nonce()))
	pol := fmt.Sprintf(limitsPolicy, rpm, burst, 10_000_000, 10_000_000)
	var procs []*sluiceProc
	for range 3 {
		procs = append(procs, startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol}))
	}
	var admitted, limited, other atomic.Int64
	interval := time.Minute / (3 * rpm) // three times the rate
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; time.Since(start) < duration; i++ {
		next := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(next))
		p := procs[i%3]
		wg.Go(func() {
			_, err := p.client(demoKey).Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: userMessages("r"), MaxTokens: openai.Int(5),
			})
			switch _, rl := rateLimited(err); {
			case err == nil:
				admitted.Add(1)
			case rl:
				limited.Add(1)
			default:
				other.Add(1)
				t.Errorf("request: %v", err)
			}
		})
	}
	wg.Wait()
	want := float64(burst) + float64(rpm)*duration.Minutes()
	got := float64(admitted.Load())
	t.Logf("admitted %v (policy allows %v), rejected %d, other %d", got, want, limited.Load(), other.Load())
	if got < want*0.98 || got > want*1.02 {
		t.Fatalf("admitted %v requests over three replicas; the policy allows %v ±2%%", got, want)
	}
	// Unshared buckets would admit about three times as much; the replicas'
	// own counts add up to what the client saw. (How the admissions split
	// between replicas depends on the phase of the round robin against the
	// refill, so no per-replica share is asserted.)
	var sumAdm, sumRej float64
	for _, p := range procs {
		adm, _ := p.metric(t, "sluice_limiter_decisions_total", `outcome="admitted"`)
		rej, _ := p.metric(t, "sluice_limiter_decisions_total", `outcome="rejected"`)
		t.Logf("replica %s: admitted %v, rejected %v", p.URL, adm, rej)
		sumAdm, sumRej = sumAdm+adm, sumRej+rej
	}
	if sumAdm != got || sumRej != float64(limited.Load()) {
		t.Fatalf("replicas counted %v admitted and %v rejected; the client saw %v and %d", sumAdm, sumRej, got, limited.Load())
	}
}

// TestLimitsTokensStreaming runs 20 concurrent streaming clients of ~1,000
// tokens each against a tpm of 10,000 shared by three replicas on one Redis.
// Tokens are reserved before each call and settled from the stream's usage,
// so the tokens used in any 60 s window stay within the limit plus the burst
// (one request's reservation), and the generous max_tokens is refunded.
func TestLimitsTokensStreaming(t *testing.T) {
	redisAddr := testRedis(t)
	t.Parallel()
	if testing.Short() {
		t.Skip("70 s of load; skipped with -short")
	}
	const (
		tpm      = 10_000
		burst    = 2_500 // about one request's reservation (prompt estimate + max_tokens)
		clients  = 20
		duration = 70 * time.Second
		window   = time.Minute
	)
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey, Chunks: 20, ChunkInterval: 20 * time.Millisecond})
	cfg := limitsConfig(redisAddr, fmt.Sprintf("e2e-%s:", nonce()))
	pol := fmt.Sprintf(limitsPolicy, 100_000, 100_000, tpm, burst)
	var procs []*sluiceProc
	for range 3 {
		procs = append(procs, startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol}))
	}
	// ~500 words of prompt; the fake echoes them, so ~1,000 tokens in all.
	prompt := strings.Repeat("tokens ", 500)
	type use struct {
		at     time.Time
		tokens int64
	}
	var mu sync.Mutex
	var uses []use
	var limited atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		c := procs[i%3].client(demoKey)
		wg.Go(func() {
			for time.Since(start) < duration {
				began := time.Now()
				st := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
					Model: "gpt-4o-mini", Messages: userMessages(prompt), MaxTokens: openai.Int(1500),
					StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
				})
				var total int64
				for st.Next() {
					if ch := st.Current(); ch.Usage.TotalTokens > 0 {
						total = ch.Usage.TotalTokens
					}
				}
				if err := st.Err(); err != nil {
					var e *openai.Error
					if errors.As(err, &e) && e.StatusCode == http.StatusTooManyRequests {
						limited.Add(1)
						ms, _ := strconv.Atoi(e.Response.Header.Get("Retry-After-Ms"))
						time.Sleep(time.Duration(ms) * time.Millisecond)
						continue
					}
					t.Errorf("stream: %v", err)
					return
				}
				mu.Lock()
				// Admission happened when the stream was asked for; usage
				// arrives at its end, about 0.4 s later: count it at the start.
				uses = append(uses, use{at: began, tokens: total})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(uses) == 0 || limited.Load() == 0 {
		t.Fatalf("%d streams admitted, %d limited: the test did not reach the limit", len(uses), limited.Load())
	}
	var worst, sum int64
	for i := range uses {
		var inWindow int64
		for j := range uses {
			if d := uses[j].at.Sub(uses[i].at); d >= 0 && d < window {
				inWindow += uses[j].tokens
			}
		}
		worst = max(worst, inWindow)
		sum += uses[i].tokens
	}
	t.Logf("%d streams admitted (%d tokens, ~%d each), %d rejected; most tokens in a 60 s window: %d (limit %d + burst %d)",
		len(uses), sum, sum/int64(len(uses)), limited.Load(), worst, tpm, burst)
	if worst > tpm+burst {
		t.Fatalf("a 60 s window used %d tokens; the policy allows %d + %d", worst, tpm, burst)
	}
	if worst < tpm/2 {
		t.Fatalf("a 60 s window used only %d tokens of %d: admission is far too strict", worst, tpm)
	}
	var reserved, actual float64
	for _, p := range procs {
		r, _ := p.metric(t, "sluice_limiter_tokens_total", `kind="reserved"`)
		a, _ := p.metric(t, "sluice_limiter_tokens_total", `kind="actual"`)
		reserved, actual = reserved+r, actual+a
	}
	if actual >= reserved || actual < float64(sum)*0.9 {
		t.Fatalf("reserved %v, settled %v (clients saw %d): a generous max_tokens must be refunded", reserved, actual, sum)
	}
}

// TestLimitsRedisDown kills the buckets' Redis (by PID) under each
// on_store_error mode and checks the configured behaviour, then restarts it
// and checks Sluice recovers by itself.
func TestLimitsRedisDown(t *testing.T) {
	testRedis(t) // the suite runs with Redis; this test starts its own to kill
	for _, mode := range []string{"allow", "deny", "local"} {
		t.Run(mode, func(t *testing.T) {
			r := startRedis(t)
			fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
			pol := "on_store_error: " + mode + "\nreplicas: 2\n" + fmt.Sprintf(limitsPolicy, 600, 4, 1_000_000, 1_000_000)
			s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: limitsConfig(r.addr, "down:"), Policies: pol})
			c := s.client(demoKey)
			ask := func() error {
				_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
					Model: "gpt-4o-mini", Messages: userMessages("x"), MaxTokens: openai.Int(5),
				})
				return err
			}
			if err := ask(); err != nil {
				t.Fatalf("with Redis up: %v", err)
			}
			r.kill(t)
			var ok, limited, unavailable int
			for range 6 {
				err := ask()
				var e *openai.Error
				switch {
				case err == nil:
					ok++
				case errors.As(err, &e) && e.StatusCode == 429:
					limited++
				case errors.As(err, &e) && e.StatusCode == 503 && e.Code == "limiter_unavailable":
					unavailable++
				default:
					t.Fatalf("with Redis down: %v", err)
				}
			}
			switch mode {
			case "allow": // admitted, beyond the burst of 4
				if ok != 6 {
					t.Fatalf("allow: %d admitted of 6", ok)
				}
			case "deny":
				if unavailable != 6 {
					t.Fatalf("deny: %d of 6 got 503", unavailable)
				}
			case "local": // in-memory buckets, burst 4 / 2 replicas = 2
				if ok != 2 || limited != 4 {
					t.Fatalf("local: %d admitted, %d limited; want 2 and 4", ok, limited)
				}
			}
			if v, _ := s.metric(t, "sluice_limiter_store_errors_total"); v < 1 {
				t.Fatalf("store errors not counted")
			}
			if n := strings.Count(s.Output(), "bucket store failing"); n != 1 {
				t.Fatalf("the incident was logged %d times; want once", n)
			}
			// Redis comes back on the same port: Sluice uses it again.
			r.start(t)
			deadline := time.Now().Add(5 * time.Second)
			for s.waitLogLine(0, "bucket store answers again") == "" {
				if time.Now().After(deadline) {
					t.Fatalf("no recovery logged after Redis came back")
				}
				_ = ask()
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
}

// testRedis returns the suite's Redis address, failing unless -short.
func testRedis(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis: skipped under -short")
	}
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		t.Fatal("SLUICE_TEST_REDIS_ADDR is not set: run the suite with scripts/test.sh, which starts Redis")
	}
	return addr
}

// redisProc is a Redis server this test started and may kill.
type redisProc struct {
	addr, port, dir string
	cmd             *exec.Cmd
}

func startRedis(t *testing.T) *redisProc {
	t.Helper()
	addr := freeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	r := &redisProc{addr: addr, port: port, dir: t.TempDir()}
	r.start(t)
	t.Cleanup(func() { r.kill(t) })
	return r
}

func (r *redisProc) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", r.port, "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no")
	r.cmd.Stdout, r.cmd.Stderr = nil, nil
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	for range 100 {
		out, err := exec.Command("redis-cli", "-p", r.port, "ping").Output()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("redis on port %s did not answer", r.port)
}

// kill ends the Redis server by its PID.
func (r *redisProc) kill(t *testing.T) {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}
