package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"sluice/fakeai"
)

// userMessages is a one-message chat.
func userMessages(prompt string) []openai.ChatCompletionMessageParamUnion {
	return []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}
}

// nonce returns a short random hex string, so prompts differ between runs.
func nonce() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// TestHashKey checks that `sluice hash-key` prints the sha256 that
// policies.yaml files of this suite are written with.
func TestHashKey(t *testing.T) {
	out, err := exec.Command(sluiceBin, "hash-key", appKey).Output()
	if err != nil {
		t.Fatalf("sluice hash-key: %v", err)
	}
	if got, want := strings.TrimSpace(string(out)), sha256Hex(appKey); got != want {
		t.Fatalf("sluice hash-key %s = %q, want %q", appKey, got, want)
	}
}

// TestChatNonStream sends a chat completion through the example
// configuration and checks the answer and what the provider received:
// the upstream key only, no hop-by-hop or X-Sluice-* header.
func TestChatNonStream(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testContext(t, 20*time.Second)
	hopHeaders := []option.RequestOption{
		option.WithHeader("Keep-Alive", "timeout=5, max=100"),
		option.WithHeader("Proxy-Authorization", "Basic ZTJlOnNlY3JldA=="),
		option.WithHeader("X-Sluice-User", "mallory"),
		option.WithHeader("X-Sluice-Debug", "1"),
		option.WithHeader("X-E2e-Custom", "keep-me"),
		// A header the Connection header names is hop-by-hop too.
		option.WithHeader("Connection", "X-E2e-Conn-Scoped"),
		option.WithHeader("X-E2e-Conn-Scoped", "drop-me"),
	}

	// Control: sent directly, the fake sees these headers, so their absence
	// below is Sluice's doing.
	direct := e.fake.directClient()
	if _, err := direct.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4oMini, Messages: userMessages("control"),
	}, hopHeaders...); err != nil {
		t.Fatalf("direct call to the fake: %v", err)
	}
	ctl := e.fake.LastRequest().Header
	for _, h := range []string{"Keep-Alive", "Proxy-Authorization", "X-Sluice-User", "X-Sluice-Debug", "X-E2e-Custom", "X-E2e-Conn-Scoped"} {
		if ctl.Get(h) == "" {
			t.Fatalf("control: the SDK did not send %s directly (headers %v); the test cannot prove it is dropped", h, ctl)
		}
	}

	prompt := "hello from the e2e suite " + nonce()
	var resp *http.Response
	opts := append([]option.RequestOption{option.WithResponseInto(&resp)}, hopHeaders...)
	comp, err := e.s.client(demoKey).Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: userMessages(prompt),
	}, opts...)
	if err != nil {
		t.Fatalf("chat completion through sluice: %v", err)
	}
	if len(comp.Choices) != 1 {
		t.Fatalf("got %d choices, want 1", len(comp.Choices))
	}
	if got, want := comp.Choices[0].Message.Content, "echo: "+prompt; got != want {
		t.Fatalf("content = %q, want %q", got, want)
	}
	if comp.Model != "gpt-4o-mini" || comp.Choices[0].FinishReason != "stop" {
		t.Fatalf("model %q finish %q, want gpt-4o-mini and stop", comp.Model, comp.Choices[0].FinishReason)
	}
	if resp == nil || !strings.HasPrefix(resp.Header.Get("X-Request-Id"), "req_") {
		t.Fatalf("response has no x-request-id: %v", resp)
	}

	last := e.fake.LastRequest()
	if last.Method != http.MethodPost || last.Path != "/v1/chat/completions" {
		t.Fatalf("upstream got %s %s, want POST /v1/chat/completions", last.Method, last.Path)
	}
	if got, want := last.Header.Get("Authorization"), "Bearer "+upstreamKey; got != want {
		t.Fatalf("upstream Authorization = %q, want %q", got, want)
	}
	for k, vs := range last.Header {
		for _, v := range vs {
			if strings.Contains(v, demoKey) {
				t.Fatalf("the client key reached the upstream in header %s: %q", k, v)
			}
		}
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "X-Sluice-") {
			t.Fatalf("Sluice header %s was forwarded upstream", k)
		}
	}
	if bytes.Contains(last.Body, []byte(demoKey)) {
		t.Fatalf("the client key reached the upstream in the body")
	}
	for _, h := range []string{"Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Upgrade", "X-E2e-Conn-Scoped"} {
		if v := last.Header.Values(h); len(v) > 0 {
			t.Fatalf("hop-by-hop header %s forwarded upstream: %q", h, v)
		}
	}
	if got := last.Header.Get("X-E2e-Custom"); got != "keep-me" {
		t.Fatalf("end-to-end header X-E2e-Custom = %q upstream, want it forwarded as \"keep-me\"", got)
	}
	var body struct {
		Model    string `json:"model"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(last.Body, &body); err != nil {
		t.Fatalf("upstream body is not JSON: %v: %s", err, last.Body)
	}
	if body.Model != "gpt-4o-mini" || len(body.Messages) != 1 || body.Messages[0].Content != prompt {
		t.Fatalf("upstream body = %s, want the client's request", last.Body)
	}
}

// streamResult is what a chat stream delivered.
type streamResult struct {
	content    string
	finish     string
	chunks     int
	contentAt  []time.Duration // arrival of each chunk with content, since the call began
	total      time.Duration
	usage      openai.CompletionUsage
	usageChunk bool
	err        error
}

// readChatStream drains a chat stream.
func readChatStream(start time.Time, st interface {
	Next() bool
	Current() openai.ChatCompletionChunk
	Err() error
	Close() error
}) streamResult {
	var r streamResult
	var b strings.Builder
	for st.Next() {
		ch := st.Current()
		r.chunks++
		for _, c := range ch.Choices {
			if c.Delta.Content != "" {
				b.WriteString(c.Delta.Content)
				r.contentAt = append(r.contentAt, time.Since(start))
			}
			if c.FinishReason != "" {
				r.finish = c.FinishReason
			}
		}
		if ch.JSON.Usage.Valid() && ch.Usage.TotalTokens > 0 {
			r.usage, r.usageChunk = ch.Usage, true
		}
	}
	r.total = time.Since(start)
	r.err = st.Err()
	_ = st.Close()
	r.content = b.String()
	return r
}

// fillerText and filler mirror the fake's X-Fake-Chunk-Size answer.
const fillerText = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "

func filler(n int) string {
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(fillerText[:min(len(fillerText), n-b.Len())])
	}
	return b.String()
}

// TestChatStream streams chat completions through Sluice: the assembled
// content, unbuffered delivery from a slow upstream, a 1 MiB event and
// usage.
func TestChatStream(t *testing.T) {
	e := newEnv(t, envOptions{})
	client := e.s.client(demoKey)

	t.Run("assembled", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		prompt := "stream me please " + nonce()
		r := readChatStream(time.Now(), client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
		}))
		if r.err != nil {
			t.Fatalf("stream error: %v", r.err)
		}
		if want := "echo: " + prompt; r.content != want {
			t.Fatalf("assembled content = %q, want %q", r.content, want)
		}
		// A role chunk, 5 content chunks, a finish chunk.
		if r.finish != "stop" || r.chunks != 7 {
			t.Fatalf("finish %q after %d chunks, want stop after 7", r.finish, r.chunks)
		}
	})

	t.Run("unbuffered", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		prompt := "one two three four five six seven eight nine ten"
		start := time.Now()
		r := readChatStream(start, client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
		}, option.WithHeader("X-Fake-Chunk-Interval", "200ms"), option.WithHeader("X-Fake-Chunks", "5")))
		if r.err != nil || r.content != "echo: "+prompt {
			t.Fatalf("stream: err %v content %q", r.err, r.content)
		}
		if len(r.contentAt) != 5 {
			t.Fatalf("got %d content chunks, want 5", len(r.contentAt))
		}
		// The upstream takes 7 intervals (1.4 s); a buffering proxy would
		// deliver every chunk at the end.
		if r.total < time.Second {
			t.Fatalf("the stream took %v; the fake's pacing did not apply", r.total)
		}
		first, last := r.contentAt[0], r.contentAt[len(r.contentAt)-1]
		if first > r.total*6/10 {
			t.Fatalf("first content chunk arrived at %v of %v: the stream was buffered", first, r.total)
		}
		if spread := last - first; spread < 600*time.Millisecond {
			t.Fatalf("content chunks arrived within %v (at %v), want them spread like the upstream sent them (~800ms)", spread, r.contentAt)
		}
	})

	t.Run("1MiB_event", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		const size = 1 << 20
		r := readChatStream(time.Now(), client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("big"),
		}, option.WithHeader("X-Fake-Chunk-Size", fmt.Sprint(size)), option.WithHeader("X-Fake-Chunks", "1")))
		if r.err != nil {
			t.Fatalf("stream error: %v", r.err)
		}
		if len(r.contentAt) != 1 || len(r.content) != size {
			t.Fatalf("got %d content chunks, %d bytes; want one chunk of %d bytes", len(r.contentAt), len(r.content), size)
		}
		if r.content != filler(size) {
			t.Fatalf("the 1 MiB content was altered in transit")
		}
	})

	t.Run("include_usage", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		prompt := "count these four words"
		r := readChatStream(time.Now(), client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages(prompt),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		}))
		if r.err != nil || r.content != "echo: "+prompt {
			t.Fatalf("stream: err %v content %q", r.err, r.content)
		}
		if !r.usageChunk {
			t.Fatalf("no usage chunk arrived")
		}
		// The fake counts words: 4 in the prompt, 5 in "echo: " + prompt.
		if u := r.usage; u.PromptTokens != 4 || u.CompletionTokens != 5 || u.TotalTokens != 9 {
			t.Fatalf("usage = %d/%d/%d, want 4/5/9", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
		}
	})
}

// TestClientDisconnect cancels streams mid-way and checks that Sluice stops
// reading the upstream at once, counts the disconnect and frees the request.
func TestClientDisconnect(t *testing.T) {
	check := func(t *testing.T, e *env, base resources, cancelled time.Time) {
		t.Helper()
		if !waitFor(2*time.Second, func() bool { return e.fake.Stats().Aborted >= 1 }) {
			t.Fatalf("the upstream request was not aborted within 2s of the client leaving (stats %+v)", e.fake.Stats())
		}
		if took := time.Since(cancelled); took > 1200*time.Millisecond {
			t.Fatalf("the upstream request was aborted %v after the client left, want within ~1s", took)
		}
		if !waitFor(time.Second, func() bool {
			v, _ := e.s.metric(t, "sluice_client_disconnects_total", `route="chat_completions"`)
			return v >= 1
		}) {
			t.Fatalf("sluice_client_disconnects_total{route=\"chat_completions\"} did not reach 1")
		}
		if !waitFor(time.Second, func() bool {
			v, ok := e.s.metric(t, "sluice_requests_in_flight")
			return ok && v == 0
		}) {
			v, _ := e.s.metric(t, "sluice_requests_in_flight")
			t.Fatalf("sluice_requests_in_flight = %v after the client left, want 0", v)
		}
		e.s.checkSettled(t, base)
	}

	t.Run("mid_stream", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		base := e.s.resources(t)
		ctx, cancel := context.WithCancel(testContext(t, 20*time.Second))
		defer cancel()
		st := e.s.client(demoKey).Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("a long answer please"),
		}, option.WithHeader("X-Fake-Chunks", "50"), option.WithHeader("X-Fake-Chunk-Interval", "100ms"))
		if !st.Next() {
			t.Fatalf("no first chunk: %v", st.Err())
		}
		cancel()
		cancelled := time.Now()
		_ = st.Close()
		check(t, e, base, cancelled)
	})

	t.Run("silent_upstream", func(t *testing.T) {
		// The upstream sends its headers, then thinks for 3 s: no write to
		// the client can fail, so only Sluice's watch of the socket can
		// notice that the client left.
		e := newEnv(t, envOptions{})
		base := e.s.resources(t)
		ctx, cancel := context.WithCancel(testContext(t, 20*time.Second))
		defer cancel()
		st := e.s.client(demoKey).Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: openai.ChatModelGPT4oMini, Messages: userMessages("think hard"),
		}, option.WithHeader("X-Fake-Latency", "3s"))
		if err := st.Err(); err != nil {
			t.Fatalf("stream did not start: %v", err)
		}
		time.AfterFunc(300*time.Millisecond, cancel)
		start := time.Now()
		if st.Next() {
			t.Fatalf("got a chunk before the upstream's latency ended")
		}
		cancelled := time.Now()
		if cancelled.Sub(start) > 2*time.Second {
			t.Fatalf("cancel took %v to end the client read", cancelled.Sub(start))
		}
		_ = st.Close()
		check(t, e, base, cancelled)
	})
}

// TestEmbeddings gets the same embedding as floats and as base64 and
// compares both with the fake's vector.
func TestEmbeddings(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testContext(t, 20*time.Second)
	client := e.s.client(demoKey)
	input := "the quick brown fox " + nonce()
	params := openai.EmbeddingNewParams{
		Model: openai.EmbeddingModelTextEmbedding3Small,
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(input)},
	}
	floats, err := client.Embeddings.New(ctx, params)
	if err != nil {
		t.Fatalf("float embeddings: %v", err)
	}
	params.EncodingFormat = openai.EmbeddingNewParamsEncodingFormatBase64
	b64, err := client.Embeddings.New(ctx, params)
	if err != nil {
		t.Fatalf("base64 embeddings: %v", err)
	}
	if !bytes.Contains(e.fake.LastRequest().Body, []byte(`"encoding_format":"base64"`)) {
		t.Fatalf("upstream body %s does not ask for base64", e.fake.LastRequest().Body)
	}
	if len(floats.Data) != 1 || len(b64.Data) != 1 {
		t.Fatalf("got %d and %d embeddings, want 1 each", len(floats.Data), len(b64.Data))
	}
	if raw := b64.Data[0].JSON.Embedding.Raw(); !strings.HasPrefix(raw, `"`) {
		t.Fatalf("base64 answer carried %.40s…, want a base64 string", raw)
	}
	want := fakeai.Embed(input, fakeai.DefaultEmbeddingDimensions)
	f, g := floats.Data[0].Embedding, b64.Data[0].Embedding
	if len(f) != len(want) || len(g) != len(want) {
		t.Fatalf("dimensions: float %d, base64 %d, want %d", len(f), len(g), len(want))
	}
	for i := range want {
		// The vectors are float32: JSON carries their shortest decimal,
		// base64 their exact bits; both must round to the same float32.
		if float32(f[i]) != float32(g[i]) {
			t.Fatalf("value %d: float %v != base64 %v", i, f[i], g[i])
		}
		if float32(g[i]) != want[i] || float64(want[i]) != g[i] {
			t.Fatalf("value %d: got %v, the fake's vector has %v", i, g[i], want[i])
		}
	}
	if floats.Usage.PromptTokens != 5 {
		t.Fatalf("prompt tokens = %d, want 5", floats.Usage.PromptTokens)
	}
}

// TestModels lists and retrieves models; an unknown model's 404 is the
// fake's own, passed through.
func TestModels(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testContext(t, 20*time.Second)
	client := e.s.client(demoKey)

	page, err := client.Models.List(ctx)
	if err != nil {
		t.Fatalf("list models: %v", err)
	}
	want, err := e.fake.directClient().Models.List(ctx)
	if err != nil {
		t.Fatalf("list models directly: %v", err)
	}
	if len(page.Data) == 0 || len(page.Data) != len(want.Data) {
		t.Fatalf("got %d models, the fake lists %d", len(page.Data), len(want.Data))
	}
	for i := range want.Data {
		if page.Data[i].ID != want.Data[i].ID || page.Data[i].OwnedBy != want.Data[i].OwnedBy {
			t.Fatalf("model %d = %s/%s, want %s/%s", i, page.Data[i].ID, page.Data[i].OwnedBy, want.Data[i].ID, want.Data[i].OwnedBy)
		}
	}

	m, err := client.Models.Get(ctx, "gpt-4o")
	if err != nil {
		t.Fatalf("get gpt-4o: %v", err)
	}
	if m.ID != "gpt-4o" || m.OwnedBy != "system" || m.Created != 1715367049 {
		t.Fatalf("got model %+v", m)
	}
	if last := e.fake.LastRequest(); last.Method != http.MethodGet || last.Path != "/v1/models/gpt-4o" {
		t.Fatalf("upstream got %s %s", last.Method, last.Path)
	}

	_, err = client.Models.Get(ctx, "nonexistent-model-e2e")
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || apiErr.Param != "model" {
		t.Fatalf("got %d %s param %q, want 404 model_not_found param model", apiErr.StatusCode, apiErr.Code, apiErr.Param)
	}
	// The fake words it "The model '…' does not exist": its answer, not
	// one Sluice made up.
	if apiErr.Message != "The model 'nonexistent-model-e2e' does not exist" {
		t.Fatalf("message %q is not the fake's", apiErr.Message)
	}
	if apiErr.Response.Header.Get("X-Request-Id") == "" {
		t.Fatalf("404 has no x-request-id")
	}
}

// TestLegacyCompletions sends a legacy completion.
func TestLegacyCompletions(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := testContext(t, 20*time.Second)
	prompt := "complete this " + nonce()
	c, err := e.s.client(demoKey).Completions.New(ctx, openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModelGPT3_5TurboInstruct,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
	})
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Text != "echo: "+prompt {
		t.Fatalf("choices = %+v, want text %q", c.Choices, "echo: "+prompt)
	}
	if last := e.fake.LastRequest(); last.Path != "/v1/completions" {
		t.Fatalf("upstream path %s", last.Path)
	}
}

// TestResponses sends a Responses API call, plain and streamed.
func TestResponses(t *testing.T) {
	e := newEnv(t, envOptions{})
	client := e.s.client(demoKey)

	t.Run("plain", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		input := "respond to this " + nonce()
		r, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: openai.ChatModelGPT4oMini,
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(input)},
		})
		if err != nil {
			t.Fatalf("responses: %v", err)
		}
		if got := r.OutputText(); got != "echo: "+input {
			t.Fatalf("output text = %q, want %q", got, "echo: "+input)
		}
		if r.Status != "completed" {
			t.Fatalf("status %q", r.Status)
		}
	})

	t.Run("stream", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		input := "stream a response " + nonce()
		st := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: openai.ChatModelGPT4oMini,
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(input)},
		})
		var deltas strings.Builder
		var final string
		var types []string
		for st.Next() {
			ev := st.Current()
			types = append(types, ev.Type)
			switch ev.Type {
			case "response.output_text.delta":
				deltas.WriteString(ev.Delta)
			case "response.completed":
				final = ev.Response.OutputText()
			}
		}
		if err := st.Err(); err != nil {
			t.Fatalf("stream error: %v", err)
		}
		_ = st.Close()
		want := "echo: " + input
		if deltas.String() != want || final != want {
			t.Fatalf("deltas %q, completed %q, want %q (events %v)", deltas.String(), final, want, types)
		}
		if types[0] != "response.created" || types[len(types)-1] != "response.completed" {
			t.Fatalf("events %v, want response.created … response.completed", types)
		}
	})
}

// TestPassthroughMultipartAndBinary uploads a binary file (multipart) and
// downloads speech audio (binary) through the passthrough route.
func TestPassthroughMultipartAndBinary(t *testing.T) {
	e := newEnv(t, envOptions{})
	client := e.s.client(demoKey)

	for _, size := range []int{1000, 3 << 20} {
		t.Run(fmt.Sprintf("file_%d", size), func(t *testing.T) {
			ctx := testContext(t, 20*time.Second)
			data := make([]byte, size)
			_, _ = rand.Read(data)
			for i := 0; i < len(data); i += 7 {
				data[i] = 0
			}
			copy(data, []byte{0, 0, 0xff, 0xfe, '\r', '\n', '-', '-', 0xc3, 0x28})
			f, err := client.Files.New(ctx, openai.FileNewParams{
				File:    openai.File(bytes.NewReader(data), "blob.bin", "application/octet-stream"),
				Purpose: openai.FilePurposeUserData,
			})
			if err != nil {
				t.Fatalf("upload: %v", err)
			}
			var raw struct {
				Bytes  int64  `json:"bytes"`
				SHA256 string `json:"sha256"`
			}
			if err := json.Unmarshal([]byte(f.RawJSON()), &raw); err != nil {
				t.Fatalf("file object %s: %v", f.RawJSON(), err)
			}
			sum := sha256.Sum256(data)
			if raw.Bytes != int64(size) || f.Bytes != int64(size) || raw.SHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("the fake received %d bytes with sha256 %s, want %d bytes with %x", raw.Bytes, raw.SHA256, size, sum)
			}
			if f.Filename != "blob.bin" || f.Purpose != "user_data" {
				t.Fatalf("file %q purpose %q", f.Filename, f.Purpose)
			}
		})
	}

	t.Run("speech", func(t *testing.T) {
		ctx := testContext(t, 20*time.Second)
		params := openai.AudioSpeechNewParams{
			Model: openai.SpeechModelTTS1,
			Input: "say something",
			Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String("alloy")},
		}
		resp, err := client.Audio.Speech.New(ctx, params)
		if err != nil {
			t.Fatalf("speech: %v", err)
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatalf("read speech: %v", err)
		}
		direct, err := e.fake.directClient().Audio.Speech.New(ctx, params)
		if err != nil {
			t.Fatalf("speech directly: %v", err)
		}
		want, err := io.ReadAll(direct.Body)
		_ = direct.Body.Close()
		if err != nil {
			t.Fatalf("read direct speech: %v", err)
		}
		if !bytes.Equal(want, fakeai.SpeechBytes()) {
			t.Fatalf("control: the fake's direct answer is not SpeechBytes")
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("speech through sluice: %d bytes differing from the fake's %d", len(got), len(want))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "audio/mpeg" {
			t.Fatalf("content type %q, want audio/mpeg", ct)
		}
	})
}
