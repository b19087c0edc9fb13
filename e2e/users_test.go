package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// accessLogUser waits for the access log line of a request id and returns
// its key_id and user fields.
func accessLogUser(t *testing.T, s *sluiceProc, reqID string) (keyID, user string) {
	t.Helper()
	if reqID == "" {
		t.Fatalf("no request id to find in the access log")
	}
	line := s.waitLogLine(2*time.Second, "msg=request", "request_id="+reqID+" ")
	if line == "" {
		t.Fatalf("no access log line for request %s", reqID)
	}
	return logField(line, "key_id"), logField(line, "user")
}

// TestConcurrentUsers runs 50 users at once through one trusted app key,
// half of them streaming, and checks that each gets its own answer and is
// logged as itself.
func TestConcurrentUsers(t *testing.T) {
	e := newEnv(t, envOptions{
		config:   makeConfig(configOptions{accessLog: true}),
		policies: trustedPolicies(),
	})
	client := e.s.client(appKey)
	ctx := testContext(t, 30*time.Second)

	const users = 50
	type result struct {
		user, prompt, content, reqID string
		err                          error
	}
	results := make([]result, users)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.user = fmt.Sprintf("user-%02d", i)
			r.prompt = fmt.Sprintf("question %d from %s %s", i, r.user, nonce())
			var resp *http.Response
			opts := []option.RequestOption{
				option.WithHeader("X-Sluice-User", r.user),
				// Keep every request in flight at the same time.
				option.WithHeader("X-Fake-Latency", "150ms"),
				option.WithResponseInto(&resp),
			}
			params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages(r.prompt)}
			<-release
			if i%2 == 0 {
				var c *openai.ChatCompletion
				c, r.err = client.Chat.Completions.New(ctx, params, opts...)
				if r.err == nil && len(c.Choices) > 0 {
					r.content = c.Choices[0].Message.Content
				}
			} else {
				sr := readChatStream(time.Now(), client.Chat.Completions.NewStreaming(ctx, params, opts...))
				r.content, r.err = sr.content, sr.err
			}
			if resp != nil {
				r.reqID = resp.Header.Get("X-Request-Id")
			}
		}()
	}
	close(release)
	wg.Wait()

	ids := make(map[string]bool)
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("user %d: %v", i, r.err)
		}
		if want := "echo: " + r.prompt; r.content != want {
			t.Fatalf("user %d got %q, want %q (cross-talk?)", i, r.content, want)
		}
		if ids[r.reqID] {
			t.Fatalf("request id %s given twice", r.reqID)
		}
		ids[r.reqID] = true
	}
	if st := e.fake.Stats(); st.Requests != users || st.Streams != users/2 {
		t.Fatalf("the fake saw %d requests, %d streams; want %d and %d", st.Requests, st.Streams, users, users/2)
	}
	for _, r := range results {
		keyID, user := accessLogUser(t, e.s, r.reqID)
		if keyID != "app" || user != r.user {
			t.Fatalf("request %s logged as key %q user %q, want app / %s", r.reqID, keyID, user, r.user)
		}
	}
}

// TestTrustedUser checks how the end user is chosen: a trusted key names it
// (X-Sluice-User, else the body's "user") and must name one; any other key
// cannot.
func TestTrustedUser(t *testing.T) {
	e := newEnv(t, envOptions{
		config:   makeConfig(configOptions{accessLog: true}),
		policies: trustedPolicies(),
	})
	cases := []struct {
		name       string
		key        string
		header     string // X-Sluice-User
		bodyUser   string
		wantKey    string
		wantUser   string
		wantStatus int    // 0: success
		wantParam  string // for a 400
	}{
		{name: "trusted_body_user", key: appKey, bodyUser: "alice", wantKey: "app", wantUser: "alice"},
		{name: "trusted_header_wins", key: appKey, header: "bob", bodyUser: "carol", wantKey: "app", wantUser: "bob"},
		// An app key must name its end user (issue 18): none is a 400.
		{name: "trusted_no_user", key: appKey, wantStatus: 400, wantParam: "user"},
		{name: "untrusted_body_user", key: demoKey, bodyUser: "mallory", wantKey: "demo", wantUser: "demo"},
		{name: "untrusted_header_user", key: demoKey, header: "mallory", bodyUser: "mallory", wantKey: "demo", wantUser: "demo"},
		{name: "trusted_control_char", key: appKey, bodyUser: "eve\x01", wantStatus: 400, wantParam: "user"},
		{name: "trusted_too_long", key: appKey, header: strings.Repeat("u", 300), wantStatus: 400, wantParam: "X-Sluice-User"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t, 10*time.Second)
			prompt := "who am i " + nonce()
			params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt)}
			if c.bodyUser != "" {
				params.User = openai.String(c.bodyUser)
			}
			var resp *http.Response
			opts := []option.RequestOption{option.WithResponseInto(&resp)}
			if c.header != "" {
				opts = append(opts, option.WithHeader("X-Sluice-User", c.header))
			}
			comp, err := e.s.client(c.key).Chat.Completions.New(ctx, params, opts...)
			if c.wantStatus != 0 {
				checkSluiceError(t, err, c.wantStatus, "invalid_request_error", "", c.wantParam)
				return
			}
			if err != nil {
				t.Fatalf("chat: %v", err)
			}
			if comp.Choices[0].Message.Content != "echo: "+prompt {
				t.Fatalf("content %q", comp.Choices[0].Message.Content)
			}
			if h := e.fake.LastRequest().Header.Get("X-Sluice-User"); h != "" {
				t.Fatalf("X-Sluice-User reached the upstream: %q", h)
			}
			keyID, user := accessLogUser(t, e.s, resp.Header.Get("X-Request-Id"))
			if keyID != c.wantKey || user != c.wantUser {
				t.Fatalf("logged key %q user %q, want %q / %q", keyID, user, c.wantKey, c.wantUser)
			}
		})
	}
}

// TestSIGTERMDrain sends SIGTERM during a stream: the stream completes, the
// server stops taking requests, and the process exits 0.
func TestSIGTERMDrain(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testContext(t, 20*time.Second)
	prompt := "drain me gently " + nonce()
	st := e.s.client(demoKey).Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
	}, option.WithHeader("X-Fake-Chunks", "10"), option.WithHeader("X-Fake-Chunk-Interval", "100ms"))
	if !st.Next() {
		t.Fatalf("no first chunk: %v", st.Err())
	}
	first := st.Current()
	e.s.signal(t, syscall.SIGTERM)
	signalled := time.Now()

	// While draining, /readyz says so.
	if !waitFor(time.Second, func() bool {
		resp, err := http.Get(e.s.AdminURL + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}) {
		t.Fatalf("/readyz did not report 503 while draining")
	}

	var b strings.Builder
	for _, c := range first.Choices {
		b.WriteString(c.Delta.Content)
	}
	finish := ""
	for st.Next() {
		for _, c := range st.Current().Choices {
			b.WriteString(c.Delta.Content)
			if c.FinishReason != "" {
				finish = c.FinishReason
			}
		}
	}
	if err := st.Err(); err != nil {
		t.Fatalf("the stream broke during the drain: %v", err)
	}
	_ = st.Close()
	if want := "echo: " + prompt; b.String() != want || finish != "stop" {
		t.Fatalf("drained stream delivered %q (finish %q), want %q", b.String(), finish, want)
	}
	if time.Since(signalled) < 500*time.Millisecond {
		t.Fatalf("the stream ended %v after SIGTERM; the pacing did not apply", time.Since(signalled))
	}
	if err := e.s.waitExit(t, 5*time.Second); err != nil {
		t.Fatalf("sluice exited with %v after the drain, want status 0", err)
	}
	if !strings.Contains(e.s.Output(), "msg=stopped") {
		t.Fatalf("no \"stopped\" log line after the drain")
	}
	if e.fake.Stats().Aborted != 0 {
		t.Fatalf("the upstream stream was aborted during the drain")
	}
}
