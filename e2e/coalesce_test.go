package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"sluice/fakeai"
)

// TestCoalesceAcrossReplicas: 100 identical deterministic requests, half of
// them streams, spread over three replicas that share a tiered cache on one
// Redis, reach the provider once. In the replica that takes the key's lock
// the others tee or wait for its call; in the other two the first request
// waits for the entry in Redis (where="remote") and its followers for it.
func TestCoalesceAcrossReplicas(t *testing.T) {
	addr, prefix, _ := testRedisAddr(t)
	for _, store := range []string{"tiered", "redis"} {
		t.Run(store, func(t *testing.T) {
			f := startFake(t, fakeai.Config{Latency: 700 * time.Millisecond, Chunks: 8, ChunkInterval: 20 * time.Millisecond})
			cfg := cacheConfig(store, addr, prefix+store+":")
			var procs []*sluiceProc
			for range 3 {
				procs = append(procs, startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL}))
			}
			ctx := testContext(t, 60*time.Second)
			prompt := "replicas burst " + nonce()
			p := deterministic(prompt)
			want := "echo: " + prompt
			const n = 100
			var clients []*openai.Client
			for _, s := range procs {
				clients = append(clients, s.client(demoKey))
			}
			statuses := burstIdentical(t, ctx, clients, p, want, n)
			t.Logf("x-sluice-cache: %v", statuses)
			if calls := chatCalls(f); calls != 1 {
				t.Errorf("upstream calls = %d over three replicas, want exactly 1", calls)
			}
			if statuses["miss"] != 1 || statuses["miss"]+statuses["coalesced"]+statuses["hit"] != n {
				t.Errorf("x-sluice-cache counts %v; want 1 miss and the rest coalesced (or hit)", statuses)
			}
			var local, remote float64
			for _, s := range procs {
				l, _ := s.metric(t, "sluice_cache_coalesced_total", `where="local"`)
				r, _ := s.metric(t, "sluice_cache_coalesced_total", `where="remote"`)
				local, remote = local+l, remote+r
			}
			t.Logf("coalesced: local %v, remote %v", local, remote)
			if remote < 1 || remote > 2 {
				t.Errorf("sluice_cache_coalesced_total{where=\"remote\"} summed %v; want 1 or 2 (the other replicas' first requests)", remote)
			}
		})
	}
}

// TestPurgeKeyAcrossReplicas: three replicas share a tiered cache on one
// Redis, each holding the answer in its memory tier; one request's entry
// purged through one replica's admin API is no longer served by any of them
// within a second.
func TestPurgeKeyAcrossReplicas(t *testing.T) {
	addr, prefix, _ := testRedisAddr(t)
	f := startFake(t, fakeai.Config{})
	cfg := strings.Replace(cacheConfig("tiered", addr, prefix), "  admin_listen: ${SLUICE_ADMIN_ADDR}\n",
		"  admin_listen: ${SLUICE_ADMIN_ADDR}\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1)
	env := map[string]string{"SLUICE_ADMIN_TOKEN": adminToken}
	var procs []*sluiceProc
	for range 3 {
		procs = append(procs, startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL, Env: env}))
	}
	ctx := testContext(t, 30*time.Second)
	prompt := "purge one key " + nonce()
	p := deterministic(prompt)
	// stale reports an answer from the entry stored before the purge: a hit
	// at least a second old (a new entry, stored after the purge, is younger).
	stale := func(s *sluiceProc) bool {
		t.Helper()
		_, h, err := chat(ctx, s.client(demoKey), p)
		if err != nil {
			t.Fatal(err)
		}
		age, _ := strconv.Atoi(h.Get("Age"))
		return h.Get("X-Sluice-Cache") == "hit" && age >= 1
	}
	for i, s := range procs {
		_, h, err := chat(ctx, s.client(demoKey), p)
		if want := map[bool]string{true: "miss", false: "hit"}[i == 0]; err != nil || h.Get("X-Sluice-Cache") != want {
			t.Fatalf("replica %d before the purge: %v %q; want %s", i, err, h.Get("X-Sluice-Cache"), want)
		}
	}
	time.Sleep(1100 * time.Millisecond) // the entry's Age reaches 1
	for i, s := range procs {
		if !stale(s) {
			t.Fatalf("replica %d does not answer from its copy before the purge", i)
		}
	}
	body := `{"namespace":"team:red","endpoint":"chat","model":"gpt-4o-mini","request":` +
		`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":` + strconv.Quote(prompt) + `}]}}`
	if code, resp := procs[0].admin(t, "POST", "/admin/cache/purge", adminToken, body); code != 200 {
		t.Fatalf("purge: %d %s", code, resp)
	}
	purged := time.Now()
	seen := make([]time.Duration, len(procs))
	for i, s := range procs {
		for stale(s) {
			if time.Since(purged) > 5*time.Second {
				t.Fatalf("replica %d still serves the purged entry after 5 s", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		seen[i] = time.Since(purged)
	}
	t.Logf("the purge was seen after %v", seen)
	for i, d := range seen {
		if d > time.Second {
			t.Errorf("replica %d served the purged entry for %v; want within a second", i, d)
		}
	}
}
