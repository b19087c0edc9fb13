package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
)

// startStreamEchoUpstream serves streamed answers that quote the key they
// were sent: an SSE chat stream (plain, or gzip-coded with "gzip" in
// X-Test-Echo), and a 40 KiB speech body with the key across the relay's
// 16 KiB read boundary, with a Content-Length or chunked ("chunked").
func startStreamEchoUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mode := r.Header.Get("X-Test-Echo")
		fl, _ := w.(http.Flusher)
		if r.URL.Path == "/v1/audio/speech" {
			body := bytes.Repeat([]byte{0xff, 0xf3, 0x44, 0xc4}, 10<<10)
			copy(body[16<<10-7:], key)
			w.Header().Set("Content-Type", "audio/mpeg")
			if mode != "chunked" {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			}
			for len(body) > 0 { // in pieces, as a slow upstream sends them
				n := min(len(body), 5000)
				_, _ = w.Write(body[:n])
				fl.Flush()
				body = body[n:]
			}
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		var out io.Writer = w
		var zw *gzip.Writer
		if mode == "gzip" {
			w.Header().Set("Content-Encoding", "gzip")
			zw = gzip.NewWriter(w)
			out = zw
		}
		for _, text := range []string{"you sent ", key, ", ok"} {
			fmt.Fprintf(out, `data: {"id":"chatcmpl-echo","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`+"\n\n", text)
			if zw != nil {
				_ = zw.Flush()
			}
			fl.Flush()
		}
		fmt.Fprint(out, `data: {"id":"chatcmpl-echo","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}`+"\n\ndata: [DONE]\n\n")
		if zw != nil {
			_ = zw.Close()
		}
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return "http://" + ln.Addr().String() + "/v1"
}

// TestSecurityScrubStreams: streamed answers that quote the provider key
// (an SSE chat stream, plain and gzip-coded by the upstream; a streamed
// passthrough speech body with and without Content-Length) reach the client
// without it. The SSE event carries [REDACTED:upstream_key]; the speech body
// has the key masked with '*' and keeps its declared length.
func TestSecurityScrubStreams(t *testing.T) {
	s := startSluice(t, sluiceOptions{Config: makeConfig(configOptions{}), Policies: trustedPolicies(), BaseURL: startStreamEchoUpstream(t)})
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	do := func(path, mode, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "identity")
		req.Header.Set("X-Test-Echo", mode)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", path, mode, err)
		}
		raw, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s %s: status %d, error %v: %s", path, mode, resp.StatusCode, err, raw)
		}
		var all bytes.Buffer
		_ = resp.Header.Write(&all)
		all.Write(raw)
		if strings.Contains(all.String(), upstreamKey) {
			t.Errorf("%s %s: the client got the provider key:\n%s", path, mode, all.String())
		}
		return resp, raw
	}
	for _, mode := range []string{"plain", "gzip"} {
		_, raw := do("/v1/chat/completions", mode, `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"echo"}]}`)
		if !bytes.Contains(raw, []byte(`"content":"[REDACTED:upstream_key]"`)) || !bytes.Contains(raw, []byte("data: [DONE]")) {
			t.Errorf("SSE %s: the echo did not come through redacted:\n%s", mode, raw)
		}
	}
	for _, mode := range []string{"length", "chunked"} {
		resp, raw := do("/v1/audio/speech", mode, `{"model":"tts-1","input":"hi","voice":"alloy"}`)
		if len(raw) != 40<<10 || !bytes.Contains(raw, bytes.Repeat([]byte("*"), len(upstreamKey))) {
			t.Errorf("speech %s: %d bytes, masked key present %v", mode, len(raw), bytes.Contains(raw, bytes.Repeat([]byte("*"), len(upstreamKey))))
		}
		if mode == "length" && resp.ContentLength != 40<<10 {
			t.Errorf("speech: Content-Length %d, want %d", resp.ContentLength, 40<<10)
		}
	}
}
