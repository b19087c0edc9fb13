package fakeai

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"mime/multipart"
	"net/http"
	"testing"
)

func TestFilesMultipart(t *testing.T) {
	s, base := startServer(t, Config{})
	// Binary content with NULs, CR LF and a fake boundary-looking line.
	content := append(SpeechBytes(), []byte("\r\n--not-the-boundary\r\n\x00end")...)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("purpose", "fine-tune"); err != nil {
		t.Fatal(err)
	}
	fw, err := mw.CreateFormFile("file", "train.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(content)
	mw.Close()

	req, _ := http.NewRequest(http.MethodPost, base+"/files", bytes.NewReader(buf.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, out.Bytes())
	}
	m := decodeJSON(t, out.Bytes())
	sum := sha256.Sum256(content)
	if m["object"] != "file" || m["purpose"] != "fine-tune" || m["filename"] != "train.jsonl" {
		t.Fatalf("shape: %s", out.Bytes())
	}
	if m["bytes"] != float64(len(content)) {
		t.Fatalf("bytes = %v, want %d", m["bytes"], len(content))
	}
	if m["sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("sha256 = %v", m["sha256"])
	}
	if id, _ := m["id"].(string); len(id) < 6 || id[:5] != "file-" {
		t.Fatalf("id %q", id)
	}
	if !bytes.Equal(s.LastRequest().Body, buf.Bytes()) {
		t.Fatal("recorded body differs from the upload")
	}
}

func TestFilesErrors(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := post(t, base+"/files", `{"purpose":"x"}`)
	wantError(t, resp, body, 400, "invalid_request_error", "")

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "batch")
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(r.Body)
	e := wantError(t, r, b.Bytes(), 400, "invalid_request_error", "missing_required_parameter")
	if e["param"] != "file" {
		t.Fatalf("param %v", e["param"])
	}
}
