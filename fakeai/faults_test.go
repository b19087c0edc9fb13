package fakeai

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"sluice/internal/testkit"
)

const chatBody = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"one two three four"}]}`
const chatStreamBody = `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"one two three four"}]}`

func TestFaultStatus429(t *testing.T) {
	s, base := startServer(t, Config{})
	resp, body := post(t, base+"/chat/completions", chatBody, HeaderStatus, "429")
	e := wantError(t, resp, body, 429, "requests", "rate_limit_exceeded")
	if !strings.HasPrefix(e["message"].(string), "Rate limit reached") || e["param"] != nil {
		t.Fatalf("error %v", e)
	}
	h := resp.Header
	if h.Get("Retry-After") != "2" || h.Get("Retry-After-Ms") != "1500" {
		t.Fatalf("retry headers %q %q", h.Get("Retry-After"), h.Get("Retry-After-Ms"))
	}
	if h.Get("X-Ratelimit-Limit-Requests") == "" || h.Get("X-Ratelimit-Remaining-Requests") != "0" ||
		h.Get("X-Ratelimit-Reset-Requests") != "1.5s" {
		t.Fatalf("ratelimit headers %v", h)
	}
	if h.Get("X-Request-Id") == "" {
		t.Fatal("no request id on an error")
	}
	resp, _ = post(t, base+"/chat/completions", chatBody, HeaderStatus, "429", HeaderRetryAfterMs, "250")
	if resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Retry-After-Ms") != "250" {
		t.Fatalf("override: %v", resp.Header)
	}
	if st := s.Stats(); st.Errors != 2 || st.RateLimited != 0 || st.CompletionTokens != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFaultStatus5xx(t *testing.T) {
	_, base := startServer(t, Config{})
	for _, status := range []int{500, 502, 503, 504} {
		// Faults apply to streams too, before any event.
		resp, body := post(t, base+"/chat/completions", chatStreamBody, HeaderStatus, strconv.Itoa(status))
		wantError(t, resp, body, status, "server_error", "")
		if got := resp.Header.Get("Retry-After"); (status == 503) != (got != "") {
			t.Fatalf("%d: retry-after %q", status, got)
		}
	}
	resp, body := post(t, base+"/embeddings", `{}`, HeaderStatus, "400")
	wantError(t, resp, body, 400, "invalid_request_error", "")
	resp, body = post(t, base+"/embeddings", `{}`, HeaderStatus, "nope")
	wantError(t, resp, body, 400, "invalid_request_error", "invalid_fake_header")
	resp, body = post(t, base+"/embeddings", `{}`, HeaderChunks, "0")
	wantError(t, resp, body, 400, "invalid_request_error", "invalid_fake_header")
}

func TestSetFault(t *testing.T) {
	s, base := startServer(t, Config{})
	s.SetFault(502)
	for i := 0; i < 3; i++ {
		if resp, _ := post(t, base+"/chat/completions", chatBody); resp.StatusCode != 502 {
			t.Fatalf("status %d, want 502", resp.StatusCode)
		}
	}
	// A request's own header wins.
	if resp, _ := post(t, base+"/chat/completions", chatBody, HeaderStatus, "500"); resp.StatusCode != 500 {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	s.SetFault(0)
	if resp, _ := post(t, base+"/chat/completions", chatBody); resp.StatusCode != 200 {
		t.Fatalf("status %d after clearing", resp.StatusCode)
	}
	s.SetFaultCount(503, 2)
	var got []int
	for i := 0; i < 4; i++ {
		resp, _ := post(t, base+"/chat/completions", chatBody)
		got = append(got, resp.StatusCode)
	}
	if got[0] != 503 || got[1] != 503 || got[2] != 200 || got[3] != 200 {
		t.Fatalf("statuses %v, want 503 503 200 200", got)
	}
}

func TestFaultHang(t *testing.T) {
	s, base := startServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/chat/completions", strings.NewReader(chatBody))
	req.Header.Set(HeaderHang, "1")
	start := time.Now()
	_, err := http.DefaultClient.Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("answered after %v", d)
	}
	testkit.Eventually(t, 2*time.Second, "1 aborted", func() bool { return s.Stats().Aborted == 1 })
}

func TestFaultCutStream(t *testing.T) {
	s, base := startServer(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(chatStreamBody))
	req.Header.Set(HeaderCutAfter, "3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read err = %v, want unexpected EOF", err)
	}
	events := parseSSE(t, body)
	if len(events) != 3 {
		t.Fatalf("%d events before the cut, want 3:\n%s", len(events), body)
	}
	if strings.Contains(string(body), "[DONE]") {
		t.Fatal("[DONE] sent on a cut stream")
	}
	// Cut-after beyond the stream's length still drops the connection before [DONE].
	req, _ = http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(chatStreamBody))
	req.Header.Set(HeaderCutAfter, "100")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	body, err = io.ReadAll(resp2.Body)
	if err == nil || strings.Contains(string(body), "[DONE]") {
		t.Fatalf("err %v, body:\n%s", err, body)
	}
	if n := len(parseSSE(t, body)); n != 7 { // role + 5 content + finish
		t.Fatalf("%d events, want 7", n)
	}
	testkit.Eventually(t, 2*time.Second, "2 aborted", func() bool { return s.Stats().Aborted == 2 })
}

func TestFaultCutBody(t *testing.T) {
	_, base := startServer(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, base+"/audio/speech", strings.NewReader(`{"model":"tts-1","input":"x"}`))
	req.Header.Set(HeaderCutAfter, "100")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != SpeechLength {
		t.Fatalf("Content-Length %d", resp.ContentLength)
	}
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 100 {
		t.Fatalf("read %d bytes, err %v", len(body), err)
	}
}

func TestFaultHangAfter(t *testing.T) {
	s, base := startServer(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/chat/completions", strings.NewReader(chatStreamBody))
	req.Header.Set(HeaderHangAfter, "2")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := 0; i < 4; i++ { // two events: data line + blank line each
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan error, 1)
	go func() { _, err := br.ReadString('\n'); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("third event arrived (err %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	<-got
	testkit.Eventually(t, 2*time.Second, "1 aborted", func() bool { return s.Stats().Aborted == 1 })
}

func TestLatency(t *testing.T) {
	_, base := startServer(t, Config{Latency: 80 * time.Millisecond})
	start := time.Now()
	resp, _ := post(t, base+"/chat/completions", chatBody)
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Fatalf("answered in %v", d)
	}
	if ms, _ := strconv.Atoi(resp.Header.Get("Openai-Processing-Ms")); ms < 80 {
		t.Fatalf("openai-processing-ms %q", resp.Header.Get("Openai-Processing-Ms"))
	}
	// The header overrides Config.
	start = time.Now()
	post(t, base+"/chat/completions", chatBody, HeaderLatency, "0s")
	if d := time.Since(start); d > 60*time.Millisecond {
		t.Fatalf("override ignored: %v", d)
	}
}

func TestStreamPacing(t *testing.T) {
	_, base := startServer(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(chatStreamBody))
	req.Header.Set(HeaderLatency, "150ms")
	req.Header.Set(HeaderChunkInterval, "20ms")
	req.Header.Set(HeaderChunks, "2")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if d := time.Since(start); d > 120*time.Millisecond {
		t.Fatalf("stream headers took %v; they go out before the latency", d)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("first event after %v, want >= 150ms", d)
	}
	first := time.Now()
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	// 4 more events (2 content, finish, [DONE]) 20ms apart.
	if d := time.Since(first); d < 4*20*time.Millisecond {
		t.Fatalf("remaining events took %v", d)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
		t.Fatalf("tail %q", rest)
	}
}

func TestChunkSize(t *testing.T) {
	_, base := startServer(t, Config{})
	const size = 1 << 20
	_, body := post(t, base+"/chat/completions", chatStreamBody, HeaderChunkSize, strconv.Itoa(size), HeaderChunks, "2")
	events := parseSSE(t, body)
	if len(events) != 5 {
		t.Fatalf("%d events", len(events))
	}
	for _, ev := range events[1:3] {
		var ch chatChunkJSON
		if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
			t.Fatal(err)
		}
		if c := ch.Choices[0].Delta.Content; c == nil || len(*c) != size {
			t.Fatalf("delta length %d, want %d", len(*c), size)
		}
	}
	// Non-stream: the whole answer is chunks*size bytes.
	_, body = post(t, base+"/chat/completions", chatBody, HeaderChunkSize, "1000", HeaderChunks, "3")
	if got := jpath(t, decodeJSON(t, body), "choices", 0, "message", "content").(string); len(got) != 3000 {
		t.Fatalf("content length %d", len(got))
	}
}
