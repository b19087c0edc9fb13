package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"sluice/fakeai"
)

// TestCompressionToClients: through the official Go SDK (whose transport
// asks for gzip and decodes transparently), non-stream and stream answers
// arrive gzip-compressed and decode to exactly the bytes the upstream sent;
// a client that does not ask gets identity. It logs the bytes on the wire.
func TestCompressionToClients(t *testing.T) {
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL})
	c := s.client(demoKey)
	ctx := context.Background()

	// Non-stream: a long chat answer and a 1,536-dimension embedding.
	var resp *http.Response
	var raw []byte
	_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: userMessages("tell me a long story " + nonce()), MaxTokens: openai.Int(400),
	}, option.WithResponseInto(&resp), option.WithResponseBodyInto(&raw),
		option.WithHeader("X-Fake-Chunks", "10"), option.WithHeader("X-Fake-Chunk-Size", "200"))
	if err != nil {
		t.Fatal(err)
	}
	_, _, upstream := fake.LastResponse()
	if !resp.Uncompressed || !bytes.Equal(raw, upstream) {
		t.Fatalf("chat: transparently decompressed %v; decoded body equals the upstream's: %v (%d vs %d bytes)",
			resp.Uncompressed, bytes.Equal(raw, upstream), len(raw), len(upstream))
	}
	_, err = c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "text-embedding-3-small", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("embed " + nonce())},
		Dimensions: openai.Int(1536), EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat,
	}, option.WithResponseInto(&resp), option.WithResponseBodyInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	_, _, upstream = fake.LastResponse()
	if !resp.Uncompressed || !bytes.Equal(raw, upstream) {
		t.Fatalf("embedding: transparently decompressed %v; decoded body equals the upstream's: %v", resp.Uncompressed, bytes.Equal(raw, upstream))
	}

	// Stream: 200 events, compressed event by event.
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", Messages: userMessages("stream " + nonce()), MaxTokens: openai.Int(400),
	}, option.WithHeader("X-Fake-Chunks", "200"), option.WithResponseInto(&resp))
	var text strings.Builder
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			text.WriteString(ch.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || text.Len() == 0 || !resp.Uncompressed {
		t.Fatalf("stream: err %v, %d bytes of text, transparently decompressed %v", err, text.Len(), resp.Uncompressed)
	}

	// Raw clients: the exact bytes on the wire, with and without gzip.
	wire := func(path, body, accept string, hdr ...string) (int, []byte, string) {
		req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		req.Header.Set("Content-Type", "application/json")
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		tr := &http.Transport{DisableCompression: true}
		defer tr.CloseIdleConnections()
		r, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return len(b), b, r.Header.Get("Content-Encoding")
	}
	chatBody := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a typical answer please"}],"max_tokens":300,"seed":` + strconv.Itoa(int(time.Now().UnixNano()%100000)) + `}`
	embBody := `{"model":"text-embedding-3-small","input":"x` + nonce() + `","dimensions":1536}`
	streamBody := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"stream please"}],"max_tokens":300}`
	type row struct {
		name             string
		plain, gz, zs    int
		plainEnc, gzEnc  string
		decodedMatchesGz bool
	}
	var rows []row
	for _, x := range []struct{ name, path, body string }{
		{"chat answer (non-stream)", "/v1/chat/completions", chatBody},
		{"embedding, 1,536 floats", "/v1/embeddings", embBody},
		{"stream, 200 events", "/v1/chat/completions", streamBody},
	} {
		n0, plain, enc0 := wire(x.path, x.body, "", "X-Fake-Chunks", "200", "X-Fake-Chunk-Size", "10", "Cache-Control", "no-store")
		n1, gz, enc1 := wire(x.path, x.body, "gzip", "X-Fake-Chunks", "200", "X-Fake-Chunk-Size", "10", "Cache-Control", "no-store")
		_, _, upstreamSent := fake.LastResponse()
		n2, _, enc2 := wire(x.path, x.body, "zstd", "X-Fake-Chunks", "200", "X-Fake-Chunk-Size", "10", "Cache-Control", "no-store")
		if enc0 != "" || enc1 != "gzip" || enc2 != "zstd" {
			t.Fatalf("%s: encodings %q / %q / %q, want identity, gzip, zstd", x.name, enc0, enc1, enc2)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("%s: gzip answer does not decode: %v", x.name, err)
		}
		dec, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: gzip answer does not decode: %v", x.name, err)
		}
		// The gzip answer decodes to exactly what the upstream sent for it.
		ok := bytes.Equal(dec, upstreamSent) && len(plain) > 0
		rows = append(rows, row{x.name, n0, n1, n2, enc0, enc1, ok})
		if enc0 != "" || enc1 != "gzip" || enc2 != "zstd" || !ok {
			t.Fatalf("%s: encodings %q / %q / %q (want identity, gzip, zstd); decoded ok %v", x.name, enc0, enc1, enc2, ok)
		}
	}
	for _, r := range rows {
		t.Logf("%-26s identity %7d B   gzip %6d B (%.1f×)   zstd %6d B (%.1f×)", r.name, r.plain, r.gz,
			float64(r.plain)/float64(r.gz), r.zs, float64(r.plain)/float64(r.zs))
	}
	if v, _ := s.metric(t, "sluice_answer_wire_bytes_total", `encoding="gzip"`); v == 0 {
		t.Fatal("sluice_answer_wire_bytes_total{encoding=gzip} is 0")
	}
}

// TestCompressedRequestBodies: gzip and zstd request bodies are accepted;
// a gzip bomb (10 MB on the wire, 10 GiB inflated) is a 413 with memory
// bounded by the body limit; an unknown coding is a 415.
func TestCompressedRequestBodies(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10 MB gzip bomb; skipped with -short")
	}
	fake := startFake(t, fakeai.Config{APIKey: upstreamKey})
	s := startSluice(t, sluiceOptions{BaseURL: fake.URL})
	base := s.resources(t)
	post := func(body []byte, enc string) (int, string) {
		req, _ := http.NewRequest("POST", s.URL+"/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+demoKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", enc)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	chat := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"compressed hello"}],"max_tokens":5}`)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(chat)
	zw.Close()
	if st, body := post(gz.Bytes(), "gzip"); st != 200 {
		t.Fatalf("gzip body: %d %s", st, body)
	}
	if rec := fake.LastRequest(); !strings.Contains(string(rec.Body), "compressed hello") {
		t.Fatalf("the upstream got %q, want the decompressed body", rec.Body)
	}
	if st, body := post(chat, "br"); st != 415 || !strings.Contains(body, "unsupported_content_encoding") {
		t.Fatalf("br body: %d %s, want 415", st, body)
	}
	// The bomb: one member of 1 GiB of zeros (about 1 MB), ten times
	// (concatenated gzip members are one stream).
	var member bytes.Buffer
	zw, _ = gzip.NewWriterLevel(&member, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 1024 {
		zw.Write(zeros)
	}
	zw.Close()
	bomb := bytes.Repeat(member.Bytes(), 10)
	rss0 := rssOf(t, s)
	start := time.Now()
	st, body := post(bomb, "gzip")
	rss1 := rssOf(t, s)
	t.Logf("bomb: %d bytes on the wire (10 GiB inflated): %d after %v; sluice RSS %d → %d MiB", len(bomb), st, time.Since(start), rss0>>20, rss1>>20)
	if st != 413 || !strings.Contains(body, "request_too_large") {
		t.Fatalf("bomb: %d %s, want 413", st, body)
	}
	if rss1-rss0 > 200<<20 {
		t.Fatalf("RSS grew by %d MiB for one bomb; want it bounded by the 32 MiB body limit", (rss1-rss0)>>20)
	}
	http.DefaultClient.CloseIdleConnections()
	s.checkSettled(t, base)
}

// rssOf reads the sluice process's resident memory, bytes.
func rssOf(t *testing.T, s *sluiceProc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
