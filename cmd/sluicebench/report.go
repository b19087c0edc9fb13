package main

import (
	"fmt"
	"strings"
	"time"
)

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	o := r.opts
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("## Sluice overhead benchmark\n\n")
	cpu := ""
	if r.env.cpuModel != "" {
		cpu = " (" + r.env.cpuModel + ")"
	}
	w("- %s · %d cores%s · %s %s · load average (1 min) %s at start, %s at end\n",
		r.env.date.Format("2006-01-02 15:04 MST"), r.env.cpus, cpu, r.env.goVersion, r.env.osArch, r.env.loadStart, r.env.loadEnd)
	if r.pinned {
		w("- Pinning: fake upstream on CPU %s, Sluice on CPU %s (`taskset`; each Go runtime then uses GOMAXPROCS 1). ", r.fakeCPUs, r.sluiceCPUs)
	} else {
		w("- Pinning: none (taskset unavailable or fewer than 2 CPUs); fake on CPUs %s, Sluice on CPUs %s. ", r.fakeCPUs, r.sluiceCPUs)
	}
	w("The load generator (fasthttp client, in this process, unpinned) competes with both for the same %d cores, so every latency below includes its scheduling noise; the *added* rows subtract direct from through-Sluice.\n", r.env.cpus)
	if o.nice != 0 {
		w("- Priority: the fake, Sluice and the load generator ran at nice %d.\n", o.nice)
	}
	w("- Upstream: `bin/fakeai -latency 0` (answers at once). Sluice: `bin/sluice serve -config configs/sluice.yaml -policies configs/policies.yaml`.\n")
	w("- Requests: non-stream `POST /v1/chat/completions`, %d-byte body (system prompt, 3 turns), a unique number in every prompt. Each phase lasts %v after a %v warm-up per path; loopback only.\n\n",
		r.bodyBytes, o.duration, o.warmup)

	// Closed loop.
	d, s := r.closed[0], r.closed[1]
	w("### Max throughput — closed loop, %d keep-alive connections\n\n", o.conns)
	w("| path | req/s | p50 | p99 | errors | other CPU |\n|---|---:|---:|---:|---:|---:|\n")
	for i, res := range r.closed {
		w("| %s | %s | %s | %s | %s | %s |\n", pathName(i), fmtRate(res.rate()), fmtMs(pct(res.lat, .5)), fmtMs(pct(res.lat, .99)), fmtErrs(res), fmtCores(res))
	}
	w("| **Sluice cost** | %s | %s | %s | | |\n\n", fmtChange(s.rate(), d.rate()),
		fmtAdded(pct(s.lat, .5)-pct(d.lat, .5)), fmtAdded(pct(s.lat, .99)-pct(d.lat, .99)))

	// Open loop.
	if len(r.open) > 0 {
		w("### Fixed rate — open loop, latency from the scheduled send time (≤ %d in flight)\n\n", o.conns)
		w("| rate | path | done req/s | p50 | p99 | p99.9 | errors | generator lag p99 | other CPU |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range r.open {
			for i, res := range p.r {
				w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", fmtRate(float64(p.rate)), pathName(i), fmtRate(res.rate()),
					fmtMs(pct(res.lat, .5)), fmtMs(pct(res.lat, .99)), fmtMs(pct(res.lat, .999)), fmtErrs(res), fmtMs(pct(res.lag, .99)), fmtCores(res))
			}
			d, s := p.r[0], p.r[1]
			w("| %s | **added** | | **%s** | **%s** | **%s** | | | |\n", fmtRate(float64(p.rate)),
				fmtAdded(pct(s.lat, .5)-pct(d.lat, .5)), fmtAdded(pct(s.lat, .99)-pct(d.lat, .99)), fmtAdded(pct(s.lat, .999)-pct(d.lat, .999)))
		}
		w("\n*Generator lag* is how late the load generator itself sent requests (timer overshoot, CPU contention, in-flight bound); it is inside both paths' latencies. ")
		w("*Dropped* requests found all %d in-flight slots and the queue behind them full. ", o.conns)
		w("*Other CPU* (every table) is the CPU the rest of the machine used during the phase, in cores (user and system time of other processes, and hypervisor steal): when it is well above 0, the phase shared the machine and its tail latencies measure that too.\n\n")
	}

	// Streams.
	if r.stream[0] != nil {
		w("### Stream time to first byte — %d streams per path at %d/s, %d chunks, %v between events\n\n",
			o.streams, o.streamRate, o.streamChunks, o.chunkInterval)
		w("Time from sending the request to the first byte of the first SSE event.\n\n")
		w("| path | p50 | p99 | p99.9 | errors | other CPU |\n|---|---:|---:|---:|---:|---:|\n")
		for i, res := range r.stream {
			w("| %s | %s | %s | %s | %s | %s |\n", pathName(i), fmtMs(pct(res.lat, .5)), fmtMs(pct(res.lat, .99)), fmtMs(pct(res.lat, .999)), fmtErrs(res), fmtCores(res))
		}
		d, s := r.stream[0], r.stream[1]
		w("| **added** | **%s** | **%s** | **%s** | | |\n\n", fmtAdded(pct(s.lat, .5)-pct(d.lat, .5)),
			fmtAdded(pct(s.lat, .99)-pct(d.lat, .99)), fmtAdded(pct(s.lat, .999)-pct(d.lat, .999)))
	}

	// Resources.
	w("### Resources (CPU from /proc/PID/stat, 10 ms ticks)\n\n| what | value |\n|---|---:|\n")
	w("| Sluice CPU per request, closed loop | %s |\n", fmtCPU(s.sluiceCPU, s.ok))
	for _, p := range r.open {
		w("| Sluice CPU per request at %s req/s | %s |\n", fmtRate(float64(p.rate)), fmtCPU(p.r[1].sluiceCPU, p.r[1].ok))
	}
	w("| fake CPU per request, direct closed loop | %s |\n", fmtCPU(d.fakeCPU, d.ok))
	w("| load generator CPU per request, direct / through closed loop | %s / %s |\n", fmtCPU(d.selfCPU, d.ok), fmtCPU(s.selfCPU, s.ok))
	w("| Sluice RSS after load (peak) | %s (%s) |\n\n", fmtMiB(r.rss), fmtMiB(r.peak))

	// Targets.
	w("### Targets\n\n| target | measured | |\n|---|---:|---|\n")
	if len(r.open) > 0 {
		p := r.open[len(r.open)-1]
		for _, q := range r.open {
			if q.rate == 2000 {
				p = q
			}
		}
		a50 := pct(p.r[1].lat, .5) - pct(p.r[0].lat, .5)
		added := pct(p.r[1].lat, .99) - pct(p.r[0].lat, .99)
		w("| added p99 ≤ 1 ms at %s req/s, non-stream | %s | %s |\n", fmtRate(float64(p.rate)), fmtAdded(added), verdict(a50, added, p.r))
	}
	if r.stream[0] != nil {
		a50 := pct(r.stream[1].lat, .5) - pct(r.stream[0].lat, .5)
		a99 := pct(r.stream[1].lat, .99) - pct(r.stream[0].lat, .99)
		w("| stream first-byte overhead ≤ 1 ms (p50 / p99) | %s / %s | %s |\n", fmtAdded(a50), fmtAdded(a99), verdict(a50, a99, r.stream))
	}
	if r.perfTop != "" {
		w("\n### perf: Sluice during one more %v run through it\n\n```\n%s\n```\n", r.opts.duration, r.perfTop)
	}
	return b.String()
}

func pathName(i int) string {
	if i == 0 {
		return "direct"
	}
	return "through Sluice"
}

// verdict judges an "added ≤ 1 ms" target from the added p50 and the added
// figure the target names, and says when the phase was disturbed.
func verdict(a50, added time.Duration, rs [2]*result) string {
	if n := rs[0].errs + rs[0].dropped + rs[1].errs + rs[1].dropped; n > 0 {
		return fmt.Sprintf("inconclusive: %d errors or drops", n)
	}
	if added < a50-200*time.Microsecond {
		return "inconclusive: direct tail slower than through Sluice (noise)"
	}
	v := "**not met**"
	if added <= time.Millisecond {
		v = "met"
	}
	if o := max(rs[0].otherCores, rs[1].otherCores); o > 0.25 {
		v += fmt.Sprintf(" (machine shared: other CPU up to %.2f cores)", o)
	}
	return v
}

func fmtMs(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms < 10:
		return fmt.Sprintf("%.3f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func fmtAdded(d time.Duration) string {
	if d >= 0 {
		return "+" + fmtMs(d)
	}
	return "−" + fmtMs(-d)
}

func fmtRate(r float64) string {
	s := fmt.Sprintf("%.0f", r)
	// Thousands separators.
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func fmtChange(through, direct float64) string {
	if direct <= 0 {
		return "?"
	}
	return fmt.Sprintf("%+.1f %% req/s", (through/direct-1)*100)
}

func fmtErrs(r *result) string {
	if r.dropped > 0 {
		return fmt.Sprintf("%d (+%d dropped)", r.errs, r.dropped)
	}
	return fmt.Sprint(r.errs)
}

func fmtCPU(cpu time.Duration, n int) string {
	if n == 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f µs (%d requests, %.2f s CPU)", float64(cpu)/float64(time.Microsecond)/float64(n), n, cpu.Seconds())
}

func fmtCores(r *result) string { return fmt.Sprintf("%.2f cores", r.otherCores) }

func fmtMiB(b int64) string {
	if b <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
