package e2e

import (
	"fmt"
	"net/http"
	"sync"
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
			var wg sync.WaitGroup
			var mu sync.Mutex
			statuses := map[string]int{}
			var failures []string
			start := make(chan struct{})
			for i := range n {
				c := procs[i%3].client(demoKey)
				wg.Go(func() {
					<-start
					var content, finish, st string
					var err error
					if i%2 == 0 {
						r := streamChat(ctx, c, p)
						err = r.err
						if len(r.acc.Choices) > 0 {
							content, finish = r.acc.Choices[0].Message.Content, string(r.acc.Choices[0].FinishReason)
						}
						st = r.header.Get("X-Sluice-Cache")
					} else {
						var comp *openai.ChatCompletion
						var h http.Header
						comp, h, err = chat(ctx, c, p)
						if err == nil {
							content, finish = comp.Choices[0].Message.Content, string(comp.Choices[0].FinishReason)
							st = h.Get("X-Sluice-Cache")
						}
					}
					mu.Lock()
					defer mu.Unlock()
					statuses[st]++
					if err != nil || content != want || finish != "stop" {
						failures = append(failures, fmt.Sprintf("request %d (stream %v): %v %q %q", i, i%2 == 0, err, content, finish))
					}
				})
			}
			close(start)
			wg.Wait()
			for _, f := range failures {
				t.Error(f)
			}
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
