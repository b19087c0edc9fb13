package proxy

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"sluice/sink"
)

// discardWriter takes batches and drops them.
type discardWriter struct{}

func (discardWriter) Write(context.Context, []*sink.Record) error { return nil }
func (discardWriter) Close() error                                { return nil }

// BenchmarkProxyChatTranscripts is BenchmarkProxyChat with full-content
// transcripts on (default redaction, a sink whose writer drops batches): the
// request path's added cost is the copy of the messages and answer text,
// one record allocation and a non-blocking enqueue; the batcher runs on
// another goroutine.
func BenchmarkProxyChatTranscripts(b *testing.B) {
	red, _ := sink.NewRedactor(sink.DefaultRedactRules)
	sk, err := sink.New(sink.Options{Writer: discardWriter{}, Redactor: red, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer sk.Stop(context.Background()) //nolint:errcheck // a discard writer
	c, stop := benchProxy(b, func(s *Server) { s.SetTranscripts(TranscriptOptions{Sink: sk}) })
	defer stop()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.SetRequestURI("http://sluice/v1/chat/completions")
	req.Header.SetMethod("POST")
	req.Header.Set("Authorization", "Bearer sk-client")
	req.Header.SetContentType("application/json")
	req.SetBody(chatBody1K)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 {
			b.Fatalf("status %d: %s", resp.StatusCode(), resp.Body())
		}
	}
}
