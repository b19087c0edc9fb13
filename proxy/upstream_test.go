package proxy

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"sluice/config"
)

func testUpstream(t *testing.T, c config.Upstream) *upstream {
	t.Helper()
	m := newMetrics(prometheus.NewRegistry(), "test")
	up, err := newUpstream(&c, m, new(watchSet))
	if err != nil {
		t.Fatalf("newUpstream: %v", err)
	}
	return up
}

func TestUpstreamURI(t *testing.T) {
	f := func(c config.Upstream, ep endpoint, path, query, deployment, wantURI, wantAuthKey, wantAuth string) {
		t.Helper()
		up := testUpstream(t, c)
		var req fasthttp.Request
		up.setURI(&req, ep, []byte(path), []byte(query), deployment)
		up.setCredentials(&req, 0)
		if got := req.URI().String(); got != wantURI {
			t.Errorf("%s %s: URI %q; want %q", c.Type, path, got, wantURI)
		}
		if got := string(req.Header.Peek(wantAuthKey)); got != wantAuth {
			t.Errorf("%s: %s = %q; want %q", c.Type, wantAuthKey, got, wantAuth)
		}
	}
	openai := config.Upstream{Name: "o", Type: "openai", BaseURL: "https://api.openai.com/v1", APIKey: "sk-up", AuthHeader: "authorization"}
	f(openai, epChat, "/v1/chat/completions", "", "", "https://api.openai.com/v1/chat/completions", "Authorization", "Bearer sk-up")
	f(openai, epPassthrough, "/v1/files/file-1/content", "a=1", "", "https://api.openai.com/v1/files/file-1/content?a=1", "Authorization", "Bearer sk-up")
	vllm := config.Upstream{Name: "v", Type: "openai", BaseURL: "http://127.0.0.1:8000/v1/", AuthHeader: "authorization"}
	f(vllm, epModels, "/v1/models", "", "", "http://127.0.0.1:8000/v1/models", "Authorization", "")
	ollama := config.Upstream{Name: "l", Type: "openai", BaseURL: "http://localhost:11434/v1", AuthHeader: "authorization"}
	f(ollama, epEmbeddings, "/v1/embeddings", "", "", "http://localhost:11434/v1/embeddings", "Authorization", "")
	azure := config.Upstream{Name: "a", Type: "azure", BaseURL: "https://res.openai.azure.com", APIKey: "az-key", AuthHeader: "api-key", APIVersion: "2024-10-21"}
	f(azure, epChat, "/v1/chat/completions", "", "gpt4o-prod", "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", "Api-Key", "az-key")
	f(azure, epEmbeddings, "/v1/embeddings", "api-version=old", "emb", "https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21", "Api-Key", "az-key")
	f(azure, epPassthrough, "/v1/files", "", "", "https://res.openai.azure.com/openai/files?api-version=2024-10-21", "Api-Key", "az-key")
	azureV1 := config.Upstream{Name: "a1", Type: "openai", BaseURL: "https://res.openai.azure.com/openai/v1", APIKey: "az-key", AuthHeader: "api-key"}
	f(azureV1, epResponses, "/v1/responses", "", "", "https://res.openai.azure.com/openai/v1/responses", "Api-Key", "az-key")
}

func TestUpstreamOrganization(t *testing.T) {
	up := testUpstream(t, config.Upstream{Name: "o", BaseURL: "https://api.openai.com/v1", AuthHeader: "authorization", Organization: "org-1", Project: "proj-1"})
	var req fasthttp.Request
	up.setCredentials(&req, 0)
	if string(req.Header.Peek("OpenAI-Organization")) != "org-1" || string(req.Header.Peek("OpenAI-Project")) != "proj-1" {
		t.Fatalf("organization headers not set: %s", req.Header.String())
	}
}

func TestUpstreamClassify(t *testing.T) {
	up := testUpstream(t, config.Upstream{Name: "o", BaseURL: "http://127.0.0.1:1/v1", AuthHeader: "authorization"})
	f := func(err error, want errKind) {
		t.Helper()
		if got := up.classify(err); got != want {
			t.Fatalf("classify(%v) = %d; want %d", err, got, want)
		}
	}
	f(&dialError{err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, errUpstreamUnreachable)
	f(fasthttp.ErrTimeout, errUpstreamTimeout)
	f(errors.Join(errors.New("read"), errTimeoutNetErr{}), errUpstreamTimeout)
	f(fasthttp.ErrConnectionClosed, errUpstreamUnreachable)
}

type errTimeoutNetErr struct{}

func (errTimeoutNetErr) Error() string   { return "i/o timeout" }
func (errTimeoutNetErr) Timeout() bool   { return true }
func (errTimeoutNetErr) Temporary() bool { return true }

// TestTimedConn checks the first-byte and idle deadlines on a pipe.
func TestTimedConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &timedConn{Conn: a, firstByte: 150 * time.Millisecond, idle: 50 * time.Millisecond, total: time.Second}
	go func() {
		buf := make([]byte, 16)
		_, _ = b.Read(buf)                 // the request
		time.Sleep(80 * time.Millisecond)  // under first_byte
		_, _ = b.Write([]byte("x"))        // first byte
		time.Sleep(200 * time.Millisecond) // over idle
		_, _ = b.Write([]byte("y"))
	}()
	if _, err := c.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("first byte after 80ms with first_byte=150ms: %v", err)
	}
	start := time.Now()
	_, err := c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("second read: want an idle timeout, got %v", err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Fatalf("idle timeout took %v; want about 50ms", d)
	}
}
