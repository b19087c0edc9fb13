package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"sluice/internal/testkit"
	"sluice/sink"
)

// memWriter keeps the records a sink writes.
type memWriter struct {
	mu   sync.Mutex
	recs []*sink.Record
}

func (w *memWriter) Write(_ context.Context, recs []*sink.Record) error {
	w.mu.Lock()
	w.recs = append(w.recs, recs...)
	w.mu.Unlock()
	return nil
}

func (w *memWriter) Close() error { return nil }

// wait returns the records once there are n (or what there is after 3 s).
func (w *memWriter) wait(n int) []*sink.Record {
	var recs []*sink.Record
	testkit.Poll(3*time.Second, func() bool {
		w.mu.Lock()
		recs = append(recs[:0], w.recs...)
		w.mu.Unlock()
		return len(recs) >= n
	})
	return recs
}

// transcriptServer runs a Server in memory in front of an in-memory
// upstream served by up, writing transcripts to the returned memWriter,
// and returns a client of the Server. o configures the Server (Policy,
// Registry, Cache, …).
func transcriptServer(t *testing.T, up fasthttp.RequestHandler, o Options) (*memWriter, *fasthttp.Client) {
	t.Helper()
	upLn := fasthttputil.NewInmemoryListener()
	go (&fasthttp.Server{Handler: up}).Serve(upLn) //nolint:errcheck // ends when the listener closes
	t.Cleanup(func() { _ = upLn.Close() })
	w := &memWriter{}
	sk, err := sink.New(sink.Options{Writer: w, FlushInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sk.Stop(context.Background()) })
	s := newTestServer(t, "upstreams:\n  - name: mem\n    base_url: http://upstream/v1\n    api_key: sk-up\n    max_attempts: 1\n", o)
	s.SetTranscripts(TranscriptOptions{Sink: sk})
	s.upstreams[0].conns.dial = func(string) (net.Conn, error) { return upLn.Dial() }
	ln := fasthttputil.NewInmemoryListener()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	t.Cleanup(func() { _ = ln.Close() })
	return w, &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
}

// TestRelayedErrorsReachTheTranscript: a stream request the upstream
// refuses (its error relayed as bytes) records the error's type, and a
// stream the upstream cuts after its 200 records server_error, not a clean
// answer.
func TestRelayedErrorsReachTheTranscript(t *testing.T) {
	w, client := transcriptServer(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Request.Header.Peek("X-Test")) == "refuse" {
			ctx.SetStatusCode(500)
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"error":{"message":"boom","type":"server_error","param":null,"code":null}}`)
			return
		}
		// A stream that ends before its end: the body is cut by closing
		// the connection mid-chunk.
		ctx.SetContentType("text/event-stream")
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" +
				fmt.Sprintf("%x\r\n", len(cutEvent)) + cutEvent + "\r\n"))
			_ = c.Close()
		})
	}, Options{})

	for _, mode := range []string{"refuse", "cut"} {
		req := chatRequest([]byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"` + mode + `"}]}`))
		req.Header.Set("X-Test", mode)
		resp := fasthttp.AcquireResponse()
		err := client.DoTimeout(req, resp, 5*time.Second)
		t.Logf("%s: status %d, err %v", mode, resp.StatusCode(), err)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	recs := w.wait(2)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	for _, r := range recs {
		switch r.Request {
		case `[{"role":"user","content":"refuse"}]`:
			if r.Status != 500 || r.ErrorType != "server_error" {
				t.Fatalf("refused stream: status %d error_type %q", r.Status, r.ErrorType)
			}
		case `[{"role":"user","content":"cut"}]`:
			if r.Status != 200 || r.ErrorType != "server_error" || r.Response != "par" {
				t.Fatalf("cut stream: status %d error_type %q response %q", r.Status, r.ErrorType, r.Response)
			}
		default:
			t.Fatalf("record for %q", r.Request)
		}
	}
}

const cutEvent = `data: {"choices":[{"index":0,"delta":{"content":"par"},"finish_reason":null}]}` + "\n\n"
