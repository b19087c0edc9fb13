package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// relayAll reads r to its end, as the client would get it.
func relayAll(t *testing.T, r *relay) []byte {
	t.Helper()
	var out []byte
	for {
		chunk, err := r.next()
		out = append(out, chunk...)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestRelayScrubSSE: an SSE event that echoes the upstream's key reaches
// the client with the key replaced; the other events stay byte for byte.
func TestRelayScrubSSE(t *testing.T) {
	ev1 := `data: {"choices":[{"delta":{"content":"hi"}}]}` + "\n\n"
	echo := `data: {"choices":[{"delta":{"content":"your key is ` + scrubKey + `!"}}]}` + "\n\n"
	done := "data: [DONE]\n\n"
	r := &relay{sse: true, br: bufio.NewReaderSize(strings.NewReader(ev1+echo+done+"data: tail "+scrubKey), lineBufSize)}
	r.setSecrets(secretsOf([]byte("Bearer " + scrubKey)))
	got := string(relayAll(t, r))
	want := ev1 + strings.ReplaceAll(echo, scrubKey, "[REDACTED:upstream_key]") + done + "data: tail [REDACTED:upstream_key]"
	if got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// TestRelayScrubRawBoundary: in a raw body of more than 16 KiB, a key that
// straddles a read boundary (16 KiB, one byte at a time, the end) is masked
// with as many '*': the body keeps its length.
func TestRelayScrubRawBoundary(t *testing.T) {
	body := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz012345"), 3*relayBufSize/32)
	copy(body[relayBufSize-10:], scrubKey)         // across the first 16 KiB read
	copy(body[2*relayBufSize-1:], scrubKey)        // one byte in the first read
	copy(body[len(body)-len(scrubKey):], scrubKey) // at EOF
	copy(body[100:], "sk-ups")                     // a prefix only: kept
	want := bytes.ReplaceAll(body, []byte(scrubKey), bytes.Repeat([]byte("*"), len(scrubKey)))
	for name, src := range map[string]func() io.Reader{
		"16KiB reads": func() io.Reader { return bytes.NewReader(body) },
		"odd reads":   func() io.Reader { return &shortReader{r: bytes.NewReader(body), n: 7} },
	} {
		r := &relay{br: bufio.NewReaderSize(src(), lineBufSize)}
		r.setSecrets(secretsOf([]byte(scrubKey)))
		got := relayAll(t, r)
		if len(got) != len(body) || !bytes.Equal(got, want) || bytes.Contains(got, []byte(scrubKey)) {
			t.Fatalf("%s: %d bytes of %d, key left %v, equal to the masked body %v", name, len(got), len(body),
				bytes.Contains(got, []byte(scrubKey)), bytes.Equal(got, want))
		}
	}
	// Without secrets the bytes pass as they are.
	r := &relay{br: bufio.NewReaderSize(bytes.NewReader(body), lineBufSize)}
	if got := relayAll(t, r); !bytes.Equal(got, body) {
		t.Fatal("a relay without secrets changed the body")
	}
}

// shortReader returns at most n bytes a read.
type shortReader struct {
	r io.Reader
	n int
}

func (s *shortReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), s.n)]) }

func TestKeyPrefixTail(t *testing.T) {
	secrets := [][]byte{[]byte("sk-abcdef12"), []byte("xyz-0123456789")}
	for _, c := range []struct {
		b    string
		want int
	}{
		{"hello", 0}, {"hello s", 1}, {"hello sk-abc", 6}, {"sk-abcdef1", 10}, {"ssk-a", 4},
		{"hello xyz-01234", 9}, {"sk-abcdef12", 0}, {"", 0}, {"sk-abq", 0}, {"sk-abx", 1},
	} {
		if got := keyPrefixTail([]byte(c.b), secrets); got != c.want {
			t.Errorf("keyPrefixTail(%q) = %d, want %d", c.b, got, c.want)
		}
	}
}

// TestRelayScrubAllocs: with secrets to scrub, an event or a raw read that
// holds none costs no allocation.
func TestRelayScrubAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	ev := `data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello sk"}}]}` + "\n\n"
	secrets := secretsOf([]byte(scrubKey), []byte("sk-pool-second-key-xyz"))
	r := &relay{sse: true, br: bufio.NewReaderSize(strings.NewReader(strings.Repeat(ev, 1000)), lineBufSize)}
	r.setSecrets(secrets)
	r.next() // the event buffer grows once
	if n := testing.AllocsPerRun(200, func() {
		if chunk, err := r.next(); err != nil || len(chunk) != len(ev) {
			t.Fatalf("event %q, error %v", chunk, err)
		}
	}); n != 0 {
		t.Fatalf("an SSE event allocates %v times with secrets; want 0", n)
	}
	raw := &relay{br: bufio.NewReaderSize(bytes.NewReader(bytes.Repeat([]byte(ev), 3000)), lineBufSize)}
	raw.setSecrets(secrets)
	raw.next() // the read buffer is made once
	if n := testing.AllocsPerRun(10, func() {
		if _, err := raw.next(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("a raw read allocates %v times with secrets; want 0", n)
	}
}

// TestRelayScrubThroughServer: over loopback, an SSE chat stream, a
// streamed passthrough answer (a 40 KiB speech body with Content-Length,
// the key across the 16 KiB read boundary) and a gzip-encoded passthrough
// answer all reach the client without the upstream's key; the speech keeps
// its declared length, the gzip answer arrives decoded.
func TestRelayScrubThroughServer(t *testing.T) {
	speech := bytes.Repeat([]byte{0xff, 0xf3, 'a', 'u'}, 10<<10)
	copy(speech[relayBufSize-5:], scrubKey)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upLn.Close()
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/v1/audio/translations":
			// A passthrough answer compressed because the client accepts
			// gzip, echoing the key.
			ctx.SetContentType("application/json")
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			text := strings.Repeat(string(ctx.Request.Header.Peek("Authorization"))+" ", 20)
			ctx.SetBody(fasthttp.AppendGzipBytesLevel(nil, []byte(`{"text":"`+text+`"}`), fasthttp.CompressBestCompression))
		case "/v1/audio/speech":
			ctx.SetContentType("audio/mpeg")
			ctx.SetBody(speech)
		default:
			ctx.SetContentType("text/event-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}\n\n", ctx.Request.Header.Peek("Authorization"))
				w.Flush()
				fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\ndata: [DONE]\n\n")
			})
		}
	}}
	go upSrv.Serve(upLn) //nolint:errcheck // ends when the listener closes
	s := newTestServer(t, "upstreams:\n  - name: tcp\n    base_url: http://"+upLn.Addr().String()+"/v1\n    api_key: "+scrubKey+"\n", Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go s.Serve(ln) //nolint:errcheck // ends when the listener closes
	c := &fasthttp.HostClient{Addr: ln.Addr().String(), ReadTimeout: 5 * time.Second}
	do := func(path, body string) *fasthttp.Response {
		req := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(req)
		req.SetRequestURI("http://" + ln.Addr().String() + path)
		req.Header.SetMethod("POST")
		req.Header.Set("Authorization", "Bearer sk-client")
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
		resp := fasthttp.AcquireResponse()
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
			t.Fatalf("%s: status %d, error %v: %s", path, resp.StatusCode(), err, resp.Body())
		}
		return resp
	}
	sse := do("/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if b := sse.Body(); bytes.Contains(b, []byte(scrubKey)) || !bytes.Contains(b, []byte("Bearer [REDACTED:upstream_key]")) {
		t.Fatalf("SSE stream: %s", b)
	}
	fasthttp.ReleaseResponse(sse)
	tr := do("/v1/audio/translations", `{"model":"whisper-1"}`)
	if b := tr.Body(); len(tr.Header.ContentEncoding()) > 0 || bytes.Contains(b, []byte(scrubKey)) ||
		!bytes.Contains(b, []byte(`"text":"Bearer `)) {
		t.Fatalf("gzip passthrough: Content-Encoding %q, body %q", tr.Header.ContentEncoding(), b)
	}
	fasthttp.ReleaseResponse(tr)
	sp := do("/v1/audio/speech", `{"model":"tts-1","input":"hi","voice":"alloy"}`)
	defer fasthttp.ReleaseResponse(sp)
	want := bytes.ReplaceAll(speech, []byte(scrubKey), bytes.Repeat([]byte("*"), len(scrubKey)))
	if cl := sp.Header.ContentLength(); cl != len(speech) {
		t.Fatalf("speech: Content-Length %d, want %d", cl, len(speech))
	}
	if b := sp.Body(); !bytes.Equal(b, want) {
		t.Fatalf("speech: %d bytes, key left %v", len(b), bytes.Contains(b, []byte(scrubKey)))
	}
}

// BenchmarkRelayScrub: the relay's cost per SSE event (and per 16 KiB raw
// read) with and without upstream keys to scrub, none found.
func BenchmarkRelayScrub(b *testing.B) {
	ev := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]}` + "\n\n"
	sseBody := []byte(strings.Repeat(ev, 1000))
	rawBody := bytes.Repeat([]byte(ev), 4000)
	for _, c := range []struct {
		name    string
		sse     bool
		body    []byte
		secrets [][]byte
	}{
		{"sse/no-secrets", true, sseBody, nil},
		{"sse/secrets", true, sseBody, secretsOf([]byte(scrubKey))},
		{"raw/no-secrets", false, rawBody, nil},
		{"raw/secrets", false, rawBody, secretsOf([]byte(scrubKey))},
	} {
		b.Run(c.name, func(b *testing.B) {
			src := bytes.NewReader(c.body)
			br := bufio.NewReaderSize(src, lineBufSize)
			r := &relay{sse: c.sse, br: br}
			r.setSecrets(c.secrets)
			b.ReportAllocs()
			b.SetBytes(int64(len(ev)))
			if !c.sse {
				b.SetBytes(relayBufSize)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := r.next(); err != nil {
					src.Reset(c.body)
					br.Reset(src)
				}
			}
		})
	}
}
