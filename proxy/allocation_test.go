//go:build !race

package proxy

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// TestScanRequestNoAllocs keeps the scanner off the heap: it runs on every
// request.
func TestScanRequestNoAllocs(t *testing.T) {
	var f reqFields
	n := testing.AllocsPerRun(100, func() {
		if err := scanRequest(chatBody1K, &f); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("scanRequest allocates %v times per call; want 0", n)
	}
}

// TestUsedTokensNoAllocs: counting a known tier and group's tokens, done
// for every answer, stays off the heap.
func TestUsedTokensNoAllocs(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	u := usage{prompt: 10, completion: 3, ok: true}
	m.usedTokens("free", "gpt-4o*", u, 0.001)
	if n := testing.AllocsPerRun(100, func() { m.usedTokens("free", "gpt-4o*", u, 0.001) }); n != 0 {
		t.Fatalf("usedTokens allocates %v times per call; want 0", n)
	}
}

// TestProxyChatNoAllocs: a non-stream chat request through the whole
// handler (scan, identify, route, forward, relay) stays off the heap once
// its model name has been seen; the in-memory client and upstream are
// included.
func TestProxyChatNoAllocs(t *testing.T) {
	c, stop := benchProxy(t)
	defer stop()
	req := chatRequest(chatBody1K)
	resp := fasthttp.AcquireResponse()
	do := func() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("status %d, error %v", resp.StatusCode(), err)
		}
	}
	for range 100 {
		do() // pools and the model name warm up
	}
	// The one allocation is fasthttp's, not Sluice's: with
	// ReduceMemoryUsage (a connection holds no read buffer between
	// requests) it reads each request's first byte into a 1-byte array that
	// escapes.
	if n := testing.AllocsPerRun(500, do); n > 1 {
		t.Fatalf("a chat request allocates %v times; want at most 1", n)
	}
}

// TestProxyChatTCPAllocs: the same request over real loopback sockets, to
// Sluice and from Sluice to its upstream, where the connection pool checks
// sockets (the in-memory test has none to check). The count covers the
// whole process (the test's client and upstream too): 4 before the pool
// held connections per call, and so it stays: a check of an upstream
// connection before reuse allocates nothing.
func TestProxyChatTCPAllocs(t *testing.T) {
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(chatAnswer)
	}}
	go upSrv.Serve(upLn) //nolint:errcheck // ends when the listener closes
	defer upLn.Close()
	s := newTestServer(t, "upstreams:\n  - name: tcp\n    base_url: http://"+upLn.Addr().String()+"/v1\n    api_key: sk-up\n", Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	defer ln.Close()
	c := &fasthttp.HostClient{Addr: ln.Addr().String()}
	req := chatRequest(chatBody1K)
	req.SetHost(ln.Addr().String())
	resp := fasthttp.AcquireResponse()
	do := func() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("status %d, error %v", resp.StatusCode(), err)
		}
	}
	for range 200 {
		do() // pools and the model name warm up
	}
	if n := testing.AllocsPerRun(1000, do); n > 4 {
		t.Fatalf("a chat request over TCP allocates %v times in the process; want at most 4", n)
	}
}
