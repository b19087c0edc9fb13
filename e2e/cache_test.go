package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"

	"sluice/fakeai"
)

// Keys of the cache tests besides demoKey (team red): blue and green are
// other teams; red and green may both use the shared namespace shared-docs.
const (
	blueKey  = "sk-sluice-blue-e2e-1b2c3d4e5f6a7b8c9d0e"
	greenKey = "sk-sluice-green-e2e-2c3d4e5f6a7b8c9d0e1f"
	grayKey  = "sk-sluice-gray-e2e-3d4e5f6a7b8c9d0e1f2a" // a tier with the cache off
	tealKey  = "sk-sluice-teal-e2e-4e5f6a7b8c9d0e1f2a3b" // a tier that caches everything
)

func cachePolicies() string {
	return `tiers:
  default:
    description: e2e, cache deterministic by default
  nocache:
    cache: "off"
  everything:
    cache: all
    cache_ttl: 10m
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    team: red
    tier: default
    cache_namespaces: [shared-docs]
  - id: blue
    sha256: ` + sha256Hex(blueKey) + `
    user: bob
    team: blue
    tier: default
  - id: green
    sha256: ` + sha256Hex(greenKey) + `
    user: gina
    team: green
    tier: default
    cache_namespaces: [shared-docs]
  - id: gray
    sha256: ` + sha256Hex(grayKey) + `
    user: gus
    team: gray
    tier: nocache
  - id: teal
    sha256: ` + sha256Hex(tealKey) + `
    user: tina
    team: teal
    tier: everything
`
}

// cacheConfig is the e2e sluice.yaml plus a cache section (and Redis
// settings when redisAddr is set).
func cacheConfig(store, redisAddr, prefix string) string {
	c := makeConfig(configOptions{}) + "cache:\n  store: " + store + "\n  coalesce_wait: 10s\n"
	if redisAddr != "" {
		c += "redis:\n  addr: " + redisAddr + "\n  prefix: \"" + prefix + "\"\n  timeout: 200ms\n"
	}
	return c
}

func chatCalls(f *fakeUpstream) int64 { return f.Stats().ByPath["/v1/chat/completions"] }

// deterministic is a chat request the default tier caches (temperature 0).
func deterministic(prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
		Temperature: openai.Float(0)}
}

type cacheStream struct {
	acc    openai.ChatCompletionAccumulator
	chunks int
	header http.Header
	err    error
}

func streamChat(ctx context.Context, c *openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) cacheStream {
	var resp *http.Response
	st := c.Chat.Completions.NewStreaming(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	var r cacheStream
	for st.Next() {
		r.acc.AddChunk(st.Current())
		r.chunks++
	}
	r.err = st.Err()
	if resp != nil {
		r.header = resp.Header
	}
	return r
}

func chat(ctx context.Context, c *openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) (*openai.ChatCompletion, http.Header, error) {
	var resp *http.Response
	comp, err := c.Chat.Completions.New(ctx, p, append(opts, option.WithResponseInto(&resp))...)
	if resp == nil {
		return comp, nil, err
	}
	return comp, resp.Header, err
}

// TestCacheAnswersEqualOriginals: through the official SDK, cached
// non-stream and stream answers equal the originals, an entry stored from a
// stream serves a non-stream request and the reverse, and usage is replayed
// when asked.
func TestCacheAnswersEqualOriginals(t *testing.T) {
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies()})
	ctx := testContext(t, 30*time.Second)
	c := e.s.client(demoKey)

	// Non-stream, then the same again.
	p := deterministic("cache me " + nonce())
	orig, h1, err := chat(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	again, h2, err := chat(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	if h1.Get("X-Sluice-Cache") != "miss" || h2.Get("X-Sluice-Cache") != "hit" || h2.Get("Age") == "" {
		t.Errorf("x-sluice-cache %q then %q (Age %q); want miss then hit with an Age", h1.Get("X-Sluice-Cache"),
			h2.Get("X-Sluice-Cache"), h2.Get("Age"))
	}
	if again.RawJSON() != orig.RawJSON() {
		t.Errorf("cached answer differs:\n%s\n%s", orig.RawJSON(), again.RawJSON())
	}
	if n := chatCalls(e.fake); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
	// The same request as a stream is served from the entry, with usage.
	usage := p
	usage.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	r := streamChat(ctx, c, usage)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.header.Get("X-Sluice-Cache") != "hit" || r.acc.Choices[0].Message.Content != orig.Choices[0].Message.Content ||
		r.acc.Choices[0].FinishReason != orig.Choices[0].FinishReason || r.acc.Usage.TotalTokens != orig.Usage.TotalTokens ||
		r.acc.Usage.TotalTokens == 0 {
		t.Errorf("stream from a non-stream entry: %s %q %q usage %d; want hit %q %q usage %d", r.header.Get("X-Sluice-Cache"),
			r.acc.Choices[0].Message.Content, r.acc.Choices[0].FinishReason, r.acc.Usage.TotalTokens,
			orig.Choices[0].Message.Content, orig.Choices[0].FinishReason, orig.Usage.TotalTokens)
	}

	// A stream, then the same stream again (with and without usage), then
	// as a non-stream request.
	ps := deterministic("stream me " + nonce())
	ps.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	first := streamChat(ctx, c, ps)
	if first.err != nil || first.header.Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("first stream: %v, %q", first.err, first.header.Get("X-Sluice-Cache"))
	}
	second := streamChat(ctx, c, ps)
	if second.err != nil || second.header.Get("X-Sluice-Cache") != "hit" {
		t.Fatalf("second stream: %v, %q", second.err, second.header.Get("X-Sluice-Cache"))
	}
	a, b := first.acc, second.acc
	if a.ID != b.ID || a.Choices[0].Message.Content != b.Choices[0].Message.Content || a.Choices[0].FinishReason != b.Choices[0].FinishReason ||
		a.Usage.PromptTokens != b.Usage.PromptTokens || a.Usage.CompletionTokens != b.Usage.CompletionTokens || a.Usage.TotalTokens == 0 {
		t.Errorf("replayed stream differs: %q %q %+v; original %q %q %+v", b.Choices[0].Message.Content, b.Choices[0].FinishReason,
			b.Usage, a.Choices[0].Message.Content, a.Choices[0].FinishReason, a.Usage)
	}
	noUsage := ps
	noUsage.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	third := streamChat(ctx, c, noUsage)
	if third.err != nil || third.header.Get("X-Sluice-Cache") != "hit" || third.acc.Usage.TotalTokens != 0 ||
		third.acc.Choices[0].Message.Content != a.Choices[0].Message.Content {
		t.Errorf("stream hit without include_usage: %v %q usage %+v", third.err, third.header.Get("X-Sluice-Cache"), third.acc.Usage)
	}
	ns := ps
	ns.StreamOptions = openai.ChatCompletionStreamOptionsParam{}
	plain, h, err := chat(ctx, c, ns)
	if err != nil || h.Get("X-Sluice-Cache") != "hit" || plain.Choices[0].Message.Content != a.Choices[0].Message.Content ||
		plain.Choices[0].FinishReason != a.Choices[0].FinishReason || plain.Usage.TotalTokens != a.Usage.TotalTokens {
		t.Errorf("non-stream from a stream entry: %v %q %+v", err, h.Get("X-Sluice-Cache"), plain)
	}
	if n := chatCalls(e.fake); n != 2 {
		t.Errorf("upstream calls = %d, want 2 (one per distinct prompt)", n)
	}
	if v, _ := e.s.metric(t, "sluice_cache_hits_total"); v != 5 {
		t.Errorf("sluice_cache_hits_total = %v, want 5", v)
	}
	if v, _ := e.s.metric(t, "sluice_cache_provider_calls_saved_total"); v != 5 {
		t.Errorf("sluice_cache_provider_calls_saved_total = %v, want 5", v)
	}

	// Embeddings are cached too.
	emb := openai.EmbeddingNewParams{Model: openai.EmbeddingModelTextEmbedding3Small,
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed " + nonce())}}
	var er1, er2 *http.Response
	v1, err1 := c.Embeddings.New(ctx, emb, option.WithResponseInto(&er1))
	v2, err2 := c.Embeddings.New(ctx, emb, option.WithResponseInto(&er2))
	if err1 != nil || err2 != nil || er2.Header.Get("X-Sluice-Cache") != "hit" || v1.RawJSON() != v2.RawJSON() {
		t.Errorf("embeddings: %v %v, second %q", err1, err2, er2.Header.Get("X-Sluice-Cache"))
	}
}

// TestCacheRequestControls: non-deterministic requests, no-store and a tier
// with the cache off bypass it; no-cache refreshes; X-Sluice-Cache-TTL: 0
// does not store.
func TestCacheRequestControls(t *testing.T) {
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies()})
	ctx := testContext(t, 30*time.Second)
	c := e.s.client(demoKey)
	status := func(p openai.ChatCompletionNewParams, opts ...option.RequestOption) string {
		t.Helper()
		_, h, err := chat(ctx, c, p, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return h.Get("X-Sluice-Cache")
	}
	warm := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages("warm " + nonce())}
	if s1, s2 := status(warm), status(warm); s1 != "bypass" || s2 != "bypass" {
		t.Errorf("no temperature 0, no seed: %q, %q; want bypass twice", s1, s2)
	}
	seeded := warm
	seeded.Seed = openai.Int(42)
	if s1, s2 := status(seeded), status(seeded); s1 != "miss" || s2 != "hit" {
		t.Errorf("seeded: %q, %q; want miss, hit", s1, s2)
	}
	if s := status(seeded, option.WithHeader("Cache-Control", "no-store")); s != "bypass" {
		t.Errorf("no-store: %q, want bypass", s)
	}
	before := chatCalls(e.fake)
	if s := status(seeded, option.WithHeader("Cache-Control", "no-cache")); s != "miss" || chatCalls(e.fake) != before+1 {
		t.Errorf("no-cache: %q, upstream calls %d→%d; want a miss that calls the provider", s, before, chatCalls(e.fake))
	}
	p := deterministic("ttl zero " + nonce())
	if s1, s2 := status(p, option.WithHeader("X-Sluice-Cache-TTL", "0")), status(p); s1 != "miss" || s2 != "miss" {
		t.Errorf("TTL 0 then plain: %q, %q; want miss, miss", s1, s2)
	}
	gray := e.s.client(grayKey)
	for i := range 2 {
		if _, h, err := chat(ctx, gray, p); err != nil || h.Get("X-Sluice-Cache") != "bypass" {
			t.Errorf("tier with cache off, request %d: %v %q; want bypass", i, err, h.Get("X-Sluice-Cache"))
		}
	}
	// A tier with cache: all caches a request with a temperature above 0.
	hot := warm
	hot.Temperature = openai.Float(0.9)
	teal := e.s.client(tealKey)
	_, h1, err1 := chat(ctx, teal, hot)
	_, h2, err2 := chat(ctx, teal, hot)
	if err1 != nil || err2 != nil || h1.Get("X-Sluice-Cache") != "miss" || h2.Get("X-Sluice-Cache") != "hit" {
		t.Errorf("cache: all with temperature 0.9: %v %v %q %q; want miss, hit", err1, err2, h1.Get("X-Sluice-Cache"), h2.Get("X-Sluice-Cache"))
	}
	if v, _ := e.s.metric(t, "sluice_cache_bypasses_total", `reason="policy"`); v != 4 {
		t.Errorf(`sluice_cache_bypasses_total{reason="policy"} = %v, want 4`, v)
	}
	_, _, err := chat(ctx, c, p, option.WithHeader("X-Sluice-Cache-TTL", "soon"))
	if apiErr := asAPIError(t, err); apiErr.StatusCode != 400 {
		t.Errorf("bad TTL header: status %d, want 400", apiErr.StatusCode)
	}
}

// TestCacheTeamIsolation: team A's cached answer is never served to team
// B; a shared namespace serves only the keys that declare it, and another
// key naming it gets a 403.
func TestCacheTeamIsolation(t *testing.T) {
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies()})
	ctx := testContext(t, 30*time.Second)
	red, blue, green := e.s.client(demoKey), e.s.client(blueKey), e.s.client(greenKey)
	p := deterministic("team secret " + nonce())
	for i, c := range []*openai.Client{red, red, blue, blue, green} {
		_, h, err := chat(ctx, c, p)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"miss", "hit", "miss", "hit", "miss"}[i]
		if got := h.Get("X-Sluice-Cache"); got != want {
			t.Errorf("request %d: x-sluice-cache %q, want %q", i, got, want)
		}
	}
	if n := chatCalls(e.fake); n != 3 {
		t.Errorf("upstream calls = %d, want 3 (one per team)", n)
	}
	shared := option.WithHeader("X-Sluice-Cache-Namespace", "shared-docs")
	q := deterministic("shared doc " + nonce())
	_, h1, err1 := chat(ctx, red, q, shared)
	_, h2, err2 := chat(ctx, green, q, shared)
	if err1 != nil || err2 != nil || h1.Get("X-Sluice-Cache") != "miss" || h2.Get("X-Sluice-Cache") != "hit" {
		t.Errorf("shared namespace: %v %v %q %q; want red miss, green hit", err1, err2, h1.Get("X-Sluice-Cache"), h2.Get("X-Sluice-Cache"))
	}
	_, _, err := chat(ctx, blue, q, shared)
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 403 || apiErr.Code != "cache_namespace_forbidden" {
		t.Errorf("blue naming shared-docs: %d %q, want 403 cache_namespace_forbidden", apiErr.StatusCode, apiErr.Code)
	}
	// Without the header, green does not see red's shared entry.
	if _, h, _ := chat(ctx, green, q); h.Get("X-Sluice-Cache") != "miss" {
		t.Errorf("green's own namespace served the shared entry")
	}
}

// TestCacheCoalesce100: 100 identical concurrent requests, half streaming,
// make exactly one upstream call and get 100 complete answers.
func TestCacheCoalesce100(t *testing.T) {
	if testing.Short() {
		t.Skip("100 concurrent requests; skipped with -short")
	}
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies(),
		fake: fakeai.Config{Latency: 700 * time.Millisecond, Chunks: 8, ChunkInterval: 20 * time.Millisecond}})
	ctx := testContext(t, 60*time.Second)
	c := e.s.client(demoKey)
	prompt := "burst " + nonce()
	p := deterministic(prompt)
	want := "echo: " + prompt
	const n = 100
	statuses := burstIdentical(t, ctx, []*openai.Client{c}, p, want, n)
	if calls := chatCalls(e.fake); calls != 1 {
		t.Errorf("upstream calls = %d, want exactly 1", calls)
	}
	if statuses["miss"] != 1 || statuses["miss"]+statuses["coalesced"]+statuses["hit"] != n {
		t.Errorf("x-sluice-cache counts %v; want 1 miss and the rest coalesced (or hit)", statuses)
	}
	t.Logf("x-sluice-cache: %v", statuses)
}

// burstIdentical sends n copies of p at once, round robin over clients,
// every other one streamed, checks that each answers want, and returns
// the x-sluice-cache values seen, with their counts.
func burstIdentical(t *testing.T, ctx context.Context, clients []*openai.Client, p openai.ChatCompletionNewParams, want string, n int) map[string]int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]int{}
	var failures []string
	start := make(chan struct{})
	for i := range n {
		c := clients[i%len(clients)]
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
				comp, h, cerr := chat(ctx, c, p)
				err = cerr
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
	return statuses
}

// testRedisAddr returns SLUICE_TEST_REDIS_ADDR or skips, and a key prefix
// unique to the test whose keys are deleted at the end.
func testRedisAddr(t *testing.T) (addr, prefix string, rc *redis.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Redis: skipped under -short")
	}
	addr = os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		t.Skip("SLUICE_TEST_REDIS_ADDR is not set (source scripts/services.sh; start_redis)")
	}
	prefix = "sluice-e2e:" + t.Name() + ":" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	rc = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, _ := rc.Keys(ctx, prefix+"*").Result(); len(keys) > 0 {
			rc.Del(ctx, keys...)
		}
		_ = rc.Close()
	})
	return addr, prefix, rc
}

// TestCacheReplicasShareRedis: two replicas on one Redis: a miss on one
// becomes a hit on the other; a corrupt entry is a miss, not an error.
func TestCacheReplicasShareRedis(t *testing.T) {
	addr, prefix, rc := testRedisAddr(t)
	f := startFake(t, fakeai.Config{})
	cfg := cacheConfig("tiered", addr, prefix)
	s1 := startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL})
	s2 := startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL})
	ctx := testContext(t, 30*time.Second)
	p := deterministic("replicas " + nonce())
	orig, h1, err1 := chat(ctx, s1.client(demoKey), p)
	other, h2, err2 := chat(ctx, s2.client(demoKey), p)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if h1.Get("X-Sluice-Cache") != "miss" || h2.Get("X-Sluice-Cache") != "hit" || other.RawJSON() != orig.RawJSON() {
		t.Errorf("replica 1 %q, replica 2 %q (equal answers %v); want miss then hit", h1.Get("X-Sluice-Cache"),
			h2.Get("X-Sluice-Cache"), other.RawJSON() == orig.RawJSON())
	}
	if n := chatCalls(f); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
	keys, err := rc.Keys(ctx, prefix+"cache:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("cache keys in Redis under %s: %v, %v; want 1", prefix, keys, err)
	}
	if ttl := rc.PTTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("entry TTL %v, want (0, 1h]", ttl)
	}

	// Corrupt the entry: a third replica (empty memory) misses, answers
	// correctly, counts the corrupt entry.
	rc.Set(ctx, keys[0], "SLC\x01not an entry", time.Hour)
	s3 := startSluice(t, sluiceOptions{Config: cfg, Policies: cachePolicies(), BaseURL: f.URL})
	third, h3, err := chat(ctx, s3.client(demoKey), p)
	if err != nil || h3.Get("X-Sluice-Cache") != "miss" || third.Choices[0].Message.Content != orig.Choices[0].Message.Content {
		t.Errorf("corrupt entry: %v %q; want a miss with the right answer", err, h3.Get("X-Sluice-Cache"))
	}
	if v, _ := s3.metric(t, "sluice_cache_corrupt_total"); v != 1 {
		t.Errorf("sluice_cache_corrupt_total = %v, want 1", v)
	}
	if n := chatCalls(f); n != 2 {
		t.Errorf("upstream calls = %d, want 2", n)
	}
}

// TestCacheRedisDown: with the cache's Redis unreachable, requests are
// misses answered by the provider, never errors.
func TestCacheRedisDown(t *testing.T) {
	f := startFake(t, fakeai.Config{})
	dead := freeAddr(t) // nothing listens there
	s := startSluice(t, sluiceOptions{Config: cacheConfig("redis", dead, "sluice-e2e-down:"), Policies: cachePolicies(), BaseURL: f.URL})
	ctx := testContext(t, 30*time.Second)
	p := deterministic("redis down " + nonce())
	for i := range 3 {
		comp, h, err := chat(ctx, s.client(demoKey), p)
		if err != nil || h.Get("X-Sluice-Cache") != "miss" || comp.Choices[0].Message.Content == "" {
			t.Fatalf("request %d with Redis down: %v %q; want a miss with an answer", i, err, h.Get("X-Sluice-Cache"))
		}
	}
	if n := chatCalls(f); n != 3 {
		t.Errorf("upstream calls = %d, want 3", n)
	}
	if v, _ := s.metric(t, "sluice_cache_store_errors_total"); v < 3 {
		t.Errorf("sluice_cache_store_errors_total = %v, want at least 3", v)
	}
}

// TestCacheHitsCountRequestsNotTokens: a hit counts against the user's
// request budget (the 4th request over a burst of 3 is a 429 even though it
// would be a hit) but reserves and settles no tokens.
func TestCacheHitsCountRequestsNotTokens(t *testing.T) {
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: fmt.Sprintf(limitsPolicy, 60, 3, 60000, 3000)})
	ctx := testContext(t, 30*time.Second)
	c := e.s.client(demoKey)
	p := deterministic("metered " + nonce())
	p.MaxTokens = openai.Int(50)
	var reserved, actual float64
	for i, want := range []string{"miss", "hit", "hit"} {
		_, h, err := chat(ctx, c, p)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if h.Get("X-Sluice-Cache") != want || h.Get("X-Ratelimit-Remaining-Requests") != strconv.Itoa(2-i) {
			t.Errorf("request %d: x-sluice-cache %q, remaining requests %q; want %q, %d", i, h.Get("X-Sluice-Cache"),
				h.Get("X-Ratelimit-Remaining-Requests"), want, 2-i)
		}
		r, _ := e.s.metric(t, "sluice_limiter_tokens_total", `kind="reserved"`)
		a, _ := e.s.metric(t, "sluice_limiter_tokens_total", `kind="actual"`)
		if i == 0 {
			reserved, actual = r, a
			if r <= 0 || a <= 0 {
				t.Fatalf("the miss reserved %v and used %v tokens; want both > 0", r, a)
			}
		} else if r != reserved || a != actual {
			t.Errorf("hit %d changed the token counts: reserved %v→%v, actual %v→%v", i, reserved, r, actual, a)
		}
	}
	_, _, err := chat(ctx, c, p)
	if e, ok := rateLimited(err); !ok || e.Type != "requests" {
		t.Errorf("4th request (a hit) over a burst of 3: want a 429 for requests, got %v", err)
	}
	if n := chatCalls(e.fake); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

// TestCacheStreamTee: requests that arrive while a stream is being relayed
// get a tee of the live stream from its start (every event the leader got,
// not a re-rendering), and non-stream requests get the assembled answer.
func TestCacheStreamTee(t *testing.T) {
	if testing.Short() {
		t.Skip("paced stream; skipped with -short")
	}
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies(),
		fake: fakeai.Config{Chunks: 10, ChunkInterval: 100 * time.Millisecond}})
	ctx := testContext(t, 30*time.Second)
	c := e.s.client(demoKey)
	prompt := "tee " + nonce()
	p := deterministic(prompt)
	leader := make(chan cacheStream, 1)
	go func() { leader <- streamChat(ctx, c, p) }()
	// Join mid-stream.
	if !waitFor(5*time.Second, func() bool { return chatCalls(e.fake) == 1 }) {
		t.Fatal("the leader's call did not reach the upstream")
	}
	time.Sleep(200 * time.Millisecond)
	var wg sync.WaitGroup
	followers := make([]cacheStream, 4)
	plain := make([]string, 4)
	for i := range 4 {
		wg.Go(func() { followers[i] = streamChat(ctx, c, p) })
		wg.Go(func() {
			comp, h, err := chat(ctx, c, p)
			if err != nil || h.Get("X-Sluice-Cache") != "coalesced" {
				t.Errorf("non-stream follower %d: %v %q", i, err, h.Get("X-Sluice-Cache"))
				return
			}
			plain[i] = comp.Choices[0].Message.Content
		})
	}
	wg.Wait()
	l := <-leader
	if l.err != nil || l.header.Get("X-Sluice-Cache") != "miss" {
		t.Fatalf("leader: %v %q", l.err, l.header.Get("X-Sluice-Cache"))
	}
	want := "echo: " + prompt
	for i, f := range followers {
		if f.err != nil || f.header.Get("X-Sluice-Cache") != "coalesced" || f.chunks != l.chunks ||
			f.acc.Choices[0].Message.Content != want || f.acc.ID != l.acc.ID {
			t.Errorf("stream follower %d: %v %q, %d chunks (leader %d), %q", i, f.err, f.header.Get("X-Sluice-Cache"),
				f.chunks, l.chunks, f.acc.Choices[0].Message.Content)
		}
		if plain[i] != want {
			t.Errorf("non-stream follower %d: %q, want %q", i, plain[i], want)
		}
	}
	if n := chatCalls(e.fake); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

// TestCacheLeaderLeaves: when the client whose request leads a shared
// stream goes away, the stream is read on for the requests that follow it;
// they get complete answers, and the answer is stored.
func TestCacheLeaderLeaves(t *testing.T) {
	if testing.Short() {
		t.Skip("paced stream; skipped with -short")
	}
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies(),
		fake: fakeai.Config{Chunks: 10, ChunkInterval: 100 * time.Millisecond}})
	ctx := testContext(t, 30*time.Second)
	c := e.s.client(demoKey)
	prompt := "leaver " + nonce()
	p := deterministic(prompt)
	leaderCtx, leave := context.WithCancel(ctx)
	leaderDone := make(chan error, 1)
	go func() { leaderDone <- streamChat(leaderCtx, c, p).err }()
	if !waitFor(5*time.Second, func() bool { return chatCalls(e.fake) == 1 }) {
		t.Fatal("the leader's call did not reach the upstream")
	}
	time.Sleep(100 * time.Millisecond)
	var wg sync.WaitGroup
	followers := make([]cacheStream, 3)
	for i := range followers {
		wg.Go(func() { followers[i] = streamChat(ctx, c, p) })
	}
	time.Sleep(200 * time.Millisecond) // followers attached, stream under way
	leave()
	if err := <-leaderDone; err == nil {
		t.Errorf("the leader's stream ended cleanly after its client left")
	}
	wg.Wait()
	for i, f := range followers {
		if f.err != nil || f.header.Get("X-Sluice-Cache") != "coalesced" || f.acc.Choices[0].Message.Content != "echo: "+prompt {
			t.Errorf("follower %d after the leader left: %v %q %q", i, f.err, f.header.Get("X-Sluice-Cache"), f.acc.Choices[0].Message.Content)
		}
	}
	// A follower's client is done at [DONE]; the leader's relay stores the
	// answer a moment later, when the upstream body ends. A request in
	// between would rightly be coalesced, so wait for the store.
	if !waitFor(5*time.Second, func() bool {
		v, _ := e.s.metric(t, "sluice_cache_stores_total")
		return v >= 1
	}) {
		t.Fatal("the drained stream was not stored")
	}
	if _, h, err := chat(ctx, c, p); err != nil || h.Get("X-Sluice-Cache") != "hit" {
		t.Errorf("after the stream: %v %q; want a hit (the drained stream was stored)", err, h.Get("X-Sluice-Cache"))
	}
	if n := chatCalls(e.fake); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

// TestCacheHitsCountTokensWhenAsked: with cache_hits_count_tokens a hit
// reserves tokens like a call and is settled at the stored answer's usage.
func TestCacheHitsCountTokensWhenAsked(t *testing.T) {
	pol := `
tiers:
  t:
    rpm: 600
    tpm: 600000
    cache_hits_count_tokens: true
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: t
`
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: pol})
	ctx := testContext(t, 30*time.Second)
	c := e.s.client(demoKey)
	p := deterministic("counted " + nonce())
	p.MaxTokens = openai.Int(50)
	comp, _, err := chat(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := e.s.metric(t, "sluice_limiter_tokens_total", `kind="reserved"`)
	a1, _ := e.s.metric(t, "sluice_limiter_tokens_total", `kind="actual"`)
	_, h, err := chat(ctx, c, p)
	if err != nil || h.Get("X-Sluice-Cache") != "hit" {
		t.Fatalf("second request: %v %q", err, h.Get("X-Sluice-Cache"))
	}
	r2, _ := e.s.metric(t, "sluice_limiter_tokens_total", `kind="reserved"`)
	a2, _ := e.s.metric(t, "sluice_limiter_tokens_total", `kind="actual"`)
	if r2 <= r1 || a2-a1 != float64(comp.Usage.TotalTokens) {
		t.Errorf("hit: reserved %v→%v, actual %v→%v; want a reservation and the stored usage (%d) settled", r1, r2, a1, a2, comp.Usage.TotalTokens)
	}
}

// TestCacheHitLatencyBinary measures memory hits through the real binary on
// loopback TCP, 4 concurrent clients, against the same request sent straight
// to the fake upstream (which answers from memory too): the difference is
// what a hit costs over a provider that answers instantly. The figures are
// logged; the test fails when a hit adds 1 ms or more at the median (the
// p99 of both on a shared 2-core machine moves by milliseconds between runs,
// see docs/cache.md#measured).
func TestCacheHitLatencyBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("load measurement; skipped with -short")
	}
	e := newEnv(t, envOptions{config: cacheConfig("memory", "", ""), policies: cachePolicies()})
	body := []byte(`{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"latency ` + nonce() + `"}]}`)
	measure := func(url, key string) (p50, p99 time.Duration) {
		const workers, per = 4, 500
		lat := make([]time.Duration, workers*per)
		tr := &http.Transport{MaxIdleConnsPerHost: workers}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		do := func() time.Duration {
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			start := time.Now()
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return time.Since(start)
		}
		do() // warm: the entry, the connections
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range per {
					lat[w*per+i] = do()
				}
			})
		}
		wg.Wait()
		slices.Sort(lat)
		return lat[len(lat)/2], lat[len(lat)*99/100]
	}
	d50, d99 := measure(e.fake.URL+"/chat/completions", upstreamKey)
	h50, h99 := measure(e.s.URL+"/v1/chat/completions", demoKey)
	if v, _ := e.s.metric(t, "sluice_cache_hits_total"); v < 2000 {
		t.Fatalf("only %v hits; the measurement is not of hits", v)
	}
	t.Logf("direct to the fake: p50 %v p99 %v; memory hits through sluice: p50 %v p99 %v (added p50 %v, p99 %v)",
		d50, d99, h50, h99, h50-d50, h99-d99)
	if h50-d50 >= time.Millisecond {
		t.Errorf("a memory hit adds %v at the median, want under 1 ms", h50-d50)
	}
}
