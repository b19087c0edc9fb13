package fakeai

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

func TestSpeech(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := post(t, base+"/audio/speech", `{"model":"tts-1","input":"hello","voice":"alloy"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "audio/mpeg" {
		t.Fatalf("Content-Type %q", ct)
	}
	if len(body) != SpeechLength || !bytes.Equal(body, SpeechBytes()) {
		t.Fatalf("got %d bytes, not SpeechBytes()", len(body))
	}
	if bytes.IndexByte(body, 0) < 0 || utf8.Valid(body) {
		t.Fatal("speech must contain NUL bytes and invalid UTF-8")
	}
	// Deterministic across requests.
	_, again := post(t, base+"/audio/speech", `{"model":"tts-1","input":"other","voice":"alloy"}`)
	if !bytes.Equal(body, again) {
		t.Fatal("speech bytes differ between requests")
	}
	resp, body = post(t, base+"/audio/speech", `{"model":"tts-1","voice":"alloy"}`)
	wantError(t, resp, body, 400, "invalid_request_error", "missing_required_parameter")
}
