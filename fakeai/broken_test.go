package fakeai

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"sluice/internal/testkit"
)

func TestFaultTrickleBody(t *testing.T) {
	s, base := startServer(t, Config{})
	_, whole := post(t, base+"/chat/completions", chatBody)
	req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(chatBody))
	req.Header.Set(HeaderTrickle, "2ms")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("headers after %v; they go out before the first byte's pause", d)
	}
	// One byte per read: the body arrives in pieces, with pauses.
	var got []byte
	var reads int
	buf := make([]byte, 64)
	for {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if n > 0 {
			reads++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if len(got) != len(whole) || resp.ContentLength != int64(len(whole)) {
		t.Fatalf("trickled %d bytes (Content-Length %d), a plain answer has %d", len(got), resp.ContentLength, len(whole))
	}
	if minTook := time.Duration(len(got)-1) * 2 * time.Millisecond; took < minTook {
		t.Fatalf("%d bytes in %v, want at least %v", len(got), took, minTook)
	}
	if reads < len(got)/4 {
		t.Fatalf("%d bytes came in %d reads; they were not trickled", len(got), reads)
	}
	m := decodeJSON(t, got)
	if jpath(t, m, "choices", 0, "message", "content") != "echo: one two three four" {
		t.Fatalf("answer %s", got)
	}
	if st := s.Stats(); st.Aborted != 0 {
		t.Fatalf("stats %+v", st)
	}
	resp, _ = post(t, base+"/chat/completions", chatBody, HeaderTrickle, "0s")
	if resp.StatusCode != 400 {
		t.Fatalf("a zero trickle answered %d, want 400", resp.StatusCode)
	}
}

func TestFaultTrickleStream(t *testing.T) {
	s, base := startServer(t, Config{})
	start := time.Now()
	_, body := post(t, base+"/chat/completions", chatStreamBody, HeaderTrickle, "1ms", HeaderChunks, "2")
	events := parseSSE(t, body)
	if len(events) != 5 || events[4].Data != "[DONE]" { // role, 2 content, finish, [DONE]
		t.Fatalf("%d events:\n%s", len(events), body)
	}
	if d := time.Since(start); d < time.Duration(len(body)-5)*time.Millisecond {
		t.Fatalf("%d bytes in %v: not trickled", len(body), d)
	}
	// A client that leaves mid-trickle ends the handler.
	req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(chatStreamBody))
	req.Header.Set(HeaderTrickle, "50ms")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	testkit.Eventually(t, 2*time.Second, "1 aborted", func() bool { return s.Stats().Aborted == 1 })
}

func TestFaultMalformedSSE(t *testing.T) {
	_, base := startServer(t, Config{})
	for kind, want := range map[string]string{
		"json":    "data: {\"id\":\"chatcmpl-broken\"",
		"nodata":  "event: ping\nid: 7\n\n",
		"garbage": "this line is no SSE field\n: a comment\nretry: soon\n\n",
	} {
		resp, body := post(t, base+"/chat/completions", chatStreamBody, HeaderMalformedSSE, kind, HeaderChunks, "2")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
			t.Fatalf("%s: status %d, %s", kind, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		// The bad event comes right after the first one, then the stream
		// goes on to [DONE].
		blocks := strings.Split(strings.TrimSuffix(string(body), "\n\n"), "\n\n")
		if len(blocks) != 6 || !strings.HasPrefix(blocks[1]+"\n\n", want) || blocks[5] != "data: [DONE]" {
			t.Fatalf("%s: events %q", kind, blocks)
		}
		if !strings.Contains(blocks[0], `"role":"assistant"`) || !strings.Contains(blocks[2], `"content":"echo:`) {
			t.Fatalf("%s: the good events around the bad one changed: %q", kind, blocks)
		}
	}
	resp, body := post(t, base+"/chat/completions", chatStreamBody, HeaderMalformedSSE, "bogus")
	wantError(t, resp, body, 400, "invalid_request_error", "invalid_fake_header")
}

func TestFaultNonJSONBody(t *testing.T) {
	s, base := startServer(t, Config{})
	for _, tc := range []struct {
		kind, status string
		code         int
		ctype, text  string
	}{
		{"html", "", 200, "text/html; charset=utf-8", "<title>200 OK</title>"},
		{"html", "502", 502, "text/html; charset=utf-8", "<h1>502 Bad Gateway</h1>"},
		{"text", "503", 503, "text/plain; charset=utf-8", "upstream connect error"},
		{"text", "", 200, "text/plain; charset=utf-8", "(200 OK)"},
	} {
		hdr := []string{HeaderBody, tc.kind}
		if tc.status != "" {
			hdr = append(hdr, HeaderStatus, tc.status)
		}
		// Stream or not, the answer is the same page.
		for _, reqBody := range []string{chatBody, chatStreamBody} {
			resp, body := post(t, base+"/chat/completions", reqBody, hdr...)
			if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != tc.ctype ||
				!bytes.Contains(body, []byte(tc.text)) || bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
				t.Fatalf("%s %s: %d %q %q", tc.kind, tc.status, resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Fatalf("no request id")
			}
		}
	}
	if st := s.Stats(); st.Errors != 4 || st.Streams != 0 {
		t.Fatalf("stats %+v, want 4 errors (the 5xx pages) and no stream", st)
	}
	resp, body := post(t, base+"/chat/completions", chatBody, HeaderBody, "xml")
	wantError(t, resp, body, 400, "invalid_request_error", "invalid_fake_header")
}

// TestFaultTrickleCut: a cut after N bytes trickles those N first.
func TestFaultTrickleCut(t *testing.T) {
	_, base := startServer(t, Config{})
	req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(chatBody))
	req.Header.Set(HeaderTrickle, "1ms")
	req.Header.Set(HeaderCutAfter, "10")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(bufio.NewReader(resp.Body))
	if len(b) != 10 || err == nil {
		t.Fatalf("read %d bytes, err %v; want 10 and an error", len(b), err)
	}
}
