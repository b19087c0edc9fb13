package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The upstream conformance suite (issue 17): Sluice in front of servers
// built on other stacks (Node's http, uvicorn), through the official Go SDK,
// with bursts and idle pauses longer than the upstreams' 5 s keep-alive.
// The matrix it checks is written down in docs/conformance.md.

// keepAliveIdle is the pause between bursts: longer than the 5 s after which
// Node's http server and uvicorn close an idle keep-alive connection.
const keepAliveIdle = 6 * time.Second

// conformanceSluice starts a sluice in front of u with the memory cache on
// and transcripts in JSONL files under the returned directory.
func conformanceSluice(t *testing.T, u *upstreamServer) (*sluiceProc, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := makeConfig(configOptions{firstByte: "20s", idle: "20s"}) +
		"cache:\n  store: memory\n  coalesce_wait: 10s\n" +
		"transcripts:\n  content: full\n  flush_interval: 50ms\n  jsonl:\n    dir: " + dir + "\n"
	s := startSluice(t, sluiceOptions{Config: cfg, Policies: trustedPolicies(), BaseURL: u.URL + "/v1"})
	return s, dir
}

// ---------------------------------------------------------------------------
// Burst, then idle

// TestConformanceBurstIdle sends bursts of 64 concurrent requests (chat,
// streamed chat, embeddings) through sluice to a Node and a uvicorn
// upstream, each burst after an idle pause longer than the upstream's
// keep-alive: every pooled connection is closed by then. None may fail.
func TestConformanceBurstIdle(t *testing.T) {
	for _, name := range []string{"node", "uvicorn"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var u *upstreamServer
			if name == "node" {
				u = startNodeUpstream(t)
			} else {
				u = startUvicornUpstream(t)
			}
			s, _ := conformanceSluice(t, u)
			burstIdle(t, s, 64, 4)
		})
	}
}

// burstIdle sends a warm-up burst, then rounds × (idle, burst) and fails the
// test if any request failed, with the count per round.
func burstIdle(t *testing.T, s *sluiceProc, n, rounds int) {
	c := s.client(demoKey)
	ctx := testContext(t, 90*time.Second)
	var failedTotal, sentTotal int
	var perRound []string
	for round := 0; round <= rounds; round++ {
		if round > 0 {
			time.Sleep(keepAliveIdle)
		}
		var failed atomic.Int64
		var mu sync.Mutex
		var firstErrs []string
		byStatus := map[string]int{}
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if err := burstCall(ctx, c, i, round); err != nil {
					failed.Add(1)
					kind := "no answer"
					if apiErr := (*openai.Error)(nil); errors.As(err, &apiErr) {
						kind = fmt.Sprint(apiErr.StatusCode)
					}
					mu.Lock()
					byStatus[kind]++
					if len(firstErrs) < 3 {
						firstErrs = append(firstErrs, err.Error())
					}
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		f := int(failed.Load())
		label := "warm-up"
		if round > 0 {
			label = fmt.Sprintf("after %v idle", keepAliveIdle)
			failedTotal += f
			sentTotal += n
		}
		perRound = append(perRound, fmt.Sprintf("burst %d (%s): %d of %d failed %v", round, label, f, n, byStatus))
		if f > 0 {
			t.Logf("burst %d: %d of %d failed; e.g. %s", round, f, n, strings.Join(firstErrs, " | "))
		}
	}
	t.Logf("%s", strings.Join(perRound, "; "))
	if failedTotal > 0 {
		t.Errorf("%d of %d requests after idle pauses failed (want 0)", failedTotal, sentTotal)
	}
}

// burstCall is request i of a burst: a chat, a streamed chat or an
// embedding, each with a prompt of its own (no cache hits), and checks the
// answer is whole.
func burstCall(ctx context.Context, c *openai.Client, i, round int) error {
	ctx, cancel := ctxFor(ctx, 30*time.Second)
	defer cancel()
	prompt := fmt.Sprintf("burst %d request %d %s", round, i, nonce())
	want := "You said: " + prompt + "."
	switch i % 3 {
	case 0:
		comp, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "conf-openai", Messages: userMessages(prompt)})
		if err != nil {
			return fmt.Errorf("chat: %w", err)
		}
		if len(comp.Choices) != 1 || !strings.HasPrefix(comp.Choices[0].Message.Content, want) {
			return fmt.Errorf("chat: answer %q", comp.RawJSON())
		}
	case 1:
		st := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "conf-vllm", Messages: userMessages(prompt)})
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		if err := st.Err(); err != nil {
			return fmt.Errorf("stream: %w", err)
		}
		if len(acc.Choices) != 1 || !strings.HasPrefix(acc.Choices[0].Message.Content, want) || acc.Choices[0].FinishReason != "stop" {
			return fmt.Errorf("stream: accumulated %+v", acc.Choices)
		}
	default:
		e, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "conf-openai",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(prompt)}})
		if err != nil {
			return fmt.Errorf("embedding: %w", err)
		}
		if len(e.Data) != 1 || len(e.Data[0].Embedding) != 8 {
			return fmt.Errorf("embedding: %s", e.RawJSON())
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Behaviours

// confCase is one behaviour: a server shape (the model), how the answer
// travels (X-Conformance-Transport), and what is asked.
type confCase struct {
	// model selects the shape: conf-openai, conf-vllm, conf-ollama,
	// conf-azure, conf-anthropic, conf-gemini, conf-askusage.
	model string
	// transport is the X-Conformance-Transport list ("" = the server's
	// default framing).
	transport string
	// kind is chat, stream, embed or error.
	kind string
	// askUsage sets stream_options.include_usage on a stream.
	askUsage bool
	// errStatus is the error to ask for (X-Conformance-Error), for kind error.
	errStatus int
	// n sets the request's n (the Anthropic shape refuses n != 1).
	n int64
}

func (c confCase) name() string {
	s := strings.TrimPrefix(c.model, "conf-") + "/" + c.kind
	if c.kind == "stream" && c.askUsage {
		s += "+usage"
	}
	if c.errStatus != 0 {
		s += fmt.Sprintf("-%d", c.errStatus)
	}
	if c.transport != "" {
		s += "/" + strings.ReplaceAll(c.transport, ",", "+")
	}
	return s
}

// nodeCases are the behaviours the Node upstream serves.
func nodeCases() []confCase {
	var cs []confCase
	add := func(c ...confCase) { cs = append(cs, c...) }
	// Each shape: chat, stream with and without usage asked, embeddings
	// where the server has them, an error.
	for _, m := range []string{"conf-openai", "conf-vllm", "conf-ollama", "conf-azure", "conf-anthropic", "conf-gemini", "conf-askusage"} {
		add(confCase{model: m, kind: "chat"},
			confCase{model: m, kind: "stream"},
			confCase{model: m, kind: "stream", askUsage: true})
	}
	add(confCase{model: "conf-openai", kind: "embed"}, confCase{model: "conf-vllm", kind: "embed"},
		confCase{model: "conf-ollama", kind: "embed"})
	add(confCase{model: "conf-openai", kind: "error", errStatus: 400},
		confCase{model: "conf-vllm", kind: "error", errStatus: 404},
		confCase{model: "conf-ollama", kind: "error", errStatus: 404},
		confCase{model: "conf-azure", kind: "error", errStatus: 404},
		confCase{model: "conf-gemini", kind: "error", errStatus: 400},
		confCase{model: "conf-anthropic", kind: "error", n: 2})
	// Transports, each with a JSON answer, a stream and an embedding.
	for _, tr := range []string{"close", "http10", "length", "chunked", "gzip", "br"} {
		add(confCase{model: "conf-openai", kind: "chat", transport: tr},
			confCase{model: "conf-openai", kind: "stream", transport: tr},
			confCase{model: "conf-openai", kind: "embed", transport: tr})
	}
	add(confCase{model: "conf-openai", kind: "error", errStatus: 400, transport: "gzip"},
		confCase{model: "conf-openai", kind: "error", errStatus: 400, transport: "br"},
		confCase{model: "conf-openai", kind: "error", errStatus: 500, transport: "close"},
		confCase{model: "conf-openai", kind: "error", errStatus: 404, transport: "http10"})
	// SSE framing: comments, event lines, CRLF, all at once.
	for _, tr := range []string{"ping", "event", "crlf", "ping,event,crlf"} {
		add(confCase{model: "conf-vllm", kind: "stream", transport: tr},
			confCase{model: "conf-vllm", kind: "stream", transport: tr, askUsage: true})
	}
	add(confCase{model: "conf-azure", kind: "stream", transport: "ping,close"},
		confCase{model: "conf-gemini", kind: "stream", transport: "crlf,gzip"})
	return cs
}

// uvicornCases are the behaviours the uvicorn upstream serves.
func uvicornCases() []confCase {
	var cs []confCase
	for _, m := range []string{"conf-openai", "conf-vllm"} {
		cs = append(cs, confCase{model: m, kind: "chat"},
			confCase{model: m, kind: "stream"},
			confCase{model: m, kind: "stream", askUsage: true},
			confCase{model: m, kind: "embed"},
			confCase{model: m, kind: "error", errStatus: 404})
	}
	for _, tr := range []string{"close", "length", "chunked", "gzip"} {
		cs = append(cs, confCase{model: "conf-vllm", kind: "chat", transport: tr},
			confCase{model: "conf-vllm", kind: "stream", transport: tr},
			confCase{model: "conf-vllm", kind: "embed", transport: tr})
	}
	cs = append(cs, confCase{model: "conf-vllm", kind: "error", errStatus: 400, transport: "gzip"})
	return cs
}

// TestConformanceBehaviours runs every behaviour of the Node and the uvicorn
// upstream through sluice three times, with idle pauses longer than the
// upstream's keep-alive between the passes, and checks each answer against
// what the upstream sent: byte-equal (compression aside), usage right in
// the transcript, a repeated deterministic request served from the cache
// and equal to the first answer, and no 502.
func TestConformanceBehaviours(t *testing.T) {
	for _, name := range []string{"node", "uvicorn"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var u *upstreamServer
			var cases []confCase
			if name == "node" {
				u, cases = startNodeUpstream(t), nodeCases()
			} else {
				u, cases = startUvicornUpstream(t), uvicornCases()
			}
			s, dir := conformanceSluice(t, u)
			h := &confHarness{u: u, s: s, dir: dir, c: s.client(demoKey)}
			// Pass 1 one behaviour at a time. Passes 2 and 3 each come after an
			// idle pause and send the first request of every behaviour at
			// once, so pass 3 meets the many pooled connections pass 2
			// opened, all closed by the upstream meanwhile.
			for pass := 1; pass <= 3; pass++ {
				firsts := make([]callResult, len(cases))
				if pass > 1 {
					time.Sleep(keepAliveIdle)
					var wg sync.WaitGroup
					for i, cc := range cases {
						wg.Add(1)
						go func() {
							defer wg.Done()
							firsts[i] = h.call(t.Context(), cc, casePrompt(cc))
						}()
					}
					wg.Wait()
				}
				t.Run(fmt.Sprintf("pass%d", pass), func(t *testing.T) {
					for i, cc := range cases {
						t.Run(cc.name(), func(t *testing.T) {
							if pass == 1 {
								firsts[i] = h.call(t.Context(), cc, casePrompt(cc))
							}
							judge(t, h.check(t, cc, firsts[i]))
						})
					}
				})
			}
			if v, ok := s.metric(t, "sluice_requests_total", `status="502"`); ok && v > 0 {
				t.Errorf("sluice answered %v requests with 502", v)
			}
		})
	}
}

// verdict collects what went wrong in one behaviour, each named by the
// area it concerns.
type verdict struct {
	failures []string
}

// fail records a failure in area: status (no 502, the upstream's status),
// sdk (the SDK reads the answer), body (byte-equal), strip (the usage chunk
// Sluice asked for on the client's behalf is removed), transcript, cache.
func (v *verdict) fail(area, format string, args ...any) {
	v.failures = append(v.failures, area+": "+fmt.Sprintf(format, args...))
}

// judge fails the test with v's failures.
func judge(t *testing.T, v verdict) {
	t.Helper()
	for _, f := range v.failures {
		t.Error(f)
	}
}

type confHarness struct {
	u   *upstreamServer
	s   *sluiceProc
	dir string
	c   *openai.Client
}

// callResult is one SDK call as the client saw it.
type callResult struct {
	prompt string
	id     string // X-Conformance-Id
	wire   *wireCapture
	err    error
	text   string // the SDK's parsed content (chat and stream)
	usage  openai.CompletionUsage
}

// call makes the case's request with a fresh X-Conformance-Id.
func (h *confHarness) call(ctx context.Context, cc confCase, prompt string) callResult {
	ctx, cancel := ctxFor(ctx, 30*time.Second)
	defer cancel()
	r := callResult{prompt: prompt, id: nonce() + nonce(), wire: &wireCapture{}}
	opts := []option.RequestOption{r.wire.middleware(), option.WithHeader("X-Conformance-Id", r.id)}
	if cc.transport != "" {
		opts = append(opts, option.WithHeader("X-Conformance-Transport", cc.transport))
	}
	if cc.errStatus != 0 {
		opts = append(opts, option.WithHeader("X-Conformance-Error", fmt.Sprint(cc.errStatus)))
	}
	p := openai.ChatCompletionNewParams{Model: cc.model, Messages: userMessages(prompt), Temperature: openai.Float(0)}
	if cc.n != 0 {
		p.N = openai.Int(cc.n)
	}
	switch cc.kind {
	case "chat", "error":
		comp, err := h.c.Chat.Completions.New(ctx, p, opts...)
		r.err = err
		if err == nil && len(comp.Choices) > 0 {
			r.text, r.usage = comp.Choices[0].Message.Content, comp.Usage
		}
	case "stream":
		if cc.askUsage {
			p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		}
		st := h.c.Chat.Completions.NewStreaming(ctx, p, opts...)
		var acc openai.ChatCompletionAccumulator
		for st.Next() {
			acc.AddChunk(st.Current())
		}
		r.err = st.Err()
		_ = st.Close()
		if len(acc.Choices) > 0 {
			r.text = acc.Choices[0].Message.Content
		}
		r.usage = acc.Usage
	case "embed":
		e, err := h.c.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: cc.model,
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String(prompt)}}, opts...)
		r.err = err
		if err == nil {
			r.usage.PromptTokens, r.usage.TotalTokens = e.Usage.PromptTokens, e.Usage.TotalTokens
		}
	}
	return r
}

// casePrompt is a prompt of the behaviour's own, new on every run.
func casePrompt(cc confCase) string { return "conformance " + cc.name() + " " + nonce() }

// check judges one behaviour from its first call: compared with what the upstream
// sent and with the transcript, then the same request again for the cache.
func (h *confHarness) check(t *testing.T, cc confCase, first callResult) (v verdict) {
	prompt := first.prompt
	stream := cc.kind == "stream"
	status := first.wire.status
	if status == http.StatusBadGateway {
		v.fail("status", "502 from sluice: %v", first.err)
		return v
	}
	rec, ok := h.u.sent(t, first.id)
	if !ok {
		v.fail("status", "the request never reached the %s upstream (status %d, err %v)", h.u.name, status, first.err)
		return v
	}

	// The SDK's view: success, or the upstream's error status.
	wantStatus := rec.Status
	if cc.kind == "error" {
		var apiErr *openai.Error
		if !errors.As(first.err, &apiErr) || apiErr.StatusCode != wantStatus {
			v.fail("sdk", "SDK error %v, want an API error with status %d", first.err, wantStatus)
		}
	} else if first.err != nil {
		v.fail("sdk", "SDK call failed: %v", first.err)
	}
	if status != wantStatus {
		v.fail("status", "client got status %d, upstream sent %d", status, wantStatus)
	}

	// Byte-equal, compression aside. Sluice asks for the usage chunk on the
	// client's behalf and removes it again: that event alone may be missing.
	got, err := first.wire.Body()
	if err != nil {
		v.fail("body", "client body (Content-Encoding %q): %v", first.wire.header.Get("Content-Encoding"), err)
		return v
	}
	want := rec.Body
	if stream && !cc.askUsage && rec.Status == http.StatusOK {
		var kept [][]byte
		for _, ev := range sseEvents(rec.Body) {
			if !usageOnly(ev) {
				kept = append(kept, ev)
			}
		}
		want = bytes.Join(kept, nil)
	}
	switch {
	case bytes.Equal(got, want):
	case bytes.Equal(got, rec.Body):
		v.fail("strip", "the client got the usage chunk it did not ask for (the rest is byte-equal)")
	default:
		v.fail("body", "client body differs from the upstream's (%d vs %d bytes)\nclient:   %q\nupstream: %q", len(got), len(want), clip(got), clip(want))
	}

	// The SDK parsed the same text the upstream sent.
	upText := answerText(rec.Body, stream)
	if cc.kind == "chat" || cc.kind == "stream" {
		if first.text != upText || upText == "" {
			v.fail("sdk", "SDK text %q, upstream text %q", first.text, upText)
		}
	}
	upUsage, hasUsage := answerUsage(rec.Body, stream)
	if cc.kind == "stream" && !cc.askUsage && !strings.Contains(cc.model, "gemini") && first.usage.TotalTokens != 0 {
		v.fail("strip", "the client did not ask for usage but the SDK got a usage chunk (total %d)", first.usage.TotalTokens)
	}
	if (cc.kind == "chat" || cc.kind == "embed" || cc.askUsage) && hasUsage && first.usage.TotalTokens != upUsage.Total {
		v.fail("sdk", "SDK usage total %d, upstream's %+v", first.usage.TotalTokens, upUsage)
	}

	// Sluice asks the upstream for the usage of every stream.
	if stream && !strings.Contains(string(rec.RequestBody), `"include_usage":true`) {
		v.fail("transcript", "sluice did not ask the upstream for stream usage: %s", rec.RequestBody)
	}

	// The transcript.
	reqID := first.wire.header.Get("X-Request-Id")
	tr, err := transcriptFor(t, h.dir, reqID, 5*time.Second)
	if err != nil {
		v.fail("transcript", "transcript: %v", err)
	} else {
		if num(tr, "status") != int64(wantStatus) {
			v.fail("transcript", "transcript status %v, want %d", tr["status"], wantStatus)
		}
		if rec.Status == http.StatusOK {
			if !hasUsage {
				t.Fatalf("the upstream sent no usage: %q", clip(rec.Body)) // the test's own upstream is wrong
			}
			if num(tr, "prompt_tokens") != upUsage.Prompt || num(tr, "total_tokens") != upUsage.Total {
				v.fail("transcript", "transcript usage prompt %v total %v, upstream's %+v", tr["prompt_tokens"], tr["total_tokens"], upUsage)
			}
			if cc.kind != "embed" && tr["response"] != upText {
				v.fail("transcript", "transcript response %q, upstream text %q", tr["response"], upText)
			}
		}
	}

	// The cache: the same deterministic request again is a hit, equal to
	// the first answer, and never reaches the upstream.
	if rec.Status != http.StatusOK {
		return v
	}
	if c := first.wire.header.Get("X-Sluice-Cache"); c != "miss" {
		v.fail("cache", "first answer: X-Sluice-Cache %q, want miss", c)
	}
	again := h.call(t.Context(), cc, prompt)
	if again.err != nil {
		v.fail("cache", "repeat: %v", again.err)
		return v
	}
	if c := again.wire.header.Get("X-Sluice-Cache"); c != "hit" {
		v.fail("cache", "repeat: X-Sluice-Cache %q, want hit", c)
	}
	if _, reached := h.u.sent(t, again.id); reached {
		v.fail("cache", "repeat reached the upstream; want it served from the cache")
	}
	// A hit replays usage when the client asked for it (OpenAI's rule), so
	// usage an upstream sent unasked (Gemini's) is not compared.
	if again.text != first.text || (cc.askUsage || !stream) && again.usage.TotalTokens != first.usage.TotalTokens {
		v.fail("cache", "repeat: text %q usage %d; first %q usage %d", again.text, again.usage.TotalTokens, first.text, first.usage.TotalTokens)
	}
	if !stream {
		g, err := again.wire.Body()
		if err != nil || !bytes.Equal(g, got) {
			v.fail("cache", "cached answer differs from the first (%v):\n%q\n%q", err, clip(g), clip(got))
		}
	}
	return v
}

// clip shortens b for a message.
func clip(b []byte) []byte {
	if len(b) > 600 {
		return append(bytes.Clone(b[:600]), "…"...)
	}
	return b
}
