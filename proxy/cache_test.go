package proxy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"sluice/cache"
)

func TestCacheControl(t *testing.T) {
	for v, want := range map[string][2]bool{
		"":                        {false, false},
		"no-store":                {true, false},
		"No-Cache":                {false, true},
		"max-age=0, no-cache":     {false, true},
		" no-store ,no-cache ":    {true, true},
		"no-storex, private":      {false, false},
		"no-transform, no-store,": {true, false},
	} {
		s, c := cacheControl([]byte(v))
		if s != want[0] || c != want[1] {
			t.Errorf("cacheControl(%q) = %v, %v; want %v", v, s, c, want)
		}
	}
}

// cachedChat1K is chatBody1K made deterministic, so the default tier caches it.
var cachedChat1K = []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant for a travel booking site. Answer briefly, in the user's language, and never invent prices or availability."},{"role":"user","content":"I want to fly from Lisbon to Tokyo in March with two children. I want to fly from Lisbon to Tokyo in March with two children. I want to fly from Lisbon to Tokyo in March with two children. I want to fly from Lisbon to Tokyo in March with two children. I want to fly from Lisbon to Tokyo in March with two children. I want to fly from Lisbon to Tokyo in March with two children. "}],"temperature":0,"max_tokens":256,"user":"user-1234","stream":false}`)

// cacheProxy starts a Server with a response cache on store in front of an
// in-memory upstream that counts its calls.
func cacheProxy(tb testing.TB, store cache.Store, mem *cache.Memory) (*fasthttp.Client, *int64, func()) {
	return cacheProxyWith(tb, store, mem, nil)
}

// cacheProxyWith is cacheProxy with the upstream answering by handler (call
// is its 1-based call number); nil answers chatAnswer.
func cacheProxyWith(tb testing.TB, store cache.Store, mem *cache.Memory, handler func(ctx *fasthttp.RequestCtx, call int64)) (*fasthttp.Client, *int64, func()) {
	var calls int64
	var mu sync.Mutex
	upLn := fasthttputil.NewInmemoryListener()
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if handler != nil {
			handler(ctx, n)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(chatAnswer)
	}}
	go upSrv.Serve(upLn) //nolint:errcheck // ends when the listener closes
	reg := prometheus.NewRegistry()
	c, err := cache.New(cache.Options{Store: store, Memory: mem, Registry: reg})
	if err != nil {
		tb.Fatal(err)
	}
	s := newTestServer(tb, "upstreams:\n  - name: mem\n    base_url: http://upstream/v1\n    api_key: sk-up\n", Options{Registry: reg, Cache: c})
	s.upstreams[0].conns.dial = func(string) (net.Conn, error) { return upLn.Dial() }
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConnsPerHost: 64}
	return client, &calls, func() { _ = ln.Close(); _ = upLn.Close() }
}

func chatRequest(body []byte) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI("http://sluice/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.Set("Authorization", "Bearer sk-client")
	req.Header.SetContentType("application/json")
	req.SetBody(body)
	return req
}

func TestCacheHitThroughProxy(t *testing.T) {
	mem := cache.NewMemory(cache.MemoryOptions{})
	c, calls, stop := cacheProxy(t, mem, mem)
	defer stop()
	req := chatRequest(cachedChat1K)
	resp := fasthttp.AcquireResponse()
	for i, want := range []string{"miss", "hit", "hit"} {
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Header.Peek("X-Sluice-Cache")); got != want || resp.StatusCode() != 200 || string(resp.Body()) != chatAnswer {
			t.Errorf("request %d: %d %q %s; want 200 %q and the upstream answer", i, resp.StatusCode(), got, resp.Body(), want)
		}
	}
	if *calls != 1 {
		t.Errorf("upstream calls = %d, want 1", *calls)
	}
	// A stream request for the same prompt is rendered from the entry.
	req.SetBody([]byte(string(cachedChat1K[:len(cachedChat1K)-len(`"stream":false}`)]) + `"stream":true}`))
	if err := c.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	if string(resp.Header.Peek("X-Sluice-Cache")) != "hit" || !slices.Contains([]string{"text/event-stream; charset=utf-8"}, string(resp.Header.ContentType())) {
		t.Errorf("stream hit: %q %q\n%s", resp.Header.Peek("X-Sluice-Cache"), resp.Header.ContentType(), resp.Body())
	}
}

// BenchmarkProxyCacheHit measures a memory hit through the whole handler
// (scan, identify, route, key, lookup, answer), in-memory client included;
// compare BenchmarkProxyChat, the same request forwarded.
func BenchmarkProxyCacheHit(b *testing.B) {
	mem := cache.NewMemory(cache.MemoryOptions{})
	benchHit(b, mem, mem)
}

// BenchmarkProxyCacheHitRedis is the same with the entry in Redis only.
func BenchmarkProxyCacheHitRedis(b *testing.B) {
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		b.Skip("SLUICE_TEST_REDIS_ADDR is not set")
	}
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	prefix := fmt.Sprintf("sluice-bench:%d:", time.Now().UnixNano())
	defer func() {
		if keys, _ := rc.Keys(b.Context(), prefix+"*").Result(); len(keys) > 0 {
			rc.Del(b.Context(), keys...)
		}
	}()
	benchHit(b, cache.NewRedis(rc, cache.RedisOptions{Prefix: prefix, Timeout: time.Second}), nil)
}

func benchHit(b *testing.B, store cache.Store, mem *cache.Memory) {
	c, calls, stop := cacheProxy(b, store, mem)
	defer stop()
	req := chatRequest(cachedChat1K)
	resp := fasthttp.AcquireResponse()
	if err := c.Do(req, resp); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if string(resp.Header.Peek("X-Sluice-Cache")) != "hit" {
			b.Fatalf("not a hit: %q", resp.Header.Peek("X-Sluice-Cache"))
		}
	}
	if *calls != 1 {
		b.Fatalf("upstream calls = %d, want 1", *calls)
	}
}

// TestCacheHitLatencyUnderLoad drives memory hits from 8 concurrent clients
// and checks the p99 of the whole round trip (client, handler, key, lookup,
// answer) stays under 1 ms. Skipped with -short and under the race detector.
func TestCacheHitLatencyUnderLoad(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("load test: skipped with -short and under -race")
	}
	mem := cache.NewMemory(cache.MemoryOptions{})
	c, _, stop := cacheProxy(t, mem, mem)
	defer stop()
	const workers, per = 8, 1000
	lat := make([]time.Duration, workers*per)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			req := chatRequest(cachedChat1K)
			resp := fasthttp.AcquireResponse()
			for i := range per {
				start := time.Now()
				if err := c.Do(req, resp); err != nil {
					t.Error(err)
					return
				}
				lat[w*per+i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("memory hits, %d clients x %d: p50 %v, p99 %v, max %v", workers, per, p50, p99, lat[len(lat)-1])
	if p99 > time.Millisecond {
		t.Errorf("p99 of a memory hit round trip %v, want under 1ms", p99)
	}
}

// TestCacheFollowersFallBackWhenLeaderFails: requests that joined a call
// that fails (a provider 500) are not given its error; each calls the
// provider itself, and nothing is stored.
func TestCacheFollowersFallBackWhenLeaderFails(t *testing.T) {
	mem := cache.NewMemory(cache.MemoryOptions{})
	c, calls, stop := cacheProxyWith(t, mem, mem, func(ctx *fasthttp.RequestCtx, n int64) {
		if n == 1 {
			time.Sleep(300 * time.Millisecond)
			ctx.SetStatusCode(500)
			ctx.SetBodyString(`{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`)
			return
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(chatAnswer)
	})
	defer stop()
	type result struct {
		status int
		cache  string
	}
	do := func() result {
		req := chatRequest(cachedChat1K)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := c.Do(req, resp); err != nil {
			t.Error(err)
		}
		return result{resp.StatusCode(), string(resp.Header.Peek("X-Sluice-Cache"))}
	}
	lead := make(chan result, 1)
	go func() { lead <- do() }()
	time.Sleep(100 * time.Millisecond) // the leader is waiting on the upstream
	var wg sync.WaitGroup
	follow := make([]result, 3)
	for i := range follow {
		wg.Go(func() { follow[i] = do() })
	}
	wg.Wait()
	if r := <-lead; r.status != 500 || r.cache != "miss" {
		t.Errorf("leader: %+v, want the upstream's 500 and miss", r)
	}
	for i, r := range follow {
		if r.status != 200 || r.cache != "miss" {
			t.Errorf("follower %d: %+v, want 200 from its own call, miss", i, r)
		}
	}
	if *calls != 4 {
		t.Errorf("upstream calls = %d, want 4 (the failed one, then one per follower)", *calls)
	}
}

// TestCacheUnstorableStreamStillTeed: a stream that cannot be stored (it
// carries logprobs) is still relayed whole to the requests that joined it,
// which end cleanly; nothing is stored, so the next request is a miss.
func TestCacheUnstorableStreamStillTeed(t *testing.T) {
	const event = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"logprobs":{"content":[]},"finish_reason":null}]}` + "\n\n"
	const last = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n"
	mem := cache.NewMemory(cache.MemoryOptions{})
	c, calls, stop := cacheProxyWith(t, mem, mem, func(ctx *fasthttp.RequestCtx, _ int64) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for range 5 {
				_, _ = w.WriteString(event)
				_ = w.Flush()
				time.Sleep(60 * time.Millisecond)
			}
			_, _ = w.WriteString(last)
			_ = w.Flush()
		})
	})
	defer stop()
	body := []byte(`{"model":"m","temperature":0,"stream":true,"logprobs":true,"messages":[{"role":"user","content":"hi"}]}`)
	do := func() (string, string, error) {
		req := chatRequest(body)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		err := c.Do(req, resp)
		return string(resp.Header.Peek("X-Sluice-Cache")), string(resp.Body()), err
	}
	type result struct {
		cache, body string
		err         error
	}
	results := make([]result, 3)
	var wg sync.WaitGroup
	wg.Go(func() { st, b, err := do(); results[0] = result{st, b, err} })
	time.Sleep(100 * time.Millisecond)
	for i := 1; i < 3; i++ {
		wg.Go(func() { st, b, err := do(); results[i] = result{st, b, err} })
	}
	wg.Wait()
	for i, r := range results {
		want := "coalesced"
		if i == 0 {
			want = "miss"
		}
		if r.err != nil || r.cache != want || strings.Count(r.body, `"content":"x"`) != 5 || !strings.HasSuffix(r.body, "data: [DONE]\n\n") {
			t.Errorf("request %d: %v %q, body:\n%s", i, r.err, r.cache, r.body)
		}
	}
	if st, _, err := do(); err != nil || st != "miss" {
		t.Errorf("after an unstorable stream: %v %q, want miss", err, st)
	}
	if *calls != 2 {
		t.Errorf("upstream calls = %d, want 2", *calls)
	}
}

// TestCacheStreamStoredAtDone: a stream's answer is stored when its [DONE]
// arrives, before the client reads it, so the client's next identical
// request is a hit even while the upstream has not yet closed the body
// (without that, it joined the flight still open and was "coalesced").
func TestCacheStreamStoredAtDone(t *testing.T) {
	const events = `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n"
	mem := cache.NewMemory(cache.MemoryOptions{})
	c, calls, stop := cacheProxyWith(t, mem, mem, func(ctx *fasthttp.RequestCtx, _ int64) {
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			_, _ = w.WriteString(events)
			_ = w.Flush()
			time.Sleep(500 * time.Millisecond) // the body ends well after [DONE]
		})
	})
	defer stop()
	c.StreamResponseBody = true
	body := []byte(`{"model":"m","temperature":0,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	// untilDone reads a stream answer up to its [DONE], as an SDK does, and
	// returns its cache status.
	untilDone := func() string {
		t.Helper()
		req := chatRequest(body)
		resp := fasthttp.AcquireResponse()
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		st := string(resp.Header.Peek("X-Sluice-Cache"))
		if bs := resp.BodyStream(); bs != nil {
			br := bufio.NewReader(bs)
			for {
				line, err := br.ReadString('\n')
				if strings.HasPrefix(line, "data: [DONE]") {
					break
				}
				if err != nil {
					t.Fatalf("%s stream ended before [DONE]: %v", st, err)
				}
			}
		} else if !strings.Contains(string(resp.Body()), "data: [DONE]") {
			t.Fatalf("%s answer without [DONE]: %s", st, resp.Body())
		}
		go fasthttp.ReleaseResponse(resp) // closing waits for the body's end
		return st
	}
	start := time.Now()
	if st := untilDone(); st != "miss" {
		t.Fatalf("first request: %q, want miss", st)
	}
	st := untilDone()
	if elapsed := time.Since(start); elapsed >= 500*time.Millisecond {
		t.Skipf("the two requests took %v, longer than the upstream held the body: nothing shown", elapsed)
	}
	if st != "hit" {
		t.Errorf("the same request right after [DONE]: %q, want hit", st)
	}
	if *calls != 1 {
		t.Errorf("upstream calls = %d, want 1", *calls)
	}
}
