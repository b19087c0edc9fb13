package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestPct(t *testing.T) {
	f := func(n int, q float64, want time.Duration) {
		t.Helper()
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Duration(i + 1) // 1..n
		}
		if got := pct(s, q); got != want {
			t.Fatalf("pct(1..%d, %v) = %v, want %v", n, q, got, want)
		}
	}
	f(1000, .5, 500)
	f(1000, .99, 990)
	f(1000, .999, 999)
	f(100, .999, 100) // nearest rank: the tail of a small sample is its maximum
	f(1, .5, 1)
	if got := pct(nil, .99); got != 0 {
		t.Fatalf("pct(nil) = %v, want 0", got)
	}
}

func TestSaturated(t *testing.T) {
	lat := func(p99 time.Duration) []time.Duration {
		s := make([]time.Duration, 100)
		for i := range s {
			s[i] = ms(1)
		}
		s[98], s[99] = p99, p99
		return s
	}
	f := func(r *result, want string) {
		t.Helper()
		got := saturated(1000, r, 100*time.Millisecond)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Fatalf("saturated(%+v) = %q, want %q", r, got, want)
		}
	}
	// 1,000 req/s for 2 s: 2,000 requests.
	f(&result{ok: 2000, elapsed: 2 * time.Second, lat: lat(ms(5))}, "")
	f(&result{ok: 1910, elapsed: 2 * time.Second, lat: lat(ms(5))}, "")                        // 955 req/s: ≥ 95 %
	f(&result{ok: 1890, elapsed: 2 * time.Second, lat: lat(ms(5))}, "completed 945 req/s")     // < 95 %
	f(&result{ok: 1975, dropped: 25, elapsed: 2 * time.Second, lat: lat(ms(5))}, "25 of 2000") // 1.25 % dropped
	f(&result{ok: 1985, errs: 15, elapsed: 2 * time.Second, lat: lat(ms(5))}, "")              // 0.75 % failed
	f(&result{ok: 2000, elapsed: 2 * time.Second, lat: lat(ms(150))}, "p99 150 ms > 100 ms")   // slow tail
	f(&result{ok: 2000, elapsed: 2 * time.Second, lat: lat(ms(99))}, "")                       // within the bound
	f(&result{ok: 0, dropped: 0, elapsed: 2 * time.Second}, "completed 0 req/s")               // nothing came back
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
go_memstats_mallocs_total 1.234567e+06
go_memstats_mallocs_total_other 7
sluice_requests_total{code="200"} 99
process_start_time_seconds 1.7e+09 1700000000000
`
	m := parseMetrics(text, "go_goroutines", mallocsMetric, "sluice_requests_total", "process_start_time_seconds")
	if m["go_goroutines"] != 42 || m[mallocsMetric] != 1234567 || m["process_start_time_seconds"] != 1.7e9 {
		t.Fatalf("parseMetrics = %v", m)
	}
	if _, ok := m["sluice_requests_total"]; ok {
		t.Fatalf("a labelled sample was taken as unlabelled: %v", m)
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=200,usec=900,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_get:calls=1000,usec=500,usec_per_call=0.50\r\n" +
		"cmdstat_time:calls=200,usec=20,usec_per_call=0.10\r\n" +
		"cmdstat_info:calls=7,usec=70,usec_per_call=10.00\r\n"
	got := parseCommandStats(info)
	if want := (redisCount{scripts: 200, commands: 1400}); got != want {
		t.Fatalf("parseCommandStats = %+v, want %+v", got, want)
	}
}

func TestMaxStreams(t *testing.T) {
	f := func(nofile, want int) {
		t.Helper()
		if got := maxStreams(nofile); got != want {
			t.Fatalf("maxStreams(%d) = %d, want %d", nofile, got, want)
		}
	}
	f(20000, 9984) // 10,000 streams do not fit under ulimit -n 20000
	f(20032+32, 10016)
	f(10, 0)
}

func TestSummaryTable(t *testing.T) {
	lat := []time.Duration{ms(1), ms(1), ms(2), ms(3)}
	res := func(ok int, cpu time.Duration, lat []time.Duration) *result {
		return &result{ok: ok, elapsed: time.Second, serverCPU: cpu, lat: lat, mallocs: int64(ok) * 30}
	}
	m := &modeReport{
		pinned: true, paths: []string{"direct", "Sluice"}, cpus: []string{"1", "0"},
		loadStart: "1.00", loadEnd: "1.50", transcripts: "JSONL files",
		closed: []*result{res(10000, time.Second, lat), res(8000, 2*time.Second, lat)},
		open: []openSet{
			{rate: 500, r: []*result{res(500, 0, lat), res(500, 0, []time.Duration{ms(2), ms(2), ms(3), ms(5)})}, sat: []string{"", ""}},
			{rate: 2000, r: []*result{res(2000, 0, lat), res(1000, 0, lat)}, sat: []string{"", "completed 1,000 req/s"}},
			{rate: 5000, r: []*result{res(5000, 0, lat), nil}, sat: []string{"", ""}},
		},
		idle: []int64{8 << 20, 20 << 20}, after: []int64{9 << 20, 30 << 20},
	}
	var b strings.Builder
	m.summary(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, &options{conns: 64, satP99: 100 * time.Millisecond})
	out := b.String()
	for _, want := range []string{
		"### pinned: gateways on CPU 0, fake upstream and load generator on CPU 1",
		"Load average 1.00 → 1.50",
		"| measure | direct | Sluice | Sluice added |\n|---|---:|---:|---:|\n",
		"| max throughput (closed loop, 64 conns) | 10,000 req/s | 8,000 req/s | -20.0 % req/s |",
		"| 500 req/s p50 / p99 / p99.9 | 1.000 / 3.000 / 3.000 ms | 2.000 / 5.000 / 5.000 ms | +1.000 / +2.000 / +2.000 ms |",
		"| 2,000 req/s p50 / p99 / p99.9 | 1.000 / 3.000 / 3.000 ms | saturated: completed 1,000 req/s |  |",
		"| 5,000 req/s p50 / p99 / p99.9 | 1.000 / 3.000 / 3.000 ms | — |  |",
		"| server CPU per request (closed loop) | 100.0 µs | 250.0 µs |  |",
		"| server RSS idle / after load | 8.0 MiB / 9.0 MiB | 20.0 MiB / 30.0 MiB |  |",
		"| allocations per request (closed loop) |  | 30.0 |  |",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Redis") || strings.Contains(out, "stream first chunk") {
		t.Fatalf("summary shows rows that were not measured:\n%s", out)
	}
}

func TestLongVerdict(t *testing.T) {
	f := func(idle, hwm int64, inSluice int, want string) {
		t.Helper()
		lr := &longReport{idle: sample{rss: idle << 20}, peakHWM: hwm << 20, peakInSluice: inSluice}
		if got := lr.verdict(); !strings.HasPrefix(got, want) {
			t.Fatalf("verdict(idle %d MiB, VmHWM %d MiB, %d streams) = %q, want prefix %q", idle, hwm, inSluice, got, want)
		}
	}
	f(20, 900, 10000, "met")
	f(20, 1100, 10000, "**not met**")
	f(20, 500, 5000, "likely met")         // 20 + 480 × 2 = 980 MiB
	f(20, 600, 5000, "likely **not met**") // 20 + 580 × 2 = 1,180 MiB
	f(20, 0, 0, "not measured")
}

func TestNetstatField(t *testing.T) {
	text := "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 3 26375 26380\nIpExt: InNoRoutes ListenOverflows\nIpExt: 0 9\n"
	if got := netstatField(text, "TcpExt", "ListenOverflows"); got != 26375 {
		t.Fatalf("TcpExt ListenOverflows = %d, want 26375", got)
	}
	if got := netstatField(text, "IpExt", "ListenOverflows"); got != 9 {
		t.Fatalf("IpExt ListenOverflows = %d, want 9", got)
	}
	if got := netstatField(text, "TcpExt", "Missing"); got != 0 {
		t.Fatalf("missing field = %d, want 0", got)
	}
}
