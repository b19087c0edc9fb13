package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"sluice/fakeai"
	"sluice/internal/testkit"
)

// budgetPolicy prices gpt-4o-mini at $1 and $2 per 1M tokens (1 and 2 µUSD
// per token) and gives the demo user a daily budget (parameter: USD).
const budgetPolicy = `
prices:
  gpt-4o-mini: {input: 1, output: 2}
tiers:
  t:
    budget: {daily_usd: %g}
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: t
    show_cost: true
`

// TestBudgetStreamsAcrossReplicas: 50 concurrent streams through three
// replicas sharing Redis, against a daily budget worth about ten of them.
// Each reserves its worst case before the call and settles its real cost
// from the stream's usage in the same store step, so the spend settled
// never passes the budget by more than one request's worst case; the others
// get OpenAI's 429 insufficient_quota, which the official SDK raises as its
// usual error, and, told not to retry (x-should-retry: false, the window
// ends hours away), does not retry.
func TestBudgetStreamsAcrossReplicas(t *testing.T) {
	redisAddr := testRedis(t)
	t.Parallel()
	const (
		streams = 50
		prompt  = 300   // words, about as many tokens; the fake echoes them
		maxTok  = 400   // completion allowance: the worst case is ~300 + 2*400 = 1100 µUSD
		budget  = 0.008 // USD: ~8,000 µUSD, about ten streams of ~900 µUSD
	)
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey, Chunks: 20, ChunkInterval: 10 * time.Millisecond})
	cfg := strings.Replace(limitsConfig(redisAddr, fmt.Sprintf("e2e-%s:", nonce())),
		"  admin_listen: ${SLUICE_ADMIN_ADDR}\n", "  admin_listen: ${SLUICE_ADMIN_ADDR}\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1)
	pol := fmt.Sprintf(budgetPolicy, budget)
	var procs []*sluiceProc
	for range 3 {
		procs = append(procs, startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol,
			Env: map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}}))
	}
	text := strings.Repeat("budget ", prompt)
	var admitted, quota atomic.Int64
	var mu sync.Mutex
	var codes []string
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range streams {
		c := procs[i%3].client(demoKey)
		wg.Go(func() {
			<-start
			st := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
				Model: "gpt-4o-mini", Messages: userMessages(text), MaxTokens: openai.Int(maxTok),
			})
			for st.Next() {
			}
			err := st.Err()
			var e *openai.Error
			switch {
			case err == nil:
				admitted.Add(1)
			case errors.As(err, &e) && e.StatusCode == http.StatusTooManyRequests:
				quota.Add(1)
				mu.Lock()
				codes = append(codes, e.Code+"/"+e.Type+"/"+e.Response.Header.Get("X-Should-Retry"))
				mu.Unlock()
				if !strings.Contains(e.Message, "daily budget of $0.008 for user demo is spent") {
					t.Errorf("message %q does not name the budget", e.Message)
				}
			default:
				t.Errorf("stream: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	for _, c := range codes {
		if c != "insufficient_quota/insufficient_quota/false" {
			t.Fatalf("a rejection's code/type/x-should-retry: %s", c)
		}
	}
	// The replicas settle a stream once its last byte is written, a moment
	// after the client read it: wait until every admitted stream is counted
	// and the admin API's counter agrees with the metrics.
	var spent, attempts, adminSpent, adminBudget float64
	settled := testkit.Poll(10*time.Second, func() bool {
		spent, attempts = 0, 0
		var ok200 float64
		for _, p := range procs {
			v, _ := p.metric(t, "sluice_spend_usd_total")
			spent += v
			n, _ := p.metric(t, "sluice_requests_total", `code="429"`)
			attempts += n
			n, _ = p.metric(t, "sluice_requests_total", `code="200"`)
			ok200 += n
		}
		adminSpent, adminBudget = userSpend(t, procs[0])
		return ok200 == float64(admitted.Load()) && math.Abs(adminSpent-spent) < 1e-6
	})
	if !settled {
		t.Fatalf("admin usage says spent $%v of $%v; the metrics say $%v", adminSpent, adminBudget, spent)
	}
	if adminBudget != budget {
		t.Fatalf("admin usage names a budget of $%v, want $%v", adminBudget, budget)
	}
	worst := float64(prompt+2*maxTok) * 1.2 / 1e6 // the prompt's estimate may exceed its count by a little
	t.Logf("%d streams admitted, %d refused insufficient_quota; settled spend $%.6f of a $%g budget (worst case of one ~$%.4f)",
		admitted.Load(), quota.Load(), spent, budget, worst)
	if spent > budget+worst {
		t.Fatalf("spend $%.6f passed the budget $%g by more than one request's worst case", spent, budget)
	}
	if admitted.Load() < 6 || quota.Load() == 0 || spent < budget/2 {
		t.Fatalf("admitted %d, refused %d, spent $%.6f: the budget was not used as it should be", admitted.Load(), quota.Load(), spent)
	}
	if attempts != float64(quota.Load()) {
		t.Fatalf("the replicas answered %v 429s for %d refused streams: the SDK retried a spent budget", attempts, quota.Load())
	}
}

// userSpend reads the demo user's spend today and daily budget through the
// admin API.
func userSpend(t *testing.T, s *sluiceProc) (spent, budget float64) {
	t.Helper()
	status, body := s.admin(t, "GET", "/admin/usage?user=demo", adminToken, "")
	var u struct {
		Buckets []struct {
			Limit     string  `json:"limit"`
			Scope     string  `json:"scope"`
			SpentUSD  float64 `json:"spent_usd"`
			BudgetUSD float64 `json:"budget_usd"`
		} `json:"buckets"`
	}
	if err := json.Unmarshal(body, &u); status != 200 || err != nil {
		t.Fatalf("GET /admin/usage: %d %s %v", status, body, err)
	}
	for _, b := range u.Buckets {
		if b.Limit == "budget_daily" && b.Scope == "user" {
			return b.SpentUSD, b.BudgetUSD
		}
	}
	t.Fatalf("admin usage has no daily budget: %s", body)
	return 0, 0
}
