package fakeai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// startServer serves cfg on a free port for the duration of the test.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	s, base, stop, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(stop)
	return s, base
}

// do sends a request and returns the response with its body read.
func do(t *testing.T, method, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// post sends a JSON POST and returns the response and body.
func post(t *testing.T, url, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return do(t, http.MethodPost, url, body, hdr...)
}

// decodeJSON unmarshals b into a generic map.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}

// jpath walks a decoded JSON value: keys for objects, ints for arrays.
func jpath(t *testing.T, v any, keys ...any) any {
	t.Helper()
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("path %v: %T is not an object", keys, v)
			}
			if v, ok = m[k]; !ok {
				t.Fatalf("path %v: no key %q in %v", keys, k, m)
			}
		case int:
			a, ok := v.([]any)
			if !ok || k >= len(a) {
				t.Fatalf("path %v: no index %d in %v", keys, k, v)
			}
			v = a[k]
		}
	}
	return v
}

// sseEvent is one server-sent event.
type sseEvent struct {
	Name string // "event:" line, "" if none
	Data string // "data:" line
}

// parseSSE splits an event-stream body into events.
func parseSSE(t *testing.T, b []byte) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur != (sseEvent{}) {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.Name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			if cur.Data != "" {
				t.Fatalf("event with two data lines: %q", line)
			}
			cur.Data = line[len("data: "):]
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scan SSE: %v", err)
	}
	if cur != (sseEvent{}) {
		t.Fatalf("unterminated event %+v", cur)
	}
	return out
}

// wantError checks an OpenAI error answer.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, typ, code string) map[string]any {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q", ct)
	}
	m := decodeJSON(t, body)
	e, ok := m["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %s", body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Fatalf("error has no %q: %s", k, body)
		}
	}
	if e["type"] != typ {
		t.Fatalf("error type = %v, want %q", e["type"], typ)
	}
	if code == "" {
		if e["code"] != nil {
			t.Fatalf("error code = %v, want null", e["code"])
		}
	} else if e["code"] != code {
		t.Fatalf("error code = %v, want %q", e["code"], code)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Fatalf("empty error message: %s", body)
	}
	return e
}
