package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report is everything one run measured.
type report struct {
	opts  *options
	env   envInfo
	modes []*modeReport
	long  *longReport // the long-streams mode instead
}

// modeReport is one lab, pinned or not, measured on every path.
type modeReport struct {
	pinned    bool
	paths     []string // direct, Sluice[, nginx]
	cpus      []string // each path's server's Cpus_allowed_list
	bodyBytes int
	loadStart string // load average when the mode began, and ended
	loadEnd   string

	closed []*result // per path
	open   []openSet
	stream []*result // per path; nil when -streams 0

	// idle and after: each path's server's RSS before the load and after
	// it, and its peak (VmHWM); the direct path's server is the fake.
	idle, after, peak []int64
	// afterMem is Sluice's own account of its memory after the load (Go
	// heap in use, goroutine stacks, memory cache), from its /metrics.
	afterMem    map[string]float64
	transcripts string // where Sluice wrote them
	redisCalls  bool   // result.redisCalls was measured
	perfTop     string
}

// openSet is one fixed rate on every path; a path's result is nil when a
// lower rate already saturated it.
type openSet struct {
	rate int
	r    []*result
	sat  []string // why each path saturated at this rate, "" if it did not
}

type envInfo struct {
	date              time.Time
	cpus              int
	goVersion, osArch string
	cpuModel          string
	loadStart         string
	loadEnd           string
}

func captureEnv() envInfo {
	e := envInfo{date: time.Now().UTC(), cpus: numCPU(), goVersion: runtime.Version(),
		osArch: runtime.GOOS + "/" + runtime.GOARCH, loadStart: loadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.cpuModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return e
}

// machineBusy returns the CPU time all CPUs of the machine have spent in
// processes (user, nice, system) or stolen by the hypervisor, from
// /proc/stat; 0 when unknown. Interrupt and softirq time, mostly the
// loopback traffic of the benchmark itself, is left out.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i >= 3 && i != 7 { // keep user, nice, system, steal (guest time is inside user)
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// loadAvg returns the 1-minute load average, "?" when unknown.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// saturated says why a fixed-rate phase shows the path could not keep up
// with rate, "" when it kept up: it completed less than 95 % of the rate,
// dropped or failed more than 1 % of the requests, or its p99 exceeded
// p99Bound.
func saturated(rate int, r *result, p99Bound time.Duration) string {
	sent := r.ok + r.errs + r.dropped
	switch {
	case sent > 0 && float64(r.dropped+r.errs) > 0.01*float64(sent):
		return fmt.Sprintf("%d of %d dropped or failed", r.dropped+r.errs, sent)
	case r.rate() < 0.95*float64(rate):
		return fmt.Sprintf("completed %s req/s", fmtRate(r.rate()))
	case pct(r.lat, .99) > p99Bound:
		return fmt.Sprintf("p99 %s > %s", fmtMs(pct(r.lat, .99)), fmtMs(p99Bound))
	}
	return ""
}

// measure runs every phase, path after path, phase by phase.
func measure(ctx context.Context, l *lab, o *options) (*modeReport, error) {
	direct := newTarget("direct", l.fakeAddr, []string{upstreamKey}, o.conns)
	through := newTarget("Sluice", l.sluiceAddr, benchKeys, o.conns)
	targets := []*target{direct, through}
	servers := []*child{l.fake, l.sluice} // the process each path's request ends in
	if l.nginx != nil {
		targets = append(targets, newTarget("nginx", l.nginxAddr, []string{upstreamKey}, o.conns))
		servers = append(servers, l.nginx)
	}
	m := &modeReport{
		pinned:      l.spec.pinned,
		bodyBytes:   len(newBody(false, false, 0).b),
		loadStart:   loadAvg(),
		transcripts: "JSONL files",
		redisCalls:  l.redisAddr != "",
	}
	if l.clickhouseAddr != "" {
		m.transcripts = "ClickHouse at " + l.clickhouseAddr
	}
	for i, t := range targets {
		t.stream = o.variant == "stream"
		t.same = o.variant == "cache-hit"
		m.paths = append(m.paths, t.name)
		m.cpus = append(m.cpus, cpusAllowed(servers[i].pid()))
	}

	for _, t := range targets {
		if err := probe(ctx, t); err != nil {
			return nil, fmt.Errorf("%w\nsluice log:\n%s", err, l.sluice.log.String())
		}
	}
	// The lab's claim about the cache holds: unique requests are looked up
	// and miss, identical ones hit.
	want := map[bool]string{false: "miss", true: "hit"}[through.same]
	if got, err := cacheStatus(through); err != nil || got != want {
		return nil, fmt.Errorf("Sluice's cache: x-sluice-cache %q on a repeated probe, want %q (%v)", got, want, err)
	}
	for _, c := range servers {
		rss, _, _ := procMem(c.pid())
		m.idle = append(m.idle, rss)
	}
	if o.warmup > 0 {
		logf("warming up %v per path", o.warmup)
		for _, t := range targets {
			closedLoop(ctx, t, o.conns, o.warmup)
		}
	}
	metricsURL := "http://" + l.adminAddr + "/metrics"

	// phase runs one measurement on path i and charges it the CPU of its
	// server, Sluice's allocations and Redis commands.
	phase := func(what string, i int, f func() *result) (*result, error) {
		t := targets[i]
		logf("%s, %s", what, t.name)
		cs := l.children()
		cpu0 := make([]time.Duration, len(cs))
		for k, c := range cs {
			cpu0[k], _ = procCPU(c.pid())
		}
		g0 := selfCPU()
		var mal0 int64 = -1
		var red0 redisCount
		redisOK := false
		if t == through {
			if v, err := scrapeMetrics(metricsURL, mallocsMetric); err == nil {
				mal0 = int64(v[mallocsMetric])
			}
			if l.redisAddr != "" {
				var err error
				red0, err = redisCalls(l.redisAddr)
				redisOK = err == nil
			}
		}
		m0, w0 := machineBusy(), time.Now()
		r := f()
		m1, wall := machineBusy(), time.Since(w0)
		r.selfCPU = selfCPU() - g0
		ours := r.selfCPU
		for k, c := range cs {
			c1, _ := procCPU(c.pid())
			d := c1 - cpu0[k]
			ours += d
			switch c {
			case servers[i]:
				r.serverCPU = d
			case l.fake:
				r.fakeCPU = d
			}
		}
		if mal0 >= 0 {
			if v, err := scrapeMetrics(metricsURL, mallocsMetric); err == nil {
				r.mallocs = int64(v[mallocsMetric]) - mal0
			}
		}
		if redisOK {
			if n, err := redisCalls(l.redisAddr); err == nil {
				r.redis = redisCount{n.scripts - red0.scripts, n.commands - red0.commands}
			}
		}
		if m0 > 0 && m1 > 0 {
			r.otherCores = max(0, (m1-m0-ours).Seconds()/wall.Seconds())
		}
		if r.sample != "" {
			logf("  %d errors, first: %s", r.errs, r.sample)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("interrupted: %w", err)
		}
		for _, c := range cs {
			if c.exited() {
				return nil, fmt.Errorf("%s exited during the run (%v):\n%s", c.name, c.err, c.log.String())
			}
		}
		time.Sleep(200 * time.Millisecond) // let every side settle
		return r, nil
	}

	for i := range targets {
		r, err := phase(fmt.Sprintf("closed loop, %d conns, %v", o.conns, o.duration), i, func() *result {
			return closedLoop(ctx, targets[i], o.conns, o.duration)
		})
		if err != nil {
			return nil, err
		}
		m.closed = append(m.closed, r)
	}
	done := make([]bool, len(targets)) // saturated at a lower rate
	for _, rate := range o.rates {
		p := openSet{rate: rate, r: make([]*result, len(targets)), sat: make([]string, len(targets))}
		for i := range targets {
			if done[i] {
				continue
			}
			r, err := phase(fmt.Sprintf("open loop, %d req/s, %v", rate, o.duration), i, func() *result {
				return openLoop(ctx, targets[i], rate, o.conns, o.duration)
			})
			if err != nil {
				return nil, err
			}
			p.r[i] = r
			if why := saturated(rate, r, o.satP99); why != "" {
				p.sat[i], done[i] = why, true
				logf("  %s saturated at %d req/s: %s", targets[i].name, rate, why)
			}
		}
		m.open = append(m.open, p)
		if !slices.Contains(done, false) {
			break
		}
	}
	if o.streams > 0 {
		for i := range targets {
			r, err := phase(fmt.Sprintf("%d streams at %d/s", o.streams, o.streamRate), i, func() *result {
				return streamLoop(ctx, targets[i], o.streams, o.streamRate, min(o.conns, 16))
			})
			if err != nil {
				return nil, err
			}
			m.stream = append(m.stream, r)
		}
	}
	for _, c := range servers {
		rss, peak, _ := procMem(c.pid())
		m.after, m.peak = append(m.after, rss), append(m.peak, peak)
	}
	m.afterMem, _ = scrapeMetrics(metricsURL, afterMemMetrics...)
	m.loadEnd = loadAvg()
	if l.clickhouseAddr == "" {
		time.Sleep(1500 * time.Millisecond) // past the batcher's 1 s flush
		m.transcripts = fmt.Sprintf("JSONL files (%s rows by the end)", fmtRate(float64(countLines(filepath.Join(l.dir, "transcripts")))))
	}

	if o.perf {
		var err error
		m.perfTop, err = perfProfile(ctx, l, through, o)
		if err != nil {
			logf("perf: %v", err)
			m.perfTop = "perf failed: " + err.Error()
		}
	}
	return m, nil
}

// countLines returns the newlines in the files of dir.
func countLines(dir string) int {
	es, _ := os.ReadDir(dir)
	n := 0
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			n += bytes.Count(b, []byte{'\n'})
		}
	}
	return n
}

// afterMemMetrics break Sluice's RSS after the load down.
var afterMemMetrics = []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "sluice_cache_bytes"}

// mallocsMetric counts the heap objects Sluice has allocated (Go collector).
const mallocsMetric = "go_memstats_mallocs_total"

// perfProfile records Sluice with perf during an extra closed-loop run and
// returns its hottest symbols.
func perfProfile(ctx context.Context, l *lab, through *target, o *options) (string, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		return "", errors.New("perf is not installed")
	}
	data := filepath.Join(l.root, "bin", "sluice.perf.data")
	secs := fmt.Sprintf("%.1f", o.duration.Seconds())
	rec := exec.CommandContext(ctx, "perf", "record", "-q", "-F", "999", "-g", "-p", fmt.Sprint(l.sluice.pid()), "-o", data, "--", "sleep", secs)
	var recOut strings.Builder
	rec.Stdout, rec.Stderr = &recOut, &recOut
	load := fmt.Sprintf("closed loop on %d connections", o.conns)
	if o.perfRate > 0 {
		load = fmt.Sprintf("open loop at %d req/s", o.perfRate)
	}
	logf("perf record on sluice for %ss, %s", secs, load)
	if err := rec.Start(); err != nil {
		return "", err
	}
	time.Sleep(100 * time.Millisecond)
	if o.perfRate > 0 {
		openLoop(ctx, through, o.perfRate, o.conns, o.duration)
	} else {
		closedLoop(ctx, through, o.conns, o.duration)
	}
	if err := rec.Wait(); err != nil {
		return "", fmt.Errorf("perf record: %v: %s", err, recOut.String())
	}
	report := func(keep func(string) bool, limit int, args ...string) string {
		args = append([]string{"report", "-i", data, "--stdio", "-g", "none"}, args...)
		out, err := exec.CommandContext(ctx, "perf", args...).Output()
		if err != nil {
			return "perf report: " + err.Error()
		}
		var lines []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") || !keep(line) {
				continue
			}
			lines = append(lines, strings.TrimRight(line, " "))
			if len(lines) == limit {
				break
			}
		}
		return strings.Join(lines, "\n")
	}
	all := func(string) bool { return true }
	ours := func(l string) bool {
		for _, s := range []string{"sluice/", "prometheus", "slog", "runtime.mallocgc", "runtime.gcBgMarkWorker", "runtime.sysmon", "runtime.findRunnable", "pollSetDeadline"} {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
	return fmt.Sprintf("Load: %s. Recorded in %s (perf report -i it). By binary (self time):\n%s\n\nHottest symbols (self time, >= 1%%):\n%s\n\nSluice's own code, the Go runtime and metrics (with callees, self):\n%s",
		load, data,
		report(all, 10, "--no-children", "--sort", "dso"),
		report(all, 25, "--no-children", "--sort", "sym", "--percent-limit", "1"),
		report(ours, 30, "--children", "--sort", "sym")), nil
}
