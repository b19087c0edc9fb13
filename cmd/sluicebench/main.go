// Command sluicebench measures what going through Sluice costs compared with
// calling the upstream directly (and through a plain nginx reverse proxy,
// when nginx is installed).
//
//	go run ./cmd/sluicebench [-duration 5s] [-rates 500,2000,5000,10000] [-pin on|off|both]
//	                         [-variant redis|cache-hit|stream] [-detail] [-out FILE]
//	go run ./cmd/sluicebench -streams 10000 -stream-duration 30s   # long streams: memory
//
// It builds bin/sluice and bin/fakeai (unless -no-build) and starts, as
// subprocesses on free loopback ports, the fake upstream (latency 0), Sluice
// with a realistic configuration written to a temporary directory (four keys
// over several users, teams and tiers, one of them a trusted app key naming
// its end users; in-memory buckets, or Redis with -variant redis; the memory
// cache on for every tier, so each request is looked up and, the requests
// being unique, misses; transcripts to JSONL files, or to ClickHouse when
// SLUICE_BENCH_CLICKHOUSE_ADDR is set) and, when found (-nginx), nginx as a
// keep-alive reverse proxy to the same fake. It then measures every path in
// the same run:
//
//   - max throughput: a closed loop on -conns keep-alive connections;
//   - fixed rates: an open loop per -rates value, requests sent on a fixed
//     schedule whatever the answers do (in flight bounded by -conns), latency
//     counted from the scheduled send time so a stall is not hidden
//     (no coordinated omission). A path is saturated at a rate when it
//     completes less than 95 % of it, drops or fails more than 1 % of the
//     requests, or its p99 exceeds -sat-p99; its higher rates are skipped;
//   - stream first chunk: -streams streaming chat requests at -stream-rate,
//     time from send to the first byte of the first SSE event;
//   - CPU per request of each gateway (/proc/PID/stat utime+stime), its RSS
//     before the load (idle) and after it (/proc/PID/status), and Sluice's
//     heap allocations per request (go_memstats_mallocs_total from its
//     admin /metrics, delta over the closed loop).
//
// -pin on puts the gateways (Sluice, nginx) on CPU 0 and the fake upstream
// and the load generator on CPU 1 (taskset); off leaves all of them to the
// scheduler; both runs the whole lab once per mode. Each mode prints one
// markdown table; -detail adds the per-phase tables.
//
// Variants: redis (buckets in Redis: a throwaway redis-server, or
// SLUICE_BENCH_REDIS_ADDR, with SLUICE_BENCH_REDIS_MODE=cluster a Redis
// Cluster's masters separated by commas; Redis commands per request from
// INFO commandstats, summed over them), cache-hit (every request the same, so after the first each
// one is answered from Sluice's cache), stream (the closed and open loops
// send streaming requests).
//
// With -stream-duration D, the run is instead the long-streams mode: -streams
// concurrent streams through Sluice, each lasting about D (one event a
// second), opened evenly over -stream-ramp (default D/3), while Sluice's RSS,
// goroutines and open descriptors are sampled; it reports their idle, peak
// and after values. Sluice needs two descriptors per stream: under an
// open-file limit (ulimit -n) too low for -streams, it runs as many as fit
// and says so; nothing is raised.
//
// Every non-stream request is a chat completion with a ~1 KB messages array
// whose last user message carries a unique number (except for cache-hit).
// The load generator runs in this process. Everything runs on loopback and
// ends after a bounded time; every child is killed by PID at the end, on
// error and on SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	duration      time.Duration
	warmup        time.Duration
	rates         []int
	conns         int
	out           string
	noBuild       bool
	streams       int
	streamRate    int
	streamChunks  int
	chunkInterval time.Duration
	perf          bool
	perfRate      int
	nice          int

	pin            string // on, off or both
	variant        string // "", redis, cache-hit or stream
	nginx          string // path of nginx; "" = none
	detail         bool
	satP99         time.Duration
	streamDuration time.Duration // > 0: the long-streams mode
	streamRamp     time.Duration // long streams: opened over this long
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("sluicebench", flag.ContinueOnError)
	o := &options{}
	rates := fs.String("rates", "500,2000,5000,10000", "open-loop request rates (req/s), comma-separated")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measured phase")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "closed-loop warm-up per path before measuring")
	fs.IntVar(&o.conns, "conns", 64, "keep-alive connections (closed loop) and in-flight bound (open loop)")
	fs.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	fs.BoolVar(&o.noBuild, "no-build", false, "use bin/sluice and bin/fakeai as they are")
	fs.IntVar(&o.streams, "streams", 500, "streaming requests per path for the first-byte measurement")
	fs.IntVar(&o.streamRate, "stream-rate", 100, "streaming requests per second")
	fs.IntVar(&o.streamChunks, "stream-chunks", 4, "content chunks per fake stream")
	fs.DurationVar(&o.chunkInterval, "chunk-interval", time.Millisecond, "fake pause between stream events")
	fs.BoolVar(&o.perf, "perf", false, "after the measurements, profile Sluice with perf record during one more -duration run through it and print its top symbols")
	fs.IntVar(&o.nice, "nice", 0, "run the fake, Sluice and the load generator at this nice value (e.g. -10; below 0 needs root), so other work on a shared machine disturbs the measurement less")
	fs.IntVar(&o.perfRate, "perf-rate", 0, "load of the -perf run: open loop at this many req/s; 0 = closed loop on -conns connections")
	fs.StringVar(&o.pin, "pin", "on", "on: gateways on CPU 0, fake upstream and load generator on CPU 1 (taskset); off: no pinning; both: one run per mode")
	fs.StringVar(&o.variant, "variant", "", "redis (buckets in Redis), cache-hit (identical requests, answered from the cache) or stream (closed and open loops stream)")
	nginx := fs.String("nginx", "auto", "nginx binary for the plain reverse proxy column; auto = nginx on PATH if any, off = none")
	fs.BoolVar(&o.detail, "detail", false, "also print the per-phase tables (every path, generator lag, other CPU)")
	fs.DurationVar(&o.satP99, "sat-p99", 100*time.Millisecond, "a fixed rate is saturated when a path's p99 exceeds this (or it completes < 95 %, or drops or fails > 1 %)")
	fs.DurationVar(&o.streamDuration, "stream-duration", 0, "long-streams mode: hold -streams concurrent streams through Sluice, each this long, and report memory")
	fs.DurationVar(&o.streamRamp, "stream-ramp", 0, "long-streams mode: open the streams evenly over this long (default a third of -stream-duration)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	switch *nginx {
	case "off", "":
	case "auto":
		o.nginx, _ = exec.LookPath("nginx")
	default:
		p, err := exec.LookPath(*nginx)
		if err != nil {
			return nil, fmt.Errorf("-nginx: %w", err)
		}
		o.nginx = p
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for _, f := range strings.Split(*rates, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.Atoi(f)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("-rates: %q is not a positive integer", f)
		}
		o.rates = append(o.rates, r)
	}
	switch {
	case o.duration <= 0 || o.duration > 5*time.Minute:
		return nil, errors.New("-duration must be in (0, 5m]")
	case o.conns < 1 || o.conns > 4096:
		return nil, errors.New("-conns must be in [1, 4096]")
	case o.streams < 0 || o.streamRate < 1:
		return nil, errors.New("-streams must be >= 0 and -stream-rate >= 1")
	case o.streamChunks < 1:
		return nil, errors.New("-stream-chunks must be >= 1")
	case o.nice < -20 || o.nice > 19:
		return nil, errors.New("-nice must be in [-20, 19]")
	case o.perfRate < 0:
		return nil, errors.New("-perf-rate must be >= 0")
	case o.warmup < 0:
		return nil, errors.New("-warmup must be >= 0")
	case o.pin != "on" && o.pin != "off" && o.pin != "both":
		return nil, errors.New("-pin must be on, off or both")
	case o.variant != "" && o.variant != "redis" && o.variant != "cache-hit" && o.variant != "stream":
		return nil, errors.New("-variant must be redis, cache-hit or stream")
	case o.satP99 <= 0:
		return nil, errors.New("-sat-p99 must be > 0")
	case o.streamDuration < 0 || o.streamDuration > 10*time.Minute:
		return nil, errors.New("-stream-duration must be in [0, 10m]")
	case o.streamRamp < 0 || (o.streamDuration > 0 && o.streamRamp >= o.streamDuration):
		return nil, errors.New("-stream-ramp must be >= 0 and below -stream-duration")
	case o.streamDuration > 0 && (o.streams < 1 || o.streams > 50000):
		return nil, errors.New("-streams must be in [1, 50000] with -stream-duration")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "sluicebench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluicebench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	root, err := findRoot()
	if err != nil {
		return err
	}
	rep := &report{opts: o, env: captureEnv()}
	if !o.noBuild {
		logf("building bin/sluice and bin/fakeai")
		if err := build(ctx, root); err != nil {
			return err
		}
	}
	if o.nice != 0 {
		if err := reniceSelf(o.nice); err != nil {
			return fmt.Errorf("-nice %d: %w", o.nice, err)
		}
	}
	modes := map[string][]bool{"on": {true}, "off": {false}, "both": {true, false}}[o.pin]
	if modes[0] && !canPin() {
		logf("cannot pin (taskset missing or fewer than 2 CPUs): running unpinned")
		modes = []bool{false}
	}

	if o.streamDuration > 0 {
		rep.long, err = runLong(ctx, root, o, modes[0])
	} else {
		for _, pinned := range modes {
			var m *modeReport
			m, err = runMode(ctx, root, o, pinned)
			if err != nil {
				break
			}
			rep.modes = append(rep.modes, m)
		}
	}
	if err != nil {
		return err
	}
	rep.env.loadEnd = loadAvg()

	text := rep.markdown()
	fmt.Print(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return err
		}
		logf("report written to %s", o.out)
	}
	return nil
}

// runMode starts a lab, measures it and stops it. Pinned, this process (the
// load generator) runs on otherCPU with one P for the time of the mode.
func runMode(ctx context.Context, root string, o *options, pinned bool) (*modeReport, error) {
	logf("mode: %s", map[bool]string{true: "pinned", false: "unpinned"}[pinned])
	l, err := startLab(ctx, root, labSpec{pinned: pinned, variant: o.variant, chunks: o.streamChunks,
		chunkInterval: o.chunkInterval, maxConns: 512, nginx: o.nginx})
	if l != nil {
		defer l.stop()
	}
	if err != nil {
		return nil, err
	}
	undo := pinSelf(pinned)
	defer undo()
	return measure(ctx, l, o)
}

// findRoot returns the directory of the sluice module's go.mod, searching up
// from the working directory.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module sluice\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run me inside the sluice module (no go.mod with \"module sluice\" found above the working directory)")
		}
		dir = parent
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "sluicebench: "+format+"\n", args...)
}
