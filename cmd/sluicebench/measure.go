package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// report is everything one run measured.
type report struct {
	opts   *options
	env    envInfo
	pinned bool
	// fakeCPUs and sluiceCPUs are the children's Cpus_allowed_list.
	fakeCPUs, sluiceCPUs string
	bodyBytes            int

	closed [2]*result // direct, through Sluice
	open   []openPair
	stream [2]*result

	rss, peak int64
	perfTop   string
}

type openPair struct {
	rate int
	r    [2]*result
}

type envInfo struct {
	date               time.Time
	cpus               int
	goVersion, osArch  string
	cpuModel           string
	loadStart, loadEnd string
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

// measure runs every phase, direct then through Sluice, phase by phase.
func measure(ctx context.Context, l *lab, o *options) (*report, error) {
	direct := newTarget("direct", l.fakeAddr, upstreamKey, o.conns)
	through := newTarget("Sluice", l.sluiceAddr, demoKey, o.conns)
	targets := [2]*target{direct, through}
	rep := &report{
		fakeCPUs:   cpusAllowed(l.fake.pid()),
		sluiceCPUs: cpusAllowed(l.sluice.pid()),
		bodyBytes:  len(newBody(false).b),
	}

	for _, t := range targets {
		if err := probe(ctx, t); err != nil {
			return nil, fmt.Errorf("%w\nsluice log:\n%s", err, l.sluice.log.String())
		}
	}
	if o.warmup > 0 {
		logf("warming up %v per path", o.warmup)
		for _, t := range targets {
			closedLoop(ctx, t, o.conns, o.warmup)
		}
	}

	// phase runs one measurement and charges the CPU each process used.
	phase := func(what string, t *target, f func() *result) (*result, error) {
		logf("%s, %s", what, t.name)
		s0, _ := procCPU(l.sluice.pid())
		f0, _ := procCPU(l.fake.pid())
		g0 := selfCPU()
		m0, w0 := machineBusy(), time.Now()
		r := f()
		m1, wall := machineBusy(), time.Since(w0)
		s1, _ := procCPU(l.sluice.pid())
		f1, _ := procCPU(l.fake.pid())
		r.sluiceCPU, r.fakeCPU, r.selfCPU = s1-s0, f1-f0, selfCPU()-g0
		if m0 > 0 && m1 > 0 {
			other := m1 - m0 - r.sluiceCPU - r.fakeCPU - r.selfCPU
			r.otherCores = max(0, other.Seconds()/wall.Seconds())
		}
		if r.sample != "" {
			logf("  %d errors, first: %s", r.errs, r.sample)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("interrupted: %w", err)
		}
		for _, c := range []*child{l.fake, l.sluice} {
			if c.exited() {
				return nil, fmt.Errorf("%s exited during the run (%v):\n%s", c.name, c.err, c.log.String())
			}
		}
		time.Sleep(200 * time.Millisecond) // let both sides settle
		return r, nil
	}

	var err error
	for i, t := range targets {
		rep.closed[i], err = phase(fmt.Sprintf("closed loop, %d conns, %v", o.conns, o.duration), t, func() *result {
			return closedLoop(ctx, t, o.conns, o.duration)
		})
		if err != nil {
			return nil, err
		}
	}
	for _, rate := range o.rates {
		p := openPair{rate: rate}
		for i, t := range targets {
			p.r[i], err = phase(fmt.Sprintf("open loop, %d req/s, %v", rate, o.duration), t, func() *result {
				return openLoop(ctx, t, rate, o.conns, o.duration)
			})
			if err != nil {
				return nil, err
			}
		}
		rep.open = append(rep.open, p)
	}
	if o.streams > 0 {
		for i, t := range targets {
			rep.stream[i], err = phase(fmt.Sprintf("%d streams at %d/s", o.streams, o.streamRate), t, func() *result {
				return streamLoop(ctx, t, o.streams, o.streamRate, min(o.conns, 16))
			})
			if err != nil {
				return nil, err
			}
		}
	}
	rep.rss, rep.peak, _ = procMem(l.sluice.pid())

	if o.perf {
		rep.perfTop, err = perfProfile(ctx, l, through, o)
		if err != nil {
			logf("perf: %v", err)
			rep.perfTop = "perf failed: " + err.Error()
		}
	}
	return rep, nil
}

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
