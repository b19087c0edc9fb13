// Command sluicebench measures what going through Sluice costs compared with
// calling the upstream directly.
//
//	go run ./cmd/sluicebench [-duration 5s] [-rates 500,1000,2000] [-conns 64] [-out FILE]
//
// It builds bin/sluice and bin/fakeai (unless -no-build), starts the fake
// upstream (latency 0) and Sluice with the example configs as subprocesses on
// free loopback ports, pinned with taskset to CPU 1 and CPU 0 when it can,
// and then measures, direct to the fake and through Sluice in the same run:
//
//   - max throughput: a closed loop on -conns keep-alive connections;
//   - fixed rates: an open loop per -rates value, requests sent on a fixed
//     schedule whatever the answers do (in flight bounded by -conns), latency
//     counted from the scheduled send time so a stall is not hidden
//     (no coordinated omission);
//   - stream first byte: -streams streaming chat requests at -stream-rate,
//     time from send to the first byte of the first SSE event;
//   - Sluice's CPU time per request (/proc/PID/stat utime+stime) and its RSS
//     after the load (/proc/PID/status).
//
// Other flags: -no-build, -warmup, -streams, -stream-rate, -stream-chunks,
// -chunk-interval, -nice (run everything at a raised priority on a shared
// machine) and -perf / -perf-rate (record Sluice with perf during one more
// run and print its hottest symbols; the data stays in bin/sluice.perf.data).
// Each table also shows "other CPU": what the rest of the machine used during
// the phase, so a disturbed measurement can be told from a real one.
//
// Every request is a non-stream (or stream) chat completion with a ~1 KB
// messages array whose last user message carries a unique number, so no
// answer could be served from a cache.
//
// The load generator runs in this process, unpinned: on a small machine it
// competes for CPU with the fake and with Sluice, which inflates both the
// direct and the through figures; the "added" rows subtract the two.
// Everything runs on loopback and ends after a bounded time; both children
// are killed by PID at the end, on error and on SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
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
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("sluicebench", flag.ContinueOnError)
	o := &options{}
	rates := fs.String("rates", "500,1000,2000", "open-loop request rates (req/s), comma-separated")
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
	if err := fs.Parse(args); err != nil {
		return nil, err
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
	env := captureEnv()
	if !o.noBuild {
		logf("building bin/sluice and bin/fakeai")
		if err := build(ctx, root); err != nil {
			return err
		}
	}
	pinned := canPin()
	if o.nice != 0 {
		if err := reniceSelf(o.nice); err != nil {
			return fmt.Errorf("-nice %d: %w", o.nice, err)
		}
	}

	lab, err := startLab(ctx, root, o, pinned)
	if lab != nil {
		defer lab.stop()
	}
	if err != nil {
		return err
	}

	rep, err := measure(ctx, lab, o)
	if err != nil {
		return err
	}
	rep.env = env
	rep.env.loadEnd = loadAvg()
	rep.pinned = pinned
	rep.opts = o

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
