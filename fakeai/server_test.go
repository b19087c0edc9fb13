package fakeai

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestAuth(t *testing.T) {
	s, base := startServer(t, Config{APIKey: "sk-test-1234567890"})
	resp, body := post(t, base+"/chat/completions", chatBody)
	e := wantError(t, resp, body, 401, "invalid_request_error", "")
	if !strings.HasPrefix(e["message"].(string), "You didn't provide an API key") {
		t.Fatalf("message %q", e["message"])
	}
	resp, body = post(t, base+"/chat/completions", chatBody, "Authorization", "Bearer sk-wrong-0000000000")
	e = wantError(t, resp, body, 401, "invalid_request_error", "invalid_api_key")
	if strings.Contains(e["message"].(string), "sk-wrong-0000000000") {
		t.Fatal("the key is not masked")
	}
	resp, body = post(t, base+"/chat/completions", chatBody, "Authorization", "Bearer sk-test-1234567890")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	// Auth comes before fault injection.
	resp, _ = post(t, base+"/chat/completions", chatBody, HeaderStatus, "500")
	if resp.StatusCode != 401 {
		t.Fatalf("status %d, want 401", resp.StatusCode)
	}
	if st := s.Stats(); st.Errors != 3 || st.Requests != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnknownURL(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := post(t, base+"/x", `{}`)
	e := wantError(t, resp, body, 404, "invalid_request_error", "unknown_url")
	if !strings.HasPrefix(e["message"].(string), "Unknown request URL: POST /v1/x") {
		t.Fatalf("message %q", e["message"])
	}
	resp, body = do(t, http.MethodGet, base+"/chat/completions", "")
	wantError(t, resp, body, 404, "invalid_request_error", "unknown_url")
	resp, body = do(t, http.MethodGet, strings.TrimSuffix(base, "/v1")+"/", "")
	wantError(t, resp, body, 404, "invalid_request_error", "unknown_url")
}

func TestCommonHeaders(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, _ := post(t, base+"/chat/completions", chatBody)
	h := resp.Header
	if !regexp.MustCompile(`^req_[0-9a-f]{32}$`).MatchString(h.Get("X-Request-Id")) {
		t.Fatalf("x-request-id %q", h.Get("X-Request-Id"))
	}
	if h.Get("Openai-Version") != "2020-10-01" {
		t.Fatalf("openai-version %q", h.Get("Openai-Version"))
	}
	if _, err := strconv.Atoi(h.Get("Openai-Processing-Ms")); err != nil {
		t.Fatalf("openai-processing-ms %q", h.Get("Openai-Processing-Ms"))
	}
	if h.Get("X-Ratelimit-Limit-Requests") != "" {
		t.Fatal("rate-limit headers without RPM")
	}
	resp2, _ := post(t, base+"/chat/completions", chatBody)
	if resp2.Header.Get("X-Request-Id") == h.Get("X-Request-Id") {
		t.Fatal("request ids repeat")
	}
}

func TestLastRequest(t *testing.T) {
	s, base := startServer(t, Config{})
	if r := s.LastRequest(); r.Method != "" || r.Header != nil {
		t.Fatalf("before any request: %+v", r)
	}
	post(t, base+"/chat/completions?api-version=1", chatBody, "Authorization", "Bearer sk-upstream", "X-Custom", "v")
	r := s.LastRequest()
	if r.Method != "POST" || r.Path != "/v1/chat/completions" || r.RawQuery != "api-version=1" || r.Host == "" {
		t.Fatalf("recorded %+v", r)
	}
	if r.Header.Get("Authorization") != "Bearer sk-upstream" || r.Header.Get("X-Custom") != "v" {
		t.Fatalf("headers %v", r.Header)
	}
	if string(r.Body) != chatBody {
		t.Fatalf("body %q", r.Body)
	}
	// The copy is the caller's.
	r.Header.Set("X-Custom", "changed")
	r.Body[0] = 'X'
	if again := s.LastRequest(); again.Header.Get("X-Custom") != "v" || again.Body[0] != '{' {
		t.Fatal("LastRequest shares memory with the server")
	}
}

func TestConcurrent(t *testing.T) {
	s, base := startServer(t, Config{RPM: 1 << 20, TPM: 1 << 30})
	s.SetFaultCount(500, 10)
	var wg sync.WaitGroup
	const workers, each = 16, 25
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				body := chatBody
				if i%2 == 1 {
					body = chatStreamBody
				}
				req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", strings.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				_ = s.Stats()
				_ = s.LastRequest()
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	if st.Requests != workers*each || st.Errors != 10 || st.ByPath["/v1/chat/completions"] != workers*each {
		t.Fatalf("stats %+v", st)
	}
}

func TestLastRequestChunked(t *testing.T) {
	s, base := startServer(t, Config{})
	// An io.Reader of unknown length is sent chunked.
	req, _ := http.NewRequest(http.MethodPost, base+"/chat/completions", struct{ *strings.Reader }{strings.NewReader(chatBody)})
	req.Header.Set("Connection", "keep-alive")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := s.LastRequest()
	if r.ContentLength != -1 || len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
		t.Fatalf("ContentLength %d TransferEncoding %v", r.ContentLength, r.TransferEncoding)
	}
	if string(r.Body) != chatBody || resp.StatusCode != 200 {
		t.Fatalf("status %d body %q", resp.StatusCode, r.Body)
	}
}
