package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// streamHeap holds n streams through a Server on loopback TCP (so each has
// its disconnect watcher, as in production) and returns the heap in use per
// stream while they are held. The upstream and the clients are raw sockets
// that allocate next to nothing, so the figure is the proxy's. With
// SLUICE_STREAM_HEAP_PROFILE set it also writes a heap profile there.
func streamHeap(tb testing.TB, n int, acceptEncoding string, pad int) streamCost {
	tb.Helper()
	if os.Getenv("SLUICE_STREAM_HEAP_PROFILE") != "" {
		defer func(r int) { runtime.MemProfileRate = r }(runtime.MemProfileRate)
		runtime.MemProfileRate = 512
	}
	release := make(chan struct{})
	var held sync.WaitGroup

	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var upMu sync.Mutex
	var upConns []net.Conn
	defer func() {
		upLn.Close()
		upMu.Lock()
		for _, c := range upConns {
			c.Close()
		}
		upMu.Unlock()
	}()
	go func() {
		for {
			c, err := upLn.Accept()
			if err != nil {
				return
			}
			upMu.Lock()
			upConns = append(upConns, c)
			upMu.Unlock()
			go fakeSlowStream(c, release)
		}
	}()

	s := newTestServer(tb, fmt.Sprintf("upstreams:\n  - name: mem\n    base_url: http://%s/v1\n    api_key: sk-up\n    max_conns: %d\n", upLn.Addr(), n+16), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes

	body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me a long story.` + strings.Repeat(" Go on.", pad/7) + `"}]}`
	req := []byte("POST /v1/chat/completions HTTP/1.1\r\nHost: sluice\r\nAuthorization: Bearer sk-client\r\n" +
		"Content-Type: application/json\r\n")
	if acceptEncoding != "" {
		req = append(req, "Accept-Encoding: "+acceptEncoding+"\r\n"...)
	}
	req = append(req, "Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body...)

	// Warm the pools and the upstream connection path with one stream.
	open := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			tb.Fatal(err)
		}
		var buf [1024]byte
		var got []byte
		for !bytes.Contains(got, []byte("data: ")) {
			m, err := c.Read(buf[:])
			if err != nil {
				tb.Fatalf("stream %s: %v", got, err)
			}
			got = append(got, buf[:m]...)
		}
		return c
	}
	conns := make([]net.Conn, 0, n)
	conns = append(conns, open())

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	for len(conns) < n+1 {
		conns = append(conns, open())
	}
	var during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&during)
	g1 := runtime.NumGoroutine()
	if path := os.Getenv("SLUICE_STREAM_HEAP_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			tb.Fatal(err)
		}
		f.Close()
	}
	close(release)
	held.Add(len(conns))
	for _, c := range conns {
		go func() {
			defer held.Done()
			defer c.Close()
			// Read to the end of the chunked answer; the connection stays open.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var buf [1024]byte
			var tail []byte
			for !bytes.HasSuffix(tail, []byte("\r\n0\r\n\r\n")) {
				m, err := c.Read(buf[:])
				if err != nil {
					return
				}
				tail = append(tail, buf[:m]...)
			}
		}()
	}
	held.Wait()
	_ = s.Shutdown(tb.Context())
	// Every stream's relay has stopped being watched.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		left := s.watch.len()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d streams still watched after they ended", left)
		}
	}
	return streamCost{
		heap:       float64(int64(during.HeapInuse)-int64(before.HeapInuse)) / float64(n),
		stack:      float64(int64(during.StackInuse)-int64(before.StackInuse)) / float64(n),
		goroutines: float64(g1-g0) / float64(n),
	}
}

// streamCost is what one held stream costs, the test's own sockets and
// goroutines included: bytes of heap and stack, and goroutines.
type streamCost struct {
	heap, stack, goroutines float64
}

// fakeSlowStream answers one streamed chat request on c: one event at once,
// the rest once release closes.
func fakeSlowStream(c net.Conn, release chan struct{}) {
	defer c.Close()
	var buf [1024]byte
	var head []byte // the request up to its blank line
	rest := -1      // body bytes still to read once the head is in
	for rest != 0 {
		m, err := c.Read(buf[:])
		if err != nil {
			return
		}
		if rest > 0 {
			rest = max(0, rest-m)
			continue
		}
		head = append(head, buf[:m]...)
		i := bytes.Index(head, []byte("\r\n\r\n"))
		if i < 0 {
			continue
		}
		cl := 0
		if j := bytes.Index(bytes.ToLower(head[:i]), []byte("content-length: ")); j >= 0 {
			for k := j + len("content-length: "); k < i && head[k] >= '0' && head[k] <= '9'; k++ {
				cl = cl*10 + int(head[k]-'0')
			}
		}
		rest = max(0, cl-(len(head)-i-4))
		head = nil
	}
	const event = `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Once upon a time"}}]}` + "\n\n"
	chunk := func(s string) string { return strconv.FormatInt(int64(len(s)), 16) + "\r\n" + s + "\r\n" }
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk(event)); err != nil {
		return
	}
	<-release
	usage := `data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":4,"total_tokens":14}}` + "\n\n"
	_, _ = io.WriteString(c, chunk(event)+chunk(usage)+chunk("data: [DONE]\n\n")+"0\r\n\r\n")
	_, _ = io.Copy(io.Discard, c) // until Sluice closes its pooled connection
}

// TestStreamHeapReport prints the heap each held stream costs. It is a
// measuring tool: SLUICE_STREAM_HEAP_N streams (default 1000).
func TestStreamHeapReport(t *testing.T) {
	nStr := os.Getenv("SLUICE_STREAM_HEAP_N")
	if nStr == "" {
		t.Skip("set SLUICE_STREAM_HEAP_N to measure")
	}
	n, err := strconv.Atoi(nStr)
	if err != nil {
		t.Fatal(err)
	}
	pad, _ := strconv.Atoi(os.Getenv("SLUICE_STREAM_HEAP_PAD"))
	c := streamHeap(t, n, os.Getenv("SLUICE_STREAM_HEAP_AE"), pad)
	t.Logf("%d streams: %.0f B heap, %.0f B stacks and %.2f goroutines per stream (the test's clients and upstream included)", n, c.heap, c.stack, c.goroutines)
}

// TestStreamHeapBound fails when a held stream gets heavier again: it was
// ~51 KiB with a 16 KiB line reader and fasthttp's 16 KiB read buffer held
// through every stream, ~19 KiB without them (the test's own sockets
// included); and three goroutines (fasthttp's, a client watcher's, the
// test upstream's), two with one watcher for all streams. The request
// bodies are 16 KiB, given back once the stream begins.
func TestStreamHeapBound(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector adds its own heap")
	}
	const streams, bound = 100, 28 << 10
	c := streamHeap(t, streams, "", 16<<10)
	if c.heap > bound {
		t.Errorf("a held stream costs %.0f B of heap; want at most %d", c.heap, bound)
	}
	if c.goroutines > 2.1 {
		t.Errorf("a held stream costs %.2f goroutines; want 2 (the server's and the test upstream's)", c.goroutines)
	}
	t.Logf("a held stream costs %.0f B of heap and %.2f goroutines", c.heap, c.goroutines)
}
