package proxy

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestNegotiate(t *testing.T) {
	for _, c := range []struct {
		accept string
		want   encoding
	}{
		{"", encIdentity},
		{"gzip", encGzip},
		{"gzip, deflate, br, zstd", encZstd},
		{"br", encIdentity},
		{"GZIP;q=0.5", encGzip},
		{"gzip;q=0", encIdentity},
		{"zstd;q=0, gzip", encGzip},
		{"*", encGzip},
		{"identity", encIdentity},
	} {
		if got := negotiate([]byte(c.accept)); got != c.want {
			t.Errorf("negotiate(%q) = %s, want %s", c.accept, encodingNames[got], encodingNames[c.want])
		}
	}
}

func TestCompressBodyRoundTrips(t *testing.T) {
	body := bytes.Repeat([]byte(`{"index":0,"embedding":[0.0123,-0.0456,0.0789]}`), 100)
	gz := compressBody(nil, encGzip, body)
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, body) {
		t.Fatal("gzip round trip changed the body")
	}
	zs := compressBody(nil, encZstd, body)
	d, _ := zstd.NewReader(nil)
	got, err := d.DecodeAll(zs, nil)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("zstd round trip: %v", err)
	}
	if len(gz) >= len(body)/4 || len(zs) >= len(body)/4 {
		t.Fatalf("sizes %d / %d of %d: repetitive JSON should shrink well", len(gz), len(zs), len(body))
	}
}

func TestReadLimited(t *testing.T) {
	out, err := readLimited(strings.NewReader(strings.Repeat("x", 1000)), 1000)
	if err != nil || len(out) != 1000 {
		t.Fatalf("at the limit: %d bytes, %v", len(out), err)
	}
	if _, err := readLimited(strings.NewReader(strings.Repeat("x", 1001)), 1000); !errors.Is(err, errDecodedTooLarge) {
		t.Fatalf("one byte over: %v, want errDecodedTooLarge", err)
	}
	out, err = readLimited(strings.NewReader(strings.Repeat("y", 200_000)), 1<<20)
	if err != nil || len(out) != 200_000 || cap(out) > 1<<20+1 {
		t.Fatalf("growth: %d bytes (cap %d), %v", len(out), cap(out), err)
	}
}

// sseEvent is a typical first chat chunk.
var sseEvent = []byte(`data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1795781002,"model":"gpt-4o-mini","system_fingerprint":"fp_abc","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":null}]}` + "\n\n")

// benchmarkFirstEvent measures what compression adds before a stream's
// first event reaches the socket: taking an encoder from the pool, the
// first event compressed and flushed.
func benchmarkFirstEvent(b *testing.B, enc encoding) {
	var sink countingWriter
	sink.w = io.Discard
	b.ReportAllocs()
	for b.Loop() {
		if enc == encIdentity {
			_, _ = sink.Write(sseEvent)
			continue
		}
		e := newStreamEncoder(enc, &sink)
		_, _ = e.Write(sseEvent)
		_ = e.Flush()
		putStreamEncoder(e)
	}
}

func BenchmarkFirstEventIdentity(b *testing.B) { benchmarkFirstEvent(b, encIdentity) }
func BenchmarkFirstEventGzip(b *testing.B)     { benchmarkFirstEvent(b, encGzip) }
func BenchmarkFirstEventZstd(b *testing.B)     { benchmarkFirstEvent(b, encZstd) }

// benchmarkCompressAnswer measures compressing a buffered answer of n
// bytes of JSON (a chat answer or an embedding's float list).
func benchmarkCompressAnswer(b *testing.B, enc encoding, body []byte) {
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	var dst []byte
	for b.Loop() {
		dst = compressBody(dst[:0], enc, body)
	}
}

var (
	benchChat      = []byte(`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("The committee reviewed revenue, costs and bookings for the winter. ", 30) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":400,"total_tokens":440}}`)
	benchEmbedding = func() []byte {
		var sb strings.Builder
		sb.WriteString(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[`)
		x := uint32(7)
		for i := range 1536 {
			if i > 0 {
				sb.WriteByte(',')
			}
			x = x*1664525 + 1013904223
			sb.WriteString("-0.0" + strconv.Itoa(int(x%100000000)))
		}
		sb.WriteString(`]}],"model":"text-embedding-3-small"}`)
		return []byte(sb.String())
	}()
)

func BenchmarkCompressChatGzip(b *testing.B) { benchmarkCompressAnswer(b, encGzip, benchChat) }
func BenchmarkCompressChatZstd(b *testing.B) { benchmarkCompressAnswer(b, encZstd, benchChat) }
func BenchmarkCompressEmbeddingGzip(b *testing.B) {
	benchmarkCompressAnswer(b, encGzip, benchEmbedding)
}
func BenchmarkCompressEmbeddingZstd(b *testing.B) {
	benchmarkCompressAnswer(b, encZstd, benchEmbedding)
}
