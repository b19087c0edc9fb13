package e2e

import (
	"context"
	"io"
	"net/http"
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
		time.Sleep(200 * time.Millisecond) // the first one holds its lease
	}
	wg.Wait()
	if !(statuses[0] == 200 && statuses[1] == http.StatusTooManyRequests) {
		t.Fatalf("two held speech calls from a user with concurrent 1: %v; want [200 429]", statuses)
	}
}
