package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// slotRun is what one overload run of chat users saw.
type slotRun struct {
	mu sync.Mutex
	// turns and failed are the users' turns, and those that failed all
	// three attempts; answers the turns answered per user.
	turns, failed int
	answers       map[string]int
	// retriesAtSlot are attempts made after a 429 whose retry-after the
	// SDK honoured (<= 60 s), retriesOK those answered; noRetry the 429s
	// that said x-should-retry: false.
	retriesAtSlot, retriesOK, noRetry int
	// other are errors that are not a 429; cut the turns still waiting
	// when the run ended (their clients hung up).
	other, cut int
}

// turnLog is one turn's attempts, recorded by the client's middleware.
type turnLog struct {
	statuses []int
	retryMs  []int
}

type turnKey struct{}

// slotClient is the official SDK with its default two retries (which wait
// a 429's retry-after-ms when under 60 s and obey x-should-retry), each
// attempt recorded in the turn's log.
func slotClient(s *sluiceProc) *openai.Client {
	rec := func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
		resp, err := next(req)
		if tl, ok := req.Context().Value(turnKey{}).(*turnLog); ok {
			st, ms := 0, -1
			if resp != nil {
				st = resp.StatusCode
				if v, e := strconv.Atoi(resp.Header.Get("Retry-After-Ms")); e == nil {
					ms = v
				}
				if resp.Header.Get("X-Should-Retry") == "false" {
					ms = -2
				}
			}
			tl.statuses, tl.retryMs = append(tl.statuses, st), append(tl.retryMs, ms)
		}
		return resp, err
	}
	return s.client(appKey, option.WithMaxRetries(2), option.WithMiddleware(rec))
}

// runChatUsers runs users chat users for d: each sends a turn, thinks 1 to
// 3 s after it (answered or not), and sends the next.
func runChatUsers(t *testing.T, c *openai.Client, users int, d time.Duration) *slotRun {
	res := &slotRun{answers: map[string]int{}}
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for u := range users {
		r := rand.New(rand.NewPCG(uint64(u), 11))
		wg.Go(func() {
			user := fmt.Sprintf("chat-%03d", u)
			time.Sleep(time.Duration(r.Int64N(int64(2 * time.Second))))
			for turn := 0; time.Now().Before(end); turn++ {
				tl := &turnLog{}
				ctx, cancel := context.WithDeadline(context.WithValue(context.Background(), turnKey{}, tl), end.Add(3*time.Second))
				_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model: "gpt-4o-mini", Messages: userMessages(fmt.Sprintf("%s turn %d %s", user, turn, nonce())), MaxTokens: openai.Int(16),
				}, option.WithHeader("X-Sluice-User", user))
				cut := ctx.Err() != nil
				cancel()
				res.mu.Lock()
				res.turns++
				if err == nil {
					res.answers[user]++
				} else if _, limited := rateLimited(err); limited {
					res.failed++
				} else if cut {
					res.cut++
				} else {
					res.other++
					t.Errorf("%s: %v", user, err)
				}
				if _, ok := res.answers[user]; !ok {
					res.answers[user] = 0
				}
				for i := 1; i < len(tl.statuses); i++ {
					if tl.statuses[i-1] == http.StatusTooManyRequests && tl.retryMs[i-1] >= 0 && tl.retryMs[i-1] <= 60000 {
						res.retriesAtSlot++
						if tl.statuses[i] == http.StatusOK {
							res.retriesOK++
						}
					}
				}
				for _, ms := range tl.retryMs {
					if ms == -2 {
						res.noRetry++
					}
				}
				res.mu.Unlock()
				time.Sleep(time.Second + time.Duration(r.Int64N(int64(2*time.Second))))
			}
		})
	}
	wg.Wait()
	return res
}

// fairness returns the users who asked and got no answer, and those who
// got two or more.
func (r *slotRun) fairness() (none, several, most int) {
	for _, n := range r.answers {
		switch {
		case n == 0:
			none++
		case n >= 2:
			several++
		}
		most = max(most, n)
	}
	return none, several, most
}

// TestRetrySlotsUnderOverload: chat users with the official SDK (two
// retries honouring retry-after) at about 3 and 20 times a 300 RPM
// provider's capacity through Sluice. Asserted: no provider 429, the
// capacity used (>= 90 % of what the budget grants in the run), the
// retries made at their retry-after served (>= 95 %), and max-min fair
// answers (no user with two answers while one who asked has none, bar a
// few at the run's edges). The full figures are logged.
func TestRetrySlotsUnderOverload(t *testing.T) {
	if testing.Short() {
		t.Skip("two runs of 15 s of overload; skipped with -short")
	}
	d := time.Duration(envInt("SLUICE_SLOTS_SECONDS", 15)) * time.Second
	for _, c := range []struct {
		name  string
		users int
	}{{"3x", 30}, {"20x", 200}} {
		t.Run(c.name, func(t *testing.T) {
			// 300 a minute, 5 at once: five grants a second.
			fake := startFake(t, fakeai.Config{APIKey: upstreamKey, RPM: 300, TPM: 10_000_000, Latency: 20 * time.Millisecond})
			s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: queueConfig(300, 5, 0, 3, "", ""),
				Policies: queuePolicy(600, "2s")})
			// The provider's calls while users send turns (the run's tail,
			// when they stop, is left out).
			sampled := make(chan int64, 1)
			go func() { time.Sleep(d); sampled <- fake.Stats().Requests }()
			r := runChatUsers(t, slotClient(s), c.users, d)
			during := <-sampled
			st := fake.Stats()
			capacity := 5 + 5*d.Seconds() // the burst, then five a second
			none, several, most := r.fairness()
			slots := map[string]float64{}
			for _, o := range []string{"booked", "claimed", "expired", "refused"} {
				slots[o], _ = s.metric(t, "sluice_retry_slots_total", `outcome="`+o+`"`)
			}
			t.Logf("%s: %d users, %v: %d turns, %d answered, %d failed all attempts, %d cut at the end; provider: %d calls while users sent (%.0f%% of %.0f), %d 429s; "+
				"retries at their retry-after: %d, %d answered (%.1f%%); %d 429s with x-should-retry: false; "+
				"answers per user: %d with none, %d with two or more, most %d; slots %v",
				c.name, c.users, d, r.turns, r.turns-r.failed-r.other-r.cut, r.failed, r.cut, during,
				100*float64(during)/capacity, capacity, st.RateLimited,
				r.retriesAtSlot, r.retriesOK, 100*float64(r.retriesOK)/max(float64(r.retriesAtSlot), 1), r.noRetry,
				none, several, most, slots)
			if st.RateLimited != 0 {
				t.Errorf("the provider answered %d calls with 429", st.RateLimited)
			}
			if float64(during) < 0.9*capacity {
				t.Errorf("the provider served %d calls, under 90%% of the %.0f the budget allows", during, capacity)
			}
			if r.retriesAtSlot == 0 || float64(r.retriesOK) < 0.95*float64(r.retriesAtSlot) {
				t.Errorf("%d of %d retries made at their retry-after were answered; want >= 95%%", r.retriesOK, r.retriesAtSlot)
			}
			if none > 0 && several > c.users/20 {
				t.Errorf("%d users got two or more answers while %d who asked got none", several, none)
			}
		})
	}
}

// TestRetrySlotAcrossReplicasE2E: two replicas share a one-a-second
// budget and the book of retry slots in Redis, behind a round robin load
// balancer (a transport sending each attempt to the next replica). A
// user turned away by one replica is booked a slot; the official SDK's
// retry at its retry-after reaches the other replica, which serves it
// there, ahead of a newcomer that came after the booking.
func TestRetrySlotAcrossReplicasE2E(t *testing.T) {
	redisAddr := testRedis(t)
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey, RPM: 60})
	cfg := queueConfig(60, 1, 0, 1, redisAddr, fmt.Sprintf("e2e-slots-%s:", nonce()))
	pol := queuePolicy(1000, "5s")
	a := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol})
	b := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol})
	var attempts atomic.Int64
	var mu sync.Mutex
	var seen []string // "replica status" per attempt of the booked user
	balance := roundTrip(func(req *http.Request) (*http.Response, error) {
		to := a
		if attempts.Add(1)%2 == 0 {
			to = b
		}
		u, _ := url.Parse(to.URL)
		req.URL.Host, req.Host = u.Host, u.Host
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil && req.Header.Get("X-Sluice-User") == "booked" {
			mu.Lock()
			seen = append(seen, fmt.Sprint(map[bool]string{true: "a", false: "b"}[to == a], " ", resp.StatusCode))
			mu.Unlock()
		}
		return resp, err
	})
	c := a.client(appKey, option.WithMaxRetries(2), option.WithHTTPClient(&http.Client{Transport: balance}))
	ask := func(user string, opts ...option.RequestOption) error {
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages(user + " " + nonce()), MaxTokens: openai.Int(8),
		}, append(opts, option.WithHeader("X-Sluice-User", user))...)
		return err
	}
	if err := ask("first"); err != nil { // attempt 1, on a: the budget's burst
		t.Fatal(err)
	}
	order := make(chan string, 2)
	go func() {
		// Attempt 2, on b, may not wait: b turns it away and books the
		// slot; the SDK's retry (attempt 3) goes to a.
		err := ask("booked", option.WithHeader("X-Sluice-Max-Wait", "0"))
		if err != nil {
			t.Errorf("the booked user's turn: %v", err)
		}
		order <- "booked"
	}()
	time.Sleep(200 * time.Millisecond)
	go func() {
		// A newcomer on a that may wait, after the booking.
		_, err := a.client(appKey).Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("newcomer " + nonce()), MaxTokens: openai.Int(8),
		}, option.WithHeader("X-Sluice-User", "newcomer"))
		if err != nil {
			t.Errorf("the newcomer: %v", err)
		}
		order <- "newcomer"
	}()
	first := <-order
	<-order
	mu.Lock()
	defer mu.Unlock()
	t.Logf("the booked user's attempts: %v; answered first: %s", seen, first)
	if len(seen) != 2 || seen[0] != "b 429" || seen[1] != "a 200" {
		t.Fatalf("the booked user's attempts %v, want a 429 on b, then its retry served by a", seen)
	}
	if first != "booked" {
		t.Errorf("the newcomer was answered before the booked user's retry")
	}
	booked, _ := b.metric(t, "sluice_retry_slots_total", `outcome="booked"`)
	claimed, _ := a.metric(t, "sluice_retry_slots_total", `outcome="claimed"`)
	expired, _ := b.metric(t, "sluice_retry_slots_total", `outcome="expired"`)
	if booked != 1 || claimed != 1 {
		t.Errorf("slots booked on b %v, claimed on a %v; want 1 and 1", booked, claimed)
	}
	time.Sleep(1500 * time.Millisecond) // past the slot's tolerance
	if expired, _ = b.metric(t, "sluice_retry_slots_total", `outcome="expired"`); expired != 0 {
		t.Errorf("b counted %v expired: its slot was claimed on a", expired)
	}
	if st := fake.Stats(); st.RateLimited != 0 {
		t.Errorf("the provider answered %d calls 429", st.RateLimited)
	}
}

// roundTrip is an http.RoundTripper from a func.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
