package main

import (
	"fmt"
	"strings"
	"time"
)

// markdown renders the report: a header and one table per mode (or the
// long-streams table), and with -detail the per-phase tables.
func (r *report) markdown() string {
	var b strings.Builder
	o := r.opts
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	if r.long != nil {
		w("## Sluice under long streams\n\n")
	} else {
		w("## Sluice overhead benchmark\n\n")
	}
	cpu := ""
	if r.env.cpuModel != "" {
		cpu = " (" + r.env.cpuModel + ")"
	}
	w("- %s · %d cores%s · %s %s · load average (1 min) %s at start, %s at end\n",
		r.env.date.Format("2006-01-02 15:04 MST"), r.env.cpus, cpu, r.env.goVersion, r.env.osArch, r.env.loadStart, r.env.loadEnd)
	if o.nice != 0 {
		w("- Priority: every process ran at nice %d.\n", o.nice)
	}
	if r.long != nil {
		r.long.markdown(w, o)
		return b.String()
	}
	variant := "none (unique non-stream requests)"
	switch o.variant {
	case "redis":
		variant = "**redis**: buckets in Redis"
	case "cache-hit":
		variant = "**cache-hit**: every request identical, answered from Sluice's memory cache after the first"
	case "stream":
		variant = "**stream**: the closed and open loops send streaming requests"
	}
	w("- Variant: %s. Sluice: example `sluice.yaml`, 4 keys (3 users in 2 teams and 3 tiers, 1 trusted app key naming 100 end users), buckets %s, memory cache on for every tier, transcripts on.\n",
		variant, map[bool]string{true: "in Redis", false: "in memory"}[o.variant == "redis"])
	w("- Requests: `POST /v1/chat/completions`, ~1 KB body; %v per phase after a %v warm-up per path; fixed rates stop for a path once saturated (completed < 95 %% of the rate, > 1 %% dropped or failed, or p99 > %s); loopback only.\n",
		o.duration, o.warmup, fmtMs(o.satP99))
	for _, m := range r.modes {
		m.summary(w, o)
		if o.detail {
			m.details(w, o)
		}
	}
	return b.String()
}

// summary writes the mode's one table.
func (m *modeReport) summary(w func(string, ...any), o *options) {
	mode := "unpinned (every process on every CPU)"
	if m.pinned {
		mode = fmt.Sprintf("pinned: gateways on CPU %d, fake upstream and load generator on CPU %d", gatewayCPU, otherCPU)
	}
	w("\n### %s\n\n", mode)
	w("Load average %s → %s; transcripts to %s; servers' CPUs: ", m.loadStart, m.loadEnd, m.transcripts)
	for i, p := range m.paths {
		if i > 0 {
			w(", ")
		}
		w("%s %s", serverName(p), m.cpus[i])
	}
	other := 0.0
	for _, r := range m.all() {
		other = max(other, r.otherCores)
	}
	w("; other work on the machine up to %.2f cores during a phase.\n\n", other)

	// Columns: direct, then each gateway and what it adds.
	w("| measure | direct |")
	for _, p := range m.paths[1:] {
		w(" %s | %s added |", p, p)
	}
	w("\n|---|---:|")
	for range m.paths[1:] {
		w("---:|---:|")
	}
	w("\n")
	row := func(name string, cell func(i int) string, added func(i int) string) {
		w("| %s | %s |", name, cell(0))
		for i := 1; i < len(m.paths); i++ {
			a := ""
			if added != nil {
				a = added(i)
			}
			w(" %s | %s |", cell(i), a)
		}
		w("\n")
	}
	row(fmt.Sprintf("max throughput (closed loop, %d conns)", o.conns),
		func(i int) string { return fmtRate(m.closed[i].rate()) + " req/s" },
		func(i int) string { return fmtChange(m.closed[i].rate(), m.closed[0].rate()) })
	for _, p := range m.open {
		row(fmt.Sprintf("%s req/s p50 / p99 / p99.9", fmtRate(float64(p.rate))),
			func(i int) string {
				switch {
				case p.r[i] == nil:
					return "—"
				case p.sat[i] != "":
					return "saturated: " + p.sat[i]
				}
				return fmtLat(p.r[i].lat, false)
			},
			func(i int) string {
				if p.r[i] == nil || p.r[0] == nil || p.sat[i] != "" || p.sat[0] != "" {
					return ""
				}
				return fmtAddedLat(p.r[i].lat, p.r[0].lat)
			})
	}
	if m.stream != nil {
		row(fmt.Sprintf("stream first chunk p50 / p99 / p99.9 (%d at %d/s)", o.streams, o.streamRate),
			func(i int) string { return fmtLat(m.stream[i].lat, false) },
			func(i int) string { return fmtAddedLat(m.stream[i].lat, m.stream[0].lat) })
	}
	row("server CPU per request (closed loop)",
		func(i int) string { return fmtMicros(m.closed[i].serverCPU, m.closed[i].ok) }, nil)
	row("server RSS idle / after load",
		func(i int) string { return fmtMiB(m.idle[i]) + " / " + fmtMiB(m.after[i]) }, nil)
	if len(m.afterMem) == len(afterMemMetrics) {
		row("Sluice after load: Go heap in use / stacks / memory cache (outside the heap)", func(i int) string {
			if m.paths[i] != "Sluice" {
				return ""
			}
			f := func(k string) string { return fmtMiB(int64(m.afterMem[k])) }
			return f(afterMemMetrics[0]) + " / " + f(afterMemMetrics[1]) + " / " + f(afterMemMetrics[2])
		}, nil)
	}
	row("allocations per request (closed loop)", func(i int) string {
		if m.paths[i] != "Sluice" || m.closed[i].ok == 0 {
			return ""
		}
		return fmt.Sprintf("%.1f", float64(m.closed[i].mallocs)/float64(m.closed[i].ok))
	}, nil)
	if m.redisCalls {
		row("Redis per request: scripts (round trips) / commands incl. inside scripts (closed loop)", func(i int) string {
			r := m.closed[i]
			if m.paths[i] != "Sluice" || r.ok == 0 {
				return ""
			}
			return fmt.Sprintf("%.2f / %.2f", float64(r.redis.scripts)/float64(r.ok), float64(r.redis.commands)/float64(r.ok))
		}, nil)
	}
	row("errors + dropped, all phases", func(i int) string {
		n := 0
		for _, r := range m.path(i) {
			n += r.errs + r.dropped
		}
		return fmt.Sprint(n)
	}, nil)
	w("\nThe direct path's server is the fake upstream (its CPU and RSS are the upstream's own); a gateway's server is the gateway alone. Latency is from the scheduled send time; *added* subtracts the direct path's figure at the same percentile.\n")
}

// all returns every result of the mode.
func (m *modeReport) all() []*result {
	var rs []*result
	for i := range m.paths {
		rs = append(rs, m.path(i)...)
	}
	return rs
}

// path returns every result of path i.
func (m *modeReport) path(i int) []*result {
	rs := []*result{m.closed[i]}
	for _, p := range m.open {
		if p.r[i] != nil {
			rs = append(rs, p.r[i])
		}
	}
	if m.stream != nil {
		rs = append(rs, m.stream[i])
	}
	return rs
}

// details writes the per-phase tables of the mode.
func (m *modeReport) details(w func(string, ...any), o *options) {
	w("\n#### Closed loop, %d keep-alive connections\n\n", o.conns)
	w("| path | req/s | p50 | p99 | p99.9 | errors | server CPU | generator CPU | other CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range m.closed {
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.paths[i], fmtRate(r.rate()), fmtMs(pct(r.lat, .5)), fmtMs(pct(r.lat, .99)), fmtMs(pct(r.lat, .999)),
			fmtErrs(r), fmtCPU(r.serverCPU, r.ok), fmtCPU(r.selfCPU, r.ok), fmtCores(r))
	}
	if len(m.open) > 0 {
		w("\n#### Fixed rate, open loop (≤ %d in flight)\n\n", o.conns)
		w("| rate | path | done req/s | p50 | p99 | p99.9 | errors | generator lag p99 | server CPU | other CPU |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range m.open {
			for i, r := range p.r {
				if r == nil {
					continue
				}
				w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", fmtRate(float64(p.rate)), m.paths[i], fmtRate(r.rate()),
					fmtMs(pct(r.lat, .5)), fmtMs(pct(r.lat, .99)), fmtMs(pct(r.lat, .999)), fmtErrs(r), fmtMs(pct(r.lag, .99)), fmtCPU(r.serverCPU, r.ok), fmtCores(r))
			}
		}
		w("\n*Generator lag* is how late the load generator itself sent requests (timer overshoot, CPU contention, in-flight bound); it is inside every path's latencies. ")
		w("*Dropped* requests found all %d in-flight slots and the queue behind them full. ", o.conns)
		w("*Other CPU* is the CPU the rest of the machine used during the phase, in cores (other processes and hypervisor steal).\n")
	}
	if m.stream != nil {
		w("\n#### Stream first chunk, %d streams per path at %d/s, %d chunks, %v between events\n\n", o.streams, o.streamRate, o.streamChunks, o.chunkInterval)
		w("| path | p50 | p99 | p99.9 | errors | other CPU |\n|---|---:|---:|---:|---:|---:|\n")
		for i, r := range m.stream {
			w("| %s | %s | %s | %s | %s | %s |\n", m.paths[i], fmtMs(pct(r.lat, .5)), fmtMs(pct(r.lat, .99)), fmtMs(pct(r.lat, .999)), fmtErrs(r), fmtCores(r))
		}
	}
	w("\n#### Targets\n\n| target | measured | |\n|---|---:|---|\n")
	for _, p := range m.open {
		if p.rate != 2000 || p.r[0] == nil || p.r[1] == nil {
			continue
		}
		a50 := pct(p.r[1].lat, .5) - pct(p.r[0].lat, .5)
		a99 := pct(p.r[1].lat, .99) - pct(p.r[0].lat, .99)
		w("| added p99 ≤ 1 ms at 2,000 req/s | %s | %s |\n", fmtAdded(a99), verdict(a50, a99, [2]*result{p.r[0], p.r[1]}))
	}
	if m.stream != nil {
		a50 := pct(m.stream[1].lat, .5) - pct(m.stream[0].lat, .5)
		a99 := pct(m.stream[1].lat, .99) - pct(m.stream[0].lat, .99)
		w("| stream first-chunk overhead ≤ 1 ms (p50 / p99) | %s / %s | %s |\n", fmtAdded(a50), fmtAdded(a99), verdict(a50, a99, [2]*result{m.stream[0], m.stream[1]}))
	}
	if m.perfTop != "" {
		w("\n#### perf: Sluice during one more %v run through it\n\n```\n%s\n```\n", o.duration, m.perfTop)
	}
}

// serverName names the process a path's requests end in.
func serverName(path string) string {
	if path == "direct" {
		return "fake"
	}
	return path
}

// fmtLat formats the p50 / p99 / p99.9 of sorted latencies in ms.
func fmtLat(lat []time.Duration, signed bool) string {
	if len(lat) == 0 {
		return "?"
	}
	return fmtNums(signed, pct(lat, .5), pct(lat, .99), pct(lat, .999))
}

// fmtAddedLat formats the p50 / p99 / p99.9 of lat minus those of base.
func fmtAddedLat(lat, base []time.Duration) string {
	if len(lat) == 0 || len(base) == 0 {
		return "?"
	}
	return fmtNums(true, pct(lat, .5)-pct(base, .5), pct(lat, .99)-pct(base, .99), pct(lat, .999)-pct(base, .999))
}

// fmtNums formats durations as "a / b / c ms", with a sign when signed.
func fmtNums(signed bool, ds ...time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		s := strings.TrimSuffix(fmtMs(d.Abs()), " ms")
		if signed {
			s = map[bool]string{true: "+", false: "−"}[d >= 0] + s
		}
		parts[i] = s
	}
	return strings.Join(parts, " / ") + " ms"
}

func fmtMicros(cpu time.Duration, n int) string {
	if n == 0 || cpu == 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f µs", float64(cpu)/float64(time.Microsecond)/float64(n))
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
