package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/redis/go-redis/v9"

	"sluice/fakeai"
)

// redisNode is a redis-server this test started (by PID) on a loopback port.
type redisNode struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func (n *redisNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.port) }

// freeRedisPort returns a loopback port that is free together with port
// +10000 (a cluster node's bus port).
func freeRedisPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(25000)
		ok := true
		for _, q := range []int{p, p + 10000} {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(q))
			if err != nil {
				ok = false
				break
			}
			_ = ln.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free port pair for redis")
	return 0
}

// startRedisNode starts redis-server with extra arguments and waits for it
// to answer PING. It is killed by PID at the end of the test.
func startRedisNode(t *testing.T, port int, args ...string) *redisNode {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed")
	}
	n := &redisNode{port: port, dir: t.TempDir()}
	base := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
		"--dir", n.dir, "--daemonize", "no"}
	return n.start(t, append(args, base...))
}

// startSentinel starts a sentinel watching the primary at primary under
// the name master, with a second's down-after.
func startSentinel(t *testing.T, primary, master string) *redisNode {
	t.Helper()
	n := &redisNode{port: freeRedisPort(t), dir: t.TempDir()}
	host, port, _ := strings.Cut(primary, ":")
	file := filepath.Join(n.dir, "sentinel.conf")
	writeFile(t, file, fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsentinel monitor %s %s %s 2\n"+
		"sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\n",
		n.port, n.dir, master, host, port, master, master))
	return n.start(t, []string{file, "--sentinel"})
}

func (n *redisNode) start(t *testing.T, args []string) *redisNode {
	t.Helper()
	port := n.port
	n.cmd = exec.Command("redis-server", args...)
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(n.kill)
	for range 200 {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "ping").Output()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			return n
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("redis on port %d did not answer", port)
	return nil
}

// kill ends the server by its PID (idempotent).
func (n *redisNode) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
	n.cmd = nil
}

// startRedisCluster starts 3 masters and 3 replicas and joins them with
// redis-cli --cluster create; it returns the nodes once every slot is
// served.
func startRedisCluster(t *testing.T) []*redisNode {
	t.Helper()
	var nodes []*redisNode
	var addrs []string
	for range 6 {
		n := startRedisNode(t, freeRedisPort(t), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000",
			// A replica may always take over (the default refuses a replica
			// whose link was idle longer than 10 node timeouts).
			"--cluster-replica-validity-factor", "0")
		nodes = append(nodes, n)
		addrs = append(addrs, n.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range nodes {
			out, _ := exec.Command("redis-cli", "-p", strconv.Itoa(n.port), "cluster", "info").Output()
			ok = ok && strings.Contains(string(out), "cluster_state:ok")
		}
		if ok {
			return nodes
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the cluster did not reach cluster_state:ok")
	return nil
}

// masterOf returns the address of the master serving the hash tag tag.
func masterOf(ctx context.Context, t *testing.T, cc *redis.ClusterClient, tag string) string {
	t.Helper()
	slot, err := cc.ClusterKeySlot(ctx, "{"+tag+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) {
			return s.Nodes[0].Addr
		}
	}
	t.Fatalf("no node serves slot %d", slot)
	return ""
}

// clusterLoad is what one round robin at three times a user's rpm saw.
type clusterLoad struct{ admitted, limited, other atomic.Int64 }

// roundRobin sends key's requests at rate per second, round robin over
// procs, for d; model picks the upstream.
func roundRobin(procs []*sluiceProc, key, model string, rate float64, d time.Duration) *clusterLoad {
	var l clusterLoad
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; time.Since(start) < d; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		p := procs[i%len(procs)]
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := p.client(key).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: model, Messages: userMessages("r"), MaxTokens: openai.Int(5),
			})
			switch _, rl := rateLimited(err); {
			case err == nil:
				l.admitted.Add(1)
			case rl:
				l.limited.Add(1)
			default:
				l.other.Add(1)
			}
		})
	}
	wg.Wait()
	return &l
}

// budgetLoad runs closed-loop clients through procs on model (the budgeted
// upstream) for d and returns how many were served; a 429 (queue full or
// wait too long) backs off by its retry-after.
func budgetLoad(t *testing.T, procs []*sluiceProc, key, model string, clients int, d time.Duration) (served, other int64) {
	var s, o atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range clients {
		p := procs[w%len(procs)]
		wg.Go(func() {
			c := p.client(key)
			for time.Since(start) < d {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model: model, Messages: userMessages("b"), MaxTokens: openai.Int(5),
				}, option.WithHeader("X-Sluice-User", fmt.Sprint("w", w)))
				cancel()
				if e, limited := rateLimited(err); limited {
					ms, _ := strconv.Atoi(e.Response.Header.Get("Retry-After-Ms"))
					time.Sleep(time.Duration(min(max(ms, 100), 1000)) * time.Millisecond)
					continue
				} else if err != nil {
					o.Add(1)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				s.Add(1)
			}
		})
	}
	wg.Wait()
	return s.Load(), o.Load()
}

// TestRedisClusterLimitsAndFailover: three Sluice replicas on a Redis
// Cluster of 3 masters and 3 replicas. One user at three times their rpm,
// round robin over the replicas, is held to the limit within ±2%, and a
// provider budget holds with no provider 429; then the master serving both
// (their hash tags are chosen to land on it) is killed, its replica is
// promoted, and both hold again. What the replicas admitted while the
// cluster failed over (on_store_error: local) is logged.
func TestRedisClusterLimitsAndFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis Cluster and ~40 s of load; skipped with -short")
	}
	nodes := startRedisCluster(t)
	ctx := testContext(t, 90*time.Second)
	var seeds []string
	byAddr := map[string]*redisNode{}
	for _, n := range nodes {
		seeds = append(seeds, n.addr())
		byAddr[n.addr()] = n
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds})
	defer func() { _ = cc.Close() }()

	// Team names (the hash tags of the users' keys) and the budgeted
	// upstream's name, all on the master that will be killed.
	victim := masterOf(ctx, t, cc, "g0")
	var names []string
	for i := 0; len(names) < 4; i++ {
		if name := fmt.Sprint("g", i); masterOf(ctx, t, cc, name) == victim {
			names = append(names, name)
		}
	}
	before, during, after, upstream := names[0], names[1], names[2], names[3]
	t.Logf("master %s serves tags %v", victim, names)

	const (
		rpm       = 2400 // 40/s
		burst     = 20
		phase     = 10 * time.Second
		budgetRPM = 600 // 10/s
	)
	free := startFake(t, fakeai.Config{APIKey: upstreamKey})
	budgeted := startFake(t, fakeai.Config{APIKey: upstreamKey, RPM: budgetRPM})
	cfg := fmt.Sprintf(`
server:
  listen: ${SLUICE_ADDR}
  admin_listen: ${SLUICE_ADMIN_ADDR}
  shutdown_timeout: 10s
upstreams:
  - name: free
    base_url: ${OPENAI_BASE_URL}
    api_key: ${OPENAI_API_KEY}
  - name: %s
    base_url: %s
    api_key: ${OPENAI_API_KEY}
    max_conns: 512
    max_attempts: 1
    budget: {rpm: %d, rpm_burst: 2}
routes:
  - model: budgeted
    upstream: %s
  - model: "*"
    upstream: free
limits:
  store: redis
redis:
  mode: cluster
  addr: %s
  prefix: "e2e-cluster:"
  timeout: 1s
`, upstream, budgeted.URL, budgetRPM, upstream, strings.Join(seeds, ","))
	secret := func(name string) string { return "sk-cluster-e2e-" + name + "-0123456789abcdef" }
	pol := fmt.Sprintf(`
on_store_error: local
replicas: 3
tiers:
  lim:
    rpm: {limit: %d, burst: %d}
  bud:
    rpm: 1000000
    max_wait: 5s
    max_queue: 500
keys:
  - {id: before, sha256: %s, user: ubefore, team: %s, tier: lim}
  - {id: during, sha256: %s, user: uduring, team: %s, tier: lim}
  - {id: after, sha256: %s, user: uafter, team: %s, tier: lim}
  - {id: bud, sha256: %s, user: ubud, team: %s, tier: bud, trusted: true}
`, rpm, burst, sha256Hex(secret(before)), before, sha256Hex(secret(during)), during,
		sha256Hex(secret(after)), after, sha256Hex(secret("bud")), upstream)
	var procs []*sluiceProc
	for range 3 {
		procs = append(procs, startSluice(t, sluiceOptions{BaseURL: free.URL, Config: cfg, Policies: pol}))
	}
	want := float64(burst) + float64(rpm)*phase.Minutes()
	check := func(label string, l *clusterLoad) {
		got := float64(l.admitted.Load())
		t.Logf("%s: admitted %v (the policy allows %v), rejected %d, other %d", label, got, want, l.limited.Load(), l.other.Load())
		if l.other.Load() != 0 || got < want*0.98 || got > want*1.02 {
			t.Errorf("%s: admitted %v over three replicas with %d errors; the policy allows %v ±2%%", label, got, l.other.Load(), want)
		}
	}
	phaseBoth := func(label, key string) {
		var wg sync.WaitGroup
		var l *clusterLoad
		wg.Go(func() { l = roundRobin(procs, key, "gpt-4o-mini", 3*rpm/60.0, phase) })
		base := budgeted.Stats()
		start := time.Now()
		served, other := budgetLoad(t, procs, secret("bud"), "budgeted", 12, phase)
		el := time.Since(start)
		wg.Wait()
		st := budgeted.Stats()
		rl := st.RateLimited - base.RateLimited
		t.Logf("%s: budget %d/min: served %d in %v (%.2f/s), other errors %d, provider 429s %d",
			label, budgetRPM, served, el.Round(time.Millisecond), float64(served)/el.Seconds(), other, rl)
		if rl != 0 {
			t.Errorf("%s: the provider answered %d calls with 429: the replicas overdrew its budget", label, rl)
		}
		if float64(served) > float64(budgetRPM)*el.Minutes()+budgetRPM/60.0*2+3 {
			t.Errorf("%s: served %d in %v with a budget of %d/min", label, served, el, budgetRPM)
		}
		check(label, l)
	}
	phaseBoth("before failover", secret(before))

	// Kill the master serving the tags; load the "during" user until its
	// replica is promoted and Sluice answers from the cluster again.
	errsBefore := 0.0
	for _, p := range procs {
		v, _ := p.metric(t, "sluice_limiter_store_errors_total")
		errsBefore += v
	}
	killed := time.Now()
	byAddr[victim].kill()
	promoted := make(chan time.Duration, 1)
	go func() {
		probe := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds, ClusterStateReloadInterval: 100 * time.Millisecond})
		defer func() { _ = probe.Close() }()
		for time.Since(killed) < 30*time.Second {
			c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := probe.Set(c, "{"+during+"}probe", "1", time.Minute).Err()
			cancel()
			if err == nil {
				promoted <- time.Since(killed)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		close(promoted)
	}()
	var failover *clusterLoad
	var lost time.Duration
	done := make(chan struct{})
	go func() {
		failover = roundRobin(procs, secret(during), "gpt-4o-mini", 3*rpm/60.0, 8*time.Second)
		close(done)
	}()
	lost, ok := <-promoted
	if !ok {
		var out []byte
		for _, n := range nodes {
			if n.addr() != victim {
				out, _ = exec.Command("redis-cli", "-p", strconv.Itoa(n.port), "cluster", "nodes").Output()
				break
			}
		}
		t.Fatalf("the killed master's replica was not promoted within 30 s:\n%s", out)
	}
	<-done
	errsAfter := 0.0
	for _, p := range procs {
		v, _ := p.metric(t, "sluice_limiter_store_errors_total")
		errsAfter += v
	}
	t.Logf("failover: replica promoted %v after the kill; in 8 s at 3x rpm the replicas admitted %d (a full bucket over 8 s allows %.0f), rejected %d, other %d; store errors counted %v",
		lost.Round(time.Millisecond), failover.admitted.Load(), float64(burst)+float64(rpm)*8/60,
		failover.limited.Load(), failover.other.Load(), errsAfter-errsBefore)
	if failover.other.Load() != 0 {
		t.Errorf("failover: %d requests failed (on_store_error: local admits or limits them)", failover.other.Load())
	}
	// Let every replica find the new master before the next measure.
	time.Sleep(2 * time.Second)
	phaseBoth("after failover", secret(after))
}

// TestRedisSentinelFailover: Sluice on a primary and a replica watched by
// three sentinels (redis.mode: sentinel). The primary is killed under load;
// while the sentinels elect the replica, requests follow on_store_error
// (deny: a 503, counted as a store error), and Sluice then finds the new
// primary on its own and admits from it again.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a Redis failover under load; skipped with -short")
	}
	primary := startRedisNode(t, freeRedisPort(t))
	replica := startRedisNode(t, freeRedisPort(t), "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))
	for i := 0; ; i++ {
		out, _ := exec.Command("redis-cli", "-p", strconv.Itoa(replica.port), "info", "replication").Output()
		if strings.Contains(string(out), "master_link_status:up") {
			break
		}
		if i == 200 {
			t.Fatalf("the replica did not sync:\n%s", out)
		}
		time.Sleep(25 * time.Millisecond)
	}
	var sentinels []string
	for range 3 {
		sentinels = append(sentinels, startSentinel(t, primary.addr(), "m1").addr())
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	cfg := fmt.Sprintf(`
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
  mode: sentinel
  master_name: m1
  addr: %s
  prefix: "e2e-sentinel:"
  timeout: 500ms
`, strings.Join(sentinels, ","))
	pol := "on_store_error: deny\n" + fmt.Sprintf(limitsPolicy, 100_000, 1000, 10_000_000, 10_000_000)
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol})
	c := s.client(demoKey)
	chat := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages("s"), MaxTokens: openai.Int(5),
		})
		return err
	}
	for i := range 20 {
		if err := chat(); err != nil {
			t.Fatalf("request %d before the failover: %v", i, err)
		}
	}
	// The replica has the buckets too (asynchronous replication).
	time.Sleep(200 * time.Millisecond)
	if out, _ := exec.Command("redis-cli", "-p", strconv.Itoa(replica.port), "--scan", "--pattern", "e2e-sentinel:*").Output(); len(out) == 0 {
		t.Fatal("no bucket keys on the replica before the failover")
	}
	errs0, _ := s.metric(t, "sluice_limiter_store_errors_total")
	killed := time.Now()
	primary.kill()
	// 20 requests a second until the replica is primary and Sluice admits
	// from it again for a second.
	var ok, denied, other int
	var firstBack time.Duration
	var streak int
	for time.Since(killed) < 30*time.Second && streak < 20 {
		err := chat()
		var e *openai.Error
		switch {
		case err == nil:
			if denied > 0 {
				streak++
				if firstBack == 0 {
					firstBack = time.Since(killed)
				}
			}
			ok++
		case errors.As(err, &e) && e.StatusCode == http.StatusServiceUnavailable:
			denied++
			streak = 0
		default:
			other++
			t.Errorf("request during the failover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	errs1, _ := s.metric(t, "sluice_limiter_store_errors_total")
	role, _ := exec.Command("redis-cli", "-p", strconv.Itoa(replica.port), "role").Output()
	t.Logf("sentinel failover: %d admitted, %d denied (503, on_store_error: deny), %d other; admitted from the new primary %v after the kill; store errors counted %v",
		ok, denied, other, firstBack.Round(time.Millisecond), errs1-errs0)
	if !strings.HasPrefix(strings.TrimSpace(string(role)), "master") {
		t.Fatalf("the replica is not primary after the failover: %q", role)
	}
	if denied == 0 || streak < 20 {
		t.Fatalf("denied %d, then %d in a row admitted: want 503s during the switch, then Sluice on the new primary", denied, streak)
	}
	if errs1-errs0 < float64(denied) {
		t.Fatalf("store errors counted %v, requests denied %d: each denial must be counted", errs1-errs0, denied)
	}
	// The new primary holds the buckets Sluice writes now.
	if out, _ := exec.Command("redis-cli", "-p", strconv.Itoa(replica.port), "--scan", "--pattern", "e2e-sentinel:*").Output(); len(out) == 0 {
		t.Fatal("no bucket keys on the new primary")
	}
}

// TestRedisCacheFloodKeepsBudgets: the cache has its own Redis (cache.redis,
// small maxmemory, allkeys-lru) and the limiter another (noeviction). A
// user spends their burst; a flood of large distinct answers from another
// user fills the cache's Redis until it evicts; the first user's bucket is
// untouched: their next request is still refused, and their keys and
// values in the limiter's Redis are the same.
func TestRedisCacheFloodKeepsBudgets(t *testing.T) {
	if testing.Short() {
		t.Skip("two Redis servers and a cache flood; skipped with -short")
	}
	lim := startRedisNode(t, freeRedisPort(t), "--maxmemory-policy", "noeviction")
	cch := startRedisNode(t, freeRedisPort(t), "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	cfg := fmt.Sprintf(`
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
  prefix: "e2e-flood:"
  timeout: 2s
cache:
  store: redis
  max_entry_bytes: 1048576
  redis:
    addr: %s
`, lim.addr(), cch.addr())
	pol := fmt.Sprintf(`
tiers:
  small:
    rpm: {limit: 6, burst: 6}
  flood:
    rpm: 1000000
    cache: all
keys:
  - {id: small, key_env: SLUICE_DEMO_KEY, user: small, tier: small}
  - {id: flood, sha256: %s, user: flood, tier: flood}
`, sha256Hex(appKey))
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL, Config: cfg, Policies: pol})
	if !strings.Contains(s.stderr.String(), "maxmemory-policy=noeviction") || !strings.Contains(s.stderr.String(), "maxmemory-policy=allkeys-lru") {
		t.Errorf("the start log does not report both Redis's policies:\n%s", s.stderr.String())
	}
	ctx := testContext(t, 60*time.Second)
	small := s.client(demoKey)
	ask := func(c *openai.Client, text string) error {
		// The fake echoes the text, cut to max_tokens words.
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "gpt-4o-mini", Messages: userMessages(text), MaxTokens: openai.Int(10_000),
		})
		return err
	}
	for i := range 6 {
		if err := ask(small, "budget"); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	lc := redis.NewClient(&redis.Options{Addr: lim.addr()})
	defer func() { _ = lc.Close() }()
	snapshot := func() map[string]string {
		keys, err := lc.Keys(ctx, "e2e-flood:*u:small*").Result()
		if err != nil || len(keys) == 0 {
			t.Fatalf("the user's keys in the limiter's Redis: %v %v", keys, err)
		}
		m := map[string]string{}
		for _, k := range keys {
			m[k], _ = lc.Get(ctx, k).Result()
		}
		return m
	}
	before := snapshot()
	// The flood: 200 distinct answers of ~80 KB, 8 at a time.
	flood := s.client(appKey)
	// Random words, so compression does not shrink the entries.
	words := make([]string, 6000)
	for i := range words {
		words[i] = strconv.FormatUint(rand.Uint64(), 36)
	}
	big := strings.Join(words, " ")
	var wg sync.WaitGroup
	var floodErrs atomic.Int64
	sem := make(chan struct{}, 8)
	for i := range 200 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := ask(flood, fmt.Sprint(i, big)); err != nil {
				floodErrs.Add(1)
			}
		})
	}
	wg.Wait()
	cc := redis.NewClient(&redis.Options{Addr: cch.addr()})
	defer func() { _ = cc.Close() }()
	info, _ := cc.Info(ctx, "stats").Result()
	evicted := 0
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "evicted_keys:"); ok {
			evicted, _ = strconv.Atoi(v)
		}
	}
	stored, _ := s.metric(t, "sluice_cache_stores_total")
	t.Logf("flood: 200 answers of ~80 KB, %d failed; the cache's Redis evicted %d keys (sluice_cache_stores_total %v)", floodErrs.Load(), evicted, stored)
	if floodErrs.Load() != 0 || evicted == 0 {
		t.Fatalf("flood errors %d, evicted %d: want a flood that fills the cache's Redis", floodErrs.Load(), evicted)
	}
	after := snapshot()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the user's limiter keys changed during the flood:\nbefore %v\nafter  %v", before, after)
	}
	// 6 per minute with a burst of 6: the next slot is 10 s after the
	// burst, so the user is still refused.
	if err := ask(small, "budget"); err == nil {
		t.Fatal("the user's spent burst came back after the cache flood")
	} else if _, rl := rateLimited(err); !rl {
		t.Fatalf("want a 429, got %v", err)
	}
	// A limiter on a Redis that evicts is warned about at start.
	bad := startSluice(t, sluiceOptions{BaseURL: fake.URL, Policies: pol,
		Config: strings.Replace(cfg, "addr: "+lim.addr(), "addr: "+cch.addr(), 1)})
	if log := bad.stderr.String(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "can evict its buckets") {
		t.Fatalf("no warning for a limiter Redis with allkeys-lru:\n%s", log)
	}
}
