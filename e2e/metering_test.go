package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// meteringPolicy holds the demo key to 3 requests a minute and one at a
// time; the app key's end users get a roomy tier.
func meteringPolicy() string {
	return `tiers:
  t:
    rpm: 3
    concurrent: 1
  roomy:
    rpm: 100
keys:
  - id: demo
    key_env: SLUICE_DEMO_KEY
    user: demo
    tier: t
  - id: app
    sha256: ` + sha256Hex(appKey) + `
    trusted: true
    tier: roomy
`
}

// speech is one POST /v1/audio/speech through client; the answer's status.
func speech(ctx context.Context, t *testing.T, client *openai.Client, opts ...option.RequestOption) int {
	t.Helper()
	resp, err := client.Audio.Speech.New(ctx, openai.AudioSpeechNewParams{
		Model: openai.SpeechModelTTS1,
		Input: "say something",
		Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String("alloy")},
	}, append(opts, option.WithMaxRetries(0))...)
	if err != nil {
		return asAPIError(t, err).StatusCode
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestSecurityEveryPathMetered: every /v1 path is a request against the
// caller's budgets, not only the four endpoints Sluice reads. The review
// found a key held to 3 requests a minute making ten speech calls in a
// row, uncharged; and a user's held calls are bounded by its concurrency.
func TestSecurityEveryPathMetered(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{}), policies: meteringPolicy()})
	demo := e.s.client(demoKey)
	ctx := testContext(t, 30*time.Second)

	// Three requests of any kind, then 429s on every path.
	var statuses []int
	for range 2 {
		statuses = append(statuses, speech(ctx, t, demo))
	}
	if _, err := demo.Models.List(ctx, option.WithMaxRetries(0)); err != nil {
		t.Fatalf("models list within budget: %v", err)
	}
	for range 3 {
		statuses = append(statuses, speech(ctx, t, demo))
	}
	want := []int{200, 200, 429, 429, 429}
	for i := range want {
		if statuses[i] != want[i] {
			t.Fatalf("speech, speech, models, speech ×3 against rpm 3: speech statuses %v; want %v", statuses, want)
		}
	}
	_, err := demo.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4oMini, Messages: userMessages("after " + nonce())}, option.WithMaxRetries(0))
	if apiErr := asAPIError(t, err); apiErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a chat after three passthrough requests: %d; want 429 (one budget for every path)", apiErr.StatusCode)
	}

	// An app key's passthrough calls name their end user like its chats,
	// and each end user has its own budget.
	app := e.s.client(appKey)
	if st := speech(ctx, t, app); st != http.StatusBadRequest {
		t.Fatalf("an app key's speech naming no end user: %d; want 400", st)
	}
	for i := range 4 {
		if st := speech(ctx, t, app, option.WithHeader("X-Sluice-User", "u"+nonce())); st != 200 {
			t.Fatalf("end user %d's speech: %d", i, st)
		}
	}
}

// TestSecurityPassthroughConcurrency: one user's slow passthrough calls
// hold at most its tier's concurrency (one here), so they cannot take every
// upstream connection from other users: the review held all four with
// speech calls.
func TestSecurityPassthroughConcurrency(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{}), policies: meteringPolicy()})
	demo := e.s.client(demoKey)
	ctx := testContext(t, 30*time.Second)
	slow := option.WithHeader("X-Fake-Latency", "1500ms")
	var wg sync.WaitGroup
	statuses := make([]int, 2)
	for i := range statuses {
		wg.Go(func() { statuses[i] = speech(ctx, t, demo, slow) })
		if i == 0 && !waitFor(5*time.Second, func() bool { return e.fake.Stats().Requests == 1 }) {
			t.Fatal("the first speech call did not reach the upstream") // it holds its lease until answered
		}
	}
	wg.Wait()
	if !(statuses[0] == 200 && statuses[1] == http.StatusTooManyRequests) {
		t.Fatalf("two held speech calls from a user with concurrent 1: %v; want [200 429]", statuses)
	}
}

// TestSecurityBodyBeforeKey: the review's eight slow uploads without a key
// took Sluice from 25 MB to 320 MB of memory, since a body was read (up to
// server.max_body_bytes) before its key was checked. Now a body over
// 64 KiB is read only for a valid key: each upload gets its 401 once its
// headers are in, while it still has nearly 32 MiB to send.
func TestSecurityBodyBeforeKey(t *testing.T) {
	e := newEnv(t, envOptions{config: makeConfig(configOptions{})})
	addr := strings.TrimPrefix(e.s.URL, "http://")
	rss0, _ := e.s.metric(t, "process_resident_memory_bytes")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			head := "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: " +
				strconv.Itoa(32<<20-1) + "\r\n\r\n"
			if _, err := io.WriteString(c, head+strings.Repeat("a", 64<<10)); err != nil {
				t.Error(err)
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Errorf("upload %d without a key: no answer while its body was still coming: %v", i, err)
				return
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("upload %d without a key: %d, want 401", i, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	rss1, _ := e.s.metric(t, "process_resident_memory_bytes")
	t.Logf("RSS %.0f MiB before the uploads, %.0f MiB after", rss0/(1<<20), rss1/(1<<20))
	if rss1-rss0 > 16<<20 {
		t.Errorf("eight refused uploads grew RSS by %.0f MiB", (rss1-rss0)/(1<<20))
	}
}

// TestSecurityConnsPerIP: server.max_conns_per_ip caps the connections one
// client address holds; the next one is closed unanswered, and a place
// that frees up is usable again.
func TestSecurityConnsPerIP(t *testing.T) {
	cfg := strings.Replace(makeConfig(configOptions{}), "  shutdown_timeout: 10s\n", "  shutdown_timeout: 10s\n  max_conns_per_ip: 2\n", 1)
	e := newEnv(t, envOptions{config: cfg})
	addr := strings.TrimPrefix(e.s.URL, "http://")
	get := func(c net.Conn) error {
		if _, err := io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+demoKey+"\r\n\r\n"); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var held []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := get(c); err != nil {
			t.Fatalf("connection %d within the cap: %v", i, err)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if err := get(third); err == nil {
		t.Fatal("a third connection from one address was served; max_conns_per_ip is 2")
	}
	_ = held[0].Close()
	time.Sleep(100 * time.Millisecond)
	fourth, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fourth.Close()
	if err := get(fourth); err != nil {
		t.Fatalf("a connection after one closed: %v", err)
	}
}

// TestSecurityConnsShared: the review held all four upstream connections
// (max_conns: 4) with one user's slow speech calls, and another user's
// chat failed with 502. A user holds at most half of them by default
// (upstreams[].max_conns_per_user): its other calls wait for its own, and
// the other user's chat is answered at once. The tier has no concurrency
// limit here, so only the connection share protects the others.
func TestSecurityConnsShared(t *testing.T) {
	cfg := strings.Replace(makeConfig(configOptions{}), "    timeouts:\n", "    max_conns: 4\n    timeouts:\n", 1)
	e := newEnv(t, envOptions{config: cfg, policies: trustedPolicies()})
	demo := e.s.client(demoKey)
	ctx := testContext(t, 30*time.Second)
	slow := option.WithHeader("X-Fake-Latency", "1500ms")
	var wg sync.WaitGroup
	statuses := make([]int, 4)
	for i := range statuses {
		wg.Go(func() { statuses[i] = speech(ctx, t, demo, slow) })
	}
	time.Sleep(300 * time.Millisecond) // the speech calls hold their connections
	start := time.Now()
	_, err := e.s.client(appKey).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4oMini, Messages: userMessages("meanwhile " + nonce())},
		option.WithHeader("X-Sluice-User", "other"), option.WithMaxRetries(0))
	took := time.Since(start)
	if err != nil || took > time.Second {
		t.Fatalf("another user's chat while one user holds slow calls: %v after %v; want an answer at once", err, took)
	}
	wg.Wait()
	for i, st := range statuses {
		if st != 200 {
			t.Fatalf("the slow user's speech %d: %d; want 200 (waiting for its own connections)", i, st)
		}
	}
}
