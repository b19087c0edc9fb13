package proxy

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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
	runChatBench(b, c)
}
