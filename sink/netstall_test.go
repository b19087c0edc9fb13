package sink

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// pingerEnv makes the test binary a pinger (TestNetPinger): it dials the
// address in it and sends its wall clock, 8 bytes, every 200 µs, until the
// connection closes.
const pingerEnv = "SLUICE_SINK_TEST_PINGER"

func TestNetPinger(t *testing.T) {
	addr := os.Getenv(pingerEnv)
	if addr == "" {
		t.Skip("run by BenchmarkSinkStallOnePNet as its pinger")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	for {
		binary.LittleEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
		if _, err := c.Write(b[:]); err != nil {
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// BenchmarkSinkStallOnePNet is BenchmarkSinkStallOneP with the waiting
// goroutine woken by the network, as a request is: another process sends a
// timestamp every 200 µs over loopback TCP, and the benchmark reports how
// late the reader got the worst of them (max-late-ms) while 2,000 records went
// through batcher and JSONL shipper with GOMAXPROCS 1, beside the worst with
// the sink idle (idle-late-ms). The Go scheduler polls the network only when
// it has nothing else to run (or every 10 ms, from sysmon), so a goroutine
// that stays runnable holds back every request waiting on a socket, however
// often it yields.
func BenchmarkSinkStallOnePNet(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestNetPinger$", "-test.count", "1")
	cmd.Env = append(os.Environ(), pingerEnv+"="+ln.Addr().String())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	conn, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var worst atomic.Int64 // ns, since the last reset
	go func() {
		var buf [8]byte
		for {
			if _, err := io.ReadFull(conn, buf[:]); err != nil {
				return
			}
			late := time.Now().UnixNano() - int64(binary.LittleEndian.Uint64(buf[:]))
			if late > worst.Load() {
				worst.Store(late)
			}
		}
	}()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	time.Sleep(50 * time.Millisecond)
	worst.Store(0)
	time.Sleep(50 * time.Millisecond)
	idle := time.Duration(worst.Load())

	next := stallWork(b)
	var busy time.Duration
	for b.Loop() {
		s, recs := next()
		time.Sleep(5 * time.Millisecond)
		worst.Store(0)
		for _, r := range recs {
			if !s.Enqueue(r) {
				b.Fatal("dropped")
			}
		}
		if err := s.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond) // the last late one is read
		busy = max(busy, time.Duration(worst.Load()))
	}
	b.ReportMetric(float64(busy)/1e6, "max-late-ms")
	b.ReportMetric(float64(idle)/1e6, "idle-late-ms")
}
