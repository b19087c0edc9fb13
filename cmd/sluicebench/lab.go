package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// benchKeys are the keys of the lab's policies.yaml (benchPolicies), one per
// SLUICE_BENCH_KEY_i: three personal keys of users in three tiers and two
// teams, and a trusted app key whose end users come from the body's "user".
// The load generator's connections take them in turn.
var benchKeys = func() []string {
	k := make([]string, 4)
	for i := range k {
		k[i] = "sk-sluice-bench-" + strconv.Itoa(i) + "-" + randHex(12)
	}
	return k
}()

// benchPolicies is the lab's policies.yaml: several tiers with limits (rpm
// with and without burst, tpm, tpd, concurrency, a per-model rule, weights,
// a max wait) high enough never to refuse the benchmark's load, so every
// request runs the bucket arithmetic but none waits; the cache on for every
// tier ("all": a request with temperature 0.3 is looked up too); prices, so
// every request's spend is counted for its user, key and team, and budgets
// (starter's users, the research team) too large to refuse anything.
const benchPolicies = `on_store_error: local
prices:
  "*": {input: 0.15, output: 0.60}
teams:
  research: {budget: {daily_usd: 1000000, monthly_usd: 1000000}}
tiers:
  starter:
    rpm: 100000000
    tpm: 1000000000000
    tpd: 100000000000000
    concurrent: 20000
    budget: {daily_usd: 1000000, monthly_usd: 1000000}
    cache: all
  pro:
    rpm: {limit: 100000000, burst: 10000000}
    tpm: 1000000000000
    concurrent: 20000
    max_wait: 5s
    weight: 3
    cache: all
  team:
    rpm: 100000000
    tpm: 1000000000000
    concurrent: 20000
    weight: 2
    cache: all
    models:
      "gpt-4o*": {rpm: 100000000}
  app-user:
    rpm: 100000000
    tpm: 1000000000000
    concurrent: 20000
    cache: all
keys:
  - {id: k0, key_env: SLUICE_BENCH_KEY_0, user: ada, team: research, tier: starter}
  - {id: k1, key_env: SLUICE_BENCH_KEY_1, user: bob, team: research, tier: starter}
  - {id: k2, key_env: SLUICE_BENCH_KEY_2, user: cy, team: support, tier: team}
  - {id: k3, key_env: SLUICE_BENCH_KEY_3, team: chat-app, tier: team, trusted: true, user_tier: app-user,
     app_limits: {rpm: 1000000000, tpm: 100000000000000}}
users:
  bob: {tier: pro}
`

// labSpec is what one lab runs with.
type labSpec struct {
	pinned        bool
	variant       string
	chunks        int           // fake: content chunks per stream
	chunkInterval time.Duration // fake: pause between stream events
	maxConns      int           // Sluice: upstream max_conns
	nginx         string        // nginx binary, "" = none
}

// lab is the fake upstream, Sluice and optionally nginx and Redis, running.
type lab struct {
	root, dir                 string // dir: the lab's temporary files
	spec                      labSpec
	fake, sluice, nginx       *child
	redis                     *child // nil when none or SLUICE_BENCH_REDIS_ADDR
	fakeAddr, sluiceAddr      string
	adminAddr, nginxAddr      string
	redisAddr, clickhouseAddr string
}

// The CPUs of pinned mode: the gateways on gatewayCPU, the fake upstream and
// the load generator on otherCPU.
const gatewayCPU, otherCPU = 0, 1

func (l *lab) stop() {
	// The gateways first, so they do not log the fake going away.
	l.sluice.stop()
	l.nginx.stop()
	l.fake.stop()
	l.redis.stop()
	if l.dir != "" {
		_ = os.RemoveAll(l.dir)
	}
}

// children returns the running processes of the lab, for CPU accounting.
func (l *lab) children() []*child {
	var cs []*child
	for _, c := range []*child{l.fake, l.sluice, l.nginx, l.redis} {
		if c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

func startLab(ctx context.Context, root string, sp labSpec) (*lab, error) {
	fakeCPU, gwCPU := -1, -1
	if sp.pinned {
		fakeCPU, gwCPU = otherCPU, gatewayCPU
	}
	dir, err := os.MkdirTemp("", "sluicebench-")
	if err != nil {
		return nil, err
	}
	l := &lab{root: root, dir: dir, spec: sp}
	out := &tailBuffer{max: 64 << 10, watch: "listening on ", found: make(chan string, 1)}
	found := out.found
	fake, err := start("fakeai", root, fakeCPU, os.Environ(), out,
		filepath.Join(root, "bin", "fakeai"), "-addr", "127.0.0.1:0", "-latency", "0",
		"-chunks", strconv.Itoa(sp.chunks), "-chunk-interval", sp.chunkInterval.String(),
		"-api-key", upstreamKey)
	if err != nil {
		return l, err
	}
	l.fake = fake
	select {
	case addr := <-found:
		l.fakeAddr = addr
	case <-fake.done:
		return l, fmt.Errorf("fakeai exited at start (%v):\n%s%s", fake.err, out.String(), fake.log.String())
	case <-time.After(10 * time.Second):
		return l, fmt.Errorf("fakeai did not say where it listens within 10s:\n%s", out.String())
	case <-ctx.Done():
		return l, ctx.Err()
	}

	limits := "memory"
	if sp.variant == "redis" {
		limits = "redis"
		if err := l.startRedis(ctx, fakeCPU); err != nil {
			return l, err
		}
	}
	l.clickhouseAddr = os.Getenv("SLUICE_BENCH_CLICKHOUSE_ADDR")
	transcripts := "jsonl"
	if l.clickhouseAddr != "" {
		transcripts = "clickhouse"
	}

	// sluice.yaml is the example with the upstream pool sized for the run.
	cfg, err := os.ReadFile(filepath.Join(root, "configs", "sluice.yaml"))
	if err != nil {
		return l, err
	}
	if !strings.Contains(string(cfg), "max_conns: 512") {
		return l, fmt.Errorf("configs/sluice.yaml: no \"max_conns: 512\" to size the upstream pool")
	}
	cfg = []byte(strings.Replace(string(cfg), "max_conns: 512", "max_conns: "+strconv.Itoa(sp.maxConns), 1))
	cfgPath, polPath := filepath.Join(dir, "sluice.yaml"), filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return l, err
	}
	if err := os.WriteFile(polPath, []byte(benchPolicies), 0o600); err != nil {
		return l, err
	}
	if l.sluiceAddr, err = freePort(); err != nil {
		return l, err
	}
	if l.adminAddr, err = freePort(); err != nil {
		return l, err
	}
	env := append(os.Environ(),
		"OPENAI_BASE_URL=http://"+l.fakeAddr+"/v1",
		"OPENAI_API_KEY="+upstreamKey,
		"SLUICE_ADDR="+l.sluiceAddr,
		"SLUICE_ADMIN_ADDR="+l.adminAddr,
		"SLUICE_LIMITS_STORE="+limits,
		"SLUICE_REDIS_ADDR="+l.redisAddr,
		"SLUICE_REDIS_MODE="+cmp.Or(os.Getenv("SLUICE_BENCH_REDIS_MODE"), "single"),
		"SLUICE_CACHE_STORE=memory",
		"SLUICE_TRANSCRIPTS="+transcripts,
		"SLUICE_CLICKHOUSE_ADDR="+l.clickhouseAddr,
		"SLUICE_TRANSCRIPTS_DIR="+filepath.Join(dir, "transcripts"),
		"SLUICE_SPOOL_DIR="+filepath.Join(dir, "spool"),
	)
	for i, k := range benchKeys {
		env = append(env, fmt.Sprintf("SLUICE_BENCH_KEY_%d=%s", i, k))
	}
	sl, err := start("sluice", root, gwCPU, env, nil,
		filepath.Join(root, "bin", "sluice"), "serve", "-config", cfgPath, "-policies", polPath)
	if err != nil {
		return l, err
	}
	l.sluice = sl
	if err := waitReady(ctx, sl, "http://"+l.adminAddr+"/readyz"); err != nil {
		return l, err
	}
	logf("fakeai pid %d on %s, sluice pid %d on %s (admin %s; buckets %s, transcripts %s)",
		fake.pid(), l.fakeAddr, sl.pid(), l.sluiceAddr, l.adminAddr, limits, transcripts)

	if sp.nginx != "" {
		if err := l.startNginx(ctx, gwCPU); err != nil {
			return l, err
		}
	}
	return l, nil
}

// startRedis takes SLUICE_BENCH_REDIS_ADDR, or starts a throwaway
// redis-server (no persistence, files in the lab's directory) as
// scripts/services.sh does.
func (l *lab) startRedis(ctx context.Context, cpu int) error {
	if a := os.Getenv("SLUICE_BENCH_REDIS_ADDR"); a != "" {
		l.redisAddr = a
		return nil
	}
	addr, err := freePort()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	rd, err := start("redis-server", l.dir, cpu, os.Environ(), nil, "redis-server",
		"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no", "--dir", l.dir, "--daemonize", "no")
	if err != nil {
		return fmt.Errorf("%w (install Debian's redis-server or set SLUICE_BENCH_REDIS_ADDR)", err)
	}
	l.redis, l.redisAddr = rd, addr
	return waitUp(ctx, rd, func() bool { _, err := redisCalls(addr); return err == nil })
}

// nginxConf is a plain keep-alive reverse proxy to the fake, one process
// (master_process off: its CPU is its PID's), every file in the lab's
// directory; response buffering is off so streams pass event by event.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %[1]s/nginx-body;
  proxy_temp_path %[1]s/nginx-proxy;
  fastcgi_temp_path %[1]s/nginx-fastcgi;
  uwsgi_temp_path %[1]s/nginx-uwsgi;
  scgi_temp_path %[1]s/nginx-scgi;
  keepalive_requests 1000000;
  upstream fake {
    server %[2]s;
    keepalive 256;
    keepalive_requests 1000000;
  }
  server {
    listen %[3]s;
    client_body_buffer_size 64k;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
`

func (l *lab) startNginx(ctx context.Context, cpu int) error {
	addr, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(l.dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, l.dir, l.fakeAddr, addr), 0o600); err != nil {
		return err
	}
	ng, err := start("nginx", l.dir, cpu, os.Environ(), nil, l.spec.nginx, "-p", l.dir+"/", "-e", filepath.Join(l.dir, "nginx-error.log"), "-c", conf)
	if err != nil {
		return err
	}
	l.nginx, l.nginxAddr = ng, addr
	err = waitUp(ctx, ng, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(l.dir, "nginx-error.log"))
		return fmt.Errorf("%w\n%s", err, b)
	}
	logf("nginx pid %d on %s", ng.pid(), addr)
	return nil
}

// waitUp polls up until it is true, for at most 15 s, failing early when c
// exits.
func waitUp(ctx context.Context, c *child, up func() bool) error {
	deadline := time.Now().Add(15 * time.Second)
	for !up() {
		if c.exited() {
			return fmt.Errorf("%s exited at start (%v):\n%s", c.name, c.err, c.log.String())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not up within 15s:\n%s", c.name, c.log.String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// redisCount is what a Redis server has run since it started.
type redisCount struct {
	scripts  int64 // EVAL, EVALSHA and FCALL calls: one round trip each
	commands int64 // every command, those a script calls included
}

// redisCalls reads INFO commandstats, leaving out INFO itself, summed over
// addr's comma-separated servers (a cluster's masters: list no replica, whose
// replicated commands would count twice).
func redisCalls(addr string) (redisCount, error) {
	if strings.Contains(addr, ",") {
		var sum redisCount
		for a := range strings.SplitSeq(addr, ",") {
			n, err := redisCalls(strings.TrimSpace(a))
			if err != nil {
				return redisCount{}, err
			}
			sum.scripts, sum.commands = sum.scripts+n.scripts, sum.commands+n.commands
		}
		return sum, nil
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return redisCount{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")); err != nil {
		return redisCount{}, err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return redisCount{}, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil || n < 0 {
		return redisCount{}, fmt.Errorf("redis INFO: unexpected reply %q", head)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return redisCount{}, err
	}
	return parseCommandStats(string(b)), nil
}

// parseCommandStats sums the calls= of the cmdstat_ lines of INFO
// commandstats, except cmdstat_info.
func parseCommandStats(s string) redisCount {
	var rc redisCount
	for _, line := range strings.Split(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_info" {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				rc.commands += n
				switch name {
				case "cmdstat_eval", "cmdstat_evalsha", "cmdstat_eval_ro", "cmdstat_evalsha_ro", "cmdstat_fcall", "cmdstat_fcall_ro":
					rc.scripts += n
				}
			}
		}
	}
	return rc
}

// scrapeMetrics reads the unlabelled samples named in want from a Prometheus
// text exposition at url.
func scrapeMetrics(url string, want ...string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return parseMetrics(string(b), want...), nil
}

// parseMetrics returns the values of the unlabelled samples named in want.
func parseMetrics(text string, want ...string) map[string]float64 {
	m := make(map[string]float64, len(want))
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || !slices.Contains(want, name) {
			continue
		}
		val, _, _ = strings.Cut(strings.TrimSpace(val), " ") // drop a timestamp
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			m[name] = v
		}
	}
	return m
}
