package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// longReport is what the long-streams mode measured: Sluice holding many
// slow streams at once.
type longReport struct {
	pinned    bool
	requested int    // -streams
	streams   int    // streams run: requested, or fewer to fit Sluice's descriptors
	capped    string // why streams < requested
	nofile    int    // Sluice's open-file limit (soft)
	events    int    // stream events per stream, one per interval
	interval  time.Duration
	rampRate  int // streams opened per second
	loadStart string
	loadEnd   string
	res       *result
	sluiceCPU time.Duration
	overflows int64         // TcpExt ListenOverflows over the run (the whole network namespace)
	fakeCPU   time.Duration // the fake upstream's, over the run
	selfCPU   time.Duration // the load generator's, over the run
	peakOpen  int64         // streams open at once, seen by the client
	// peakInSluice is the most streams Sluice held at once: its
	// descriptors beyond idle, halved (one to the client, one upstream).
	peakInSluice int
	idle, peak   sample
	after        sample // after the streams ended and the client closed its connections
	atPeak       sample // the sample of the highest RSS
	settled      sample // once goroutines are back near idle, or after settleMax
	settleTook   time.Duration
	peakHWM      int64 // VmHWM at the end
}

// sample is one reading of Sluice's memory, goroutines and descriptors.
type sample struct {
	rss          int64
	heap, stacks int64 // go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes
	goroutines   int
	fds          int
}

const (
	heapMetric  = "go_memstats_heap_inuse_bytes"
	stackMetric = "go_memstats_stack_inuse_bytes"
	settleMax   = 40 * time.Second
)

// fdBudget is what Sluice needs besides two descriptors per stream (one to
// the client, one to the upstream): listeners, files, epoll, the admin
// listener's connections (11 when idle, measured).
const fdBudget = 32

// maxStreams returns how many streams fit into an open-file limit of nofile
// descriptors, two per stream plus fdBudget.
func maxStreams(nofile int) int {
	return max(0, (nofile-fdBudget)/2)
}

// runLong starts a lab whose fake streams for -stream-duration, one event a
// second, holds -streams streams through Sluice at once and samples Sluice's
// RSS, goroutines and descriptors.
func runLong(ctx context.Context, root string, o *options, pinned bool) (*longReport, error) {
	interval := time.Second
	if o.streamDuration < interval {
		interval = o.streamDuration
	}
	events := max(1, int(o.streamDuration/interval))
	lr := &longReport{pinned: pinned, requested: o.streams, streams: o.streams, events: events, interval: interval, loadStart: loadAvg()}
	l, err := startLab(ctx, root, labSpec{pinned: pinned, chunks: events, chunkInterval: interval,
		maxConns: o.streams + fdBudget})
	if l != nil {
		defer l.stop()
	}
	if err != nil {
		return nil, err
	}
	undo := pinSelf(pinned)
	defer undo()
	pid := l.sluice.pid()
	lr.nofile = openFileLimit(pid)
	if n := maxStreams(lr.nofile); lr.nofile > 0 && n < lr.streams {
		lr.streams = n
		lr.capped = fmt.Sprintf("Sluice's open-file limit is %d (ulimit -n; not raised): %d streams need 2 descriptors each plus ~%d", lr.nofile, o.streams, fdBudget)
		logf("%s; running %d streams", lr.capped, n)
	}
	if self := openFileLimit(os.Getpid()); self > 0 && lr.streams+fdBudget > self {
		return nil, fmt.Errorf("this process's open-file limit %d is below %d streams", self, lr.streams)
	}

	t := newTarget("Sluice", l.sluiceAddr, benchKeys, o.conns)
	t.streams.MaxConns = lr.streams
	t.streams.ReadTimeout = 2*o.streamDuration + time.Minute // one deadline for the whole stream
	// A busy Sluice accepts late: wait for it rather than count a
	// refusal after fasthttp's default 3 s.
	t.streams.Dial = func(addr string) (net.Conn, error) { return fasthttp.DialTimeout(addr, 30*time.Second) }
	metricsURL := "http://" + l.adminAddr + "/metrics"
	read := func() sample {
		s := sample{fds: countFDs(pid)}
		s.rss, _, _ = procMem(pid)
		if v, err := scrapeMetrics(metricsURL, "go_goroutines", heapMetric, stackMetric); err == nil {
			s.goroutines, s.heap, s.stacks = int(v["go_goroutines"]), int64(v[heapMetric]), int64(v[stackMetric])
		}
		return s
	}
	lr.idle = read()

	// Open them over -stream-ramp (default a third of their length), so all
	// are open at once for the rest of the first one.
	ramp := o.streamRamp
	if ramp <= 0 {
		ramp = o.streamDuration / 3
	}
	lr.rampRate = max(1, int(float64(lr.streams)/max(ramp.Seconds(), 1)))
	logf("%d streams of %d events %v apart through Sluice, opened at %d/s", lr.streams, events, interval, lr.rampRate)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			s := read()
			open := streamsOpen.Load()
			mu.Lock()
			if s.rss > lr.peak.rss {
				lr.atPeak = s
			}
			lr.peak.rss = max(lr.peak.rss, s.rss)
			lr.peak.goroutines = max(lr.peak.goroutines, s.goroutines)
			lr.peak.fds = max(lr.peak.fds, s.fds)
			lr.peakOpen = max(lr.peakOpen, open)
			mu.Unlock()
			if time.Since(last) >= 5*time.Second {
				logf("  %d streams open; Sluice RSS %s, %d goroutines, %d descriptors", open, fmtMiB(s.rss), s.goroutines, s.fds)
				last = time.Now()
			}
		}
	})
	c0, _ := procCPU(pid)
	f0, _ := procCPU(l.fake.pid())
	g0 := selfCPU()
	o0 := listenOverflows()
	lr.res = streamLoop(ctx, t, lr.streams, lr.rampRate, lr.streams)
	lr.overflows = listenOverflows() - o0
	c1, _ := procCPU(pid)
	f1, _ := procCPU(l.fake.pid())
	lr.fakeCPU, lr.selfCPU = f1-f0, selfCPU()-g0
	close(stop)
	wg.Wait()
	lr.sluiceCPU = c1 - c0
	lr.peakInSluice = max(0, (lr.peak.fds-lr.idle.fds)/2)
	if lr.res.sample != "" {
		logf("  %d errors, first: %s", lr.res.errs, lr.res.sample)
	}
	if l.sluice.exited() {
		return nil, fmt.Errorf("sluice exited during the run (%v):\n%s", l.sluice.err, l.sluice.log.String())
	}
	t.streams.CloseIdleConnections()
	time.Sleep(2 * time.Second)
	lr.after = read()
	// fasthttp keeps an idle server worker goroutine for 10 s and idle
	// upstream connections longer: wait for the goroutines to come back.
	t0 := time.Now()
	for lr.settled = lr.after; lr.settled.goroutines > lr.idle.goroutines+20 && time.Since(t0) < settleMax && ctx.Err() == nil; {
		time.Sleep(time.Second)
		lr.settled = read()
	}
	lr.settleTook = time.Since(t0).Round(time.Second) + 2*time.Second
	_, lr.peakHWM, _ = procMem(pid)
	lr.loadEnd = loadAvg()
	return lr, ctx.Err()
}

func (lr *longReport) markdown(w func(string, ...any), o *options) {
	if lr.pinned {
		w("- Pinning: Sluice on CPU %d, the fake upstream and the load generator (separate processes) on CPU %d.\n", gatewayCPU, otherCPU)
	} else {
		w("- Pinning: none.\n")
	}
	w("- Load average %s when the streams began, %s when they ended.\n\n", lr.loadStart, lr.loadEnd)
	w("| measure | value |\n|---|---:|\n")
	req := ""
	if lr.streams != lr.requested {
		req = fmt.Sprintf(" (%s requested)", fmtRate(float64(lr.requested)))
	}
	w("| streams run%s | %s, opened at %s/s |\n", req, fmtRate(float64(lr.streams)), fmtRate(float64(lr.rampRate)))
	w("| each stream | %d events %v apart (~%v) |\n", lr.events, lr.interval, time.Duration(lr.events)*lr.interval)
	w("| streams open at once, peak: in Sluice ((descriptors − idle) / 2) / answered, seen by the client | %s / %s |\n", fmtRate(float64(lr.peakInSluice)), fmtRate(float64(lr.peakOpen)))
	w("| completed / errors + dropped | %s / %d |\n", fmtRate(float64(lr.res.ok)), lr.res.errs+lr.res.dropped)
	w("| first chunk p50 / p99 / p99.9 | %s |\n", fmtLat(lr.res.lat, false))
	w("| Sluice RSS idle / peak sampled / VmHWM / after | %s / %s / %s / %s |\n", fmtMiB(lr.idle.rss), fmtMiB(lr.peak.rss), fmtMiB(lr.peakHWM), fmtMiB(lr.after.rss))
	if lr.peakInSluice > 0 {
		per := float64(lr.peakHWM-lr.idle.rss) / float64(lr.peakInSluice)
		w("| RSS per stream ((VmHWM − idle) / peak in Sluice) | %.1f KiB |\n", per/1024)
		if lr.peakInSluice < 10000 {
			w("| RSS for 10,000 streams, extrapolated (idle + 10,000 × per stream) | %s |\n", fmtMiB(lr.idle.rss+int64(per*10000)))
		}
	}
	w("| Sluice at the RSS peak: heap in use / goroutine stacks | %s / %s |\n", fmtMiB(lr.atPeak.heap), fmtMiB(lr.atPeak.stacks))
	if n := lr.peakInSluice; n > 0 && lr.atPeak.heap > 0 {
		w("| per stream: heap in use / stacks (beyond idle, / peak in Sluice) | %.1f / %.1f KiB |\n",
			float64(lr.atPeak.heap-lr.idle.heap)/1024/float64(n), float64(lr.atPeak.stacks-lr.idle.stacks)/1024/float64(n))
	}
	w("| Sluice goroutines idle / peak / after / %v after | %d / %s / %s / %s |\n", lr.settleTook, lr.idle.goroutines, fmtRate(float64(lr.peak.goroutines)),
		fmtRate(float64(lr.after.goroutines)), fmtRate(float64(lr.settled.goroutines)))
	w("| Sluice descriptors and RSS %v after | %d, %s |\n", lr.settleTook, lr.settled.fds, fmtMiB(lr.settled.rss))
	w("| Sluice descriptors idle / peak / limit | %d / %s / %s |\n", lr.idle.fds, fmtRate(float64(lr.peak.fds)), fmtRate(float64(lr.nofile)))
	w("| CPU over the run: Sluice (per stream) / fake upstream / load generator | %.1f s (%s) / %.1f s / %.1f s |\n",
		lr.sluiceCPU.Seconds(), fmtMicros(lr.sluiceCPU, max(lr.res.ok, 1)), lr.fakeCPU.Seconds(), lr.selfCPU.Seconds())
	w("| accept queue overflows during the run (TcpExt ListenOverflows; each costs the client a SYN retransmit, 1 s and more) | %s |\n", fmtRate(float64(lr.overflows)))
	w("| target: 10,000 concurrent streams in ≤ 1 GiB | %s |\n", lr.verdict())
	if lr.capped != "" {
		w("\nStreams capped: %s.\n", lr.capped)
	}
	w("\n*After* is 2 s after the last stream ended and the load generator closed its idle connections. The load generator and the fake upstream are separate processes, each with its own open-file limit.\n")
}

// verdict judges the 10,000 streams in ≤ 1 GiB target: measured when Sluice
// held 10,000 streams at once, else extrapolated from the RSS per stream.
func (lr *longReport) verdict() string {
	const gib = 1 << 30
	if lr.peakHWM <= 0 || lr.peakInSluice <= 0 {
		return "not measured"
	}
	if lr.peakInSluice >= 10000 {
		if lr.peakHWM <= gib {
			return "met (VmHWM " + fmtMiB(lr.peakHWM) + ")"
		}
		return "**not met** (VmHWM " + fmtMiB(lr.peakHWM) + ")"
	}
	est := lr.idle.rss + (lr.peakHWM-lr.idle.rss)*10000/int64(lr.peakInSluice)
	v := "likely met"
	if est > gib {
		v = "likely **not met**"
	}
	return fmt.Sprintf("%s: %s streams at once used %s; 10,000 extrapolate to %s", v, fmtRate(float64(lr.peakInSluice)), fmtMiB(lr.peakHWM), fmtMiB(est))
}

// listenOverflows returns TcpExt ListenOverflows from /proc/net/netstat:
// connections dropped because a listener's accept queue was full.
func listenOverflows() int64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return 0
	}
	return netstatField(string(b), "TcpExt", "ListenOverflows")
}

// netstatField returns one counter of /proc/net/netstat, whose sections are
// pairs of lines: "Group: name name ..." then "Group: value value ...".
func netstatField(text, group, name string) int64 {
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) == 0 || keys[0] != group+":" || len(vals) != len(keys) || vals[0] != keys[0] {
			continue
		}
		for j, k := range keys {
			if k == name {
				n, _ := strconv.ParseInt(vals[j], 10, 64)
				return n
			}
		}
	}
	return 0
}

// openFileLimit returns the soft open-file limit of pid, 0 when unknown.
func openFileLimit(pid int) int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Max open files"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				n, _ := strconv.Atoi(fs[0])
				return n
			}
		}
	}
	return 0
}

// countFDs returns how many descriptors pid has open, 0 when unknown.
func countFDs(pid int) int {
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0
	}
	return len(es)
}
