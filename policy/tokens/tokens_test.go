package tokens

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

func TestEncodingFor(t *testing.T) {
	for model, want := range map[string]Encoding{
		"gpt-4o": O200kBase, "gpt-4o-mini-2024-07-18": O200kBase, "GPT-4o": O200kBase, "chatgpt-4o-latest": O200kBase,
		"gpt-4.1": O200kBase, "gpt-4.1-nano": O200kBase, "gpt-4.5-preview": O200kBase, "gpt-5": O200kBase, "gpt-5-mini": O200kBase,
		"o1": O200kBase, "o1-mini": O200kBase, "o3": O200kBase, "o3-pro": O200kBase, "o4-mini": O200kBase, "gpt-oss-120b": O200kBase,
		"ft:gpt-4o-mini:acme::abc123": O200kBase, "openai/gpt-4o": O200kBase, "azure/gpt-4.1": O200kBase,
		"gpt-4": Cl100kBase, "gpt-4-turbo": Cl100kBase, "gpt-4-0613": Cl100kBase, "gpt-4-32k": Cl100kBase,
		"gpt-3.5-turbo": Cl100kBase, "gpt-35-turbo": Cl100kBase, "text-embedding-3-small": Cl100kBase,
		"text-embedding-3-large": Cl100kBase, "text-embedding-ada-002": Cl100kBase, "ft:gpt-3.5-turbo:org::x": Cl100kBase,
		"": Fallback, "llama-3.1-8b-instruct": Fallback, "meta-llama/Llama-3.3-70B-Instruct": Fallback, "o10": Fallback,
		"omni": Fallback, "qwen2.5-72b": Fallback, "claude-sonnet-4": Fallback, "gpt": Fallback, "o": Fallback,
	} {
		if got := EncodingFor(model); got != want {
			t.Errorf("EncodingFor(%q) = %v, want %v", model, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { EncodingFor("ft:gpt-4o-mini:acme::abc123") }); n != 0 {
		t.Errorf("EncodingFor allocates %v times", n)
	}
}

func chatBody(t testing.TB, model string, msgs ...map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"model": model, "messages": msgs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// OpenAI cookbook, "How to count tokens with tiktoken": these messages are
// 129 prompt tokens for gpt-3.5-turbo and gpt-4, and 124 for gpt-4o, as
// the API reports them.
var cookbook = []map[string]any{
	{"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
	{"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
	{"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
	{"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
	{"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
	{"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
}

func TestCountCookbook(t *testing.T) {
	c := NewCounter(Options{})
	for model, want := range map[string]int64{"gpt-4": 129, "gpt-3.5-turbo": 129, "gpt-4o": 124, "gpt-4o-mini": 124} {
		body := chatBody(t, model, cookbook...)
		if n, err := c.Count(Chat, model, body); err != nil || n != want {
			t.Errorf("Count(%s) = %d, %v; want %d", model, n, err, want)
		}
		if est, _ := c.Count(Chat, model, body); c.Estimate(Chat, body) < est {
			t.Errorf("Estimate(%s) = %d < %d", model, c.Estimate(Chat, body), est)
		}
	}
}

// corpus returns realistic texts by category: the paragraphs of
// testdata/corpus/*.txt and generated random strings (keys, hashes,
// base64, identifiers, numbers) up to 4 KB.
func corpus(t testing.TB) map[string][]string {
	out := map[string][]string{}
	files, _ := filepath.Glob("testdata/corpus/*.txt")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		cat := strings.TrimSuffix(filepath.Base(name), ".txt")
		out[cat] = append(strings.Split(strings.TrimSpace(string(b)), "\n\n"), string(b))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	gen := func(alphabet string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for i := range 60 {
		n := 8 << (i % 10) // 8 B .. 4 KB
		out["random"] = append(out["random"],
			gen(alnum+"+/", n),                      // base64
			gen("0123456789abcdef", n),              // hex digests
			"sk-proj-"+gen(alnum+"_-", min(n, 164)), // API keys
			fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<12), rng.IntN(1<<12), rng.Int64N(1<<48)),
			gen(alnum+" ", n),    // random words
			gen("0123456789", n), // digits
			gen(alnum+`!"#$%&'()*+,-./:;<=>?@[\]^_{|}~ `, n), // printable ASCII
		)
	}
	return out
}

// TestEstimateBound checks Estimate >= Count over the corpus, for texts
// and for chat bodies, and logs how tight the estimate is.
func TestEstimateBound(t *testing.T) {
	c := NewCounter(Options{})
	pure := NewCounter(Options{CacheEntries: -1}) // estimates without memoized counts
	cats := corpus(t)
	names := make([]string, 0, len(cats))
	for n := range cats {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, e := range []Encoding{O200kBase, Cl100kBase, Fallback} {
		var totEst, totN int64
		for _, name := range names {
			var est, n int64
			minRatio := 10.0
			var msgs []map[string]any
			for i, s := range cats[name] {
				se, sn := e.EstimateText([]byte(s)), countText(t, e, s)
				if se < sn {
					t.Errorf("%s %s: EstimateText %d < count %d for %q", e, name, se, sn, s)
				}
				est, n = est+se, n+sn
				minRatio = min(minRatio, float64(se)/float64(max(sn, 1)))
				msgs = append(msgs, map[string]any{"role": []string{"user", "assistant"}[i%2], "content": s})
			}
			body := chatBody(t, modelOf(e), msgs...)
			be, bn := pure.EstimateFor(e, Chat, body), mustCount(t, c, Chat, modelOf(e), body)
			if be < bn {
				t.Errorf("%s %s: Estimate %d < Count %d for the chat body", e, name, be, bn)
			}
			t.Logf("%-11s %-12s texts: %3d, estimate/count %.3f (min %.3f); as one chat: %d/%d = %.3f",
				e, name, len(cats[name]), float64(est)/float64(n), minRatio, be, bn, float64(be)/float64(bn))
			totEst, totN = totEst+be, totN+bn
		}
		t.Logf("%-11s all chat bodies: estimate/count %.3f", e, float64(totEst)/float64(totN))
	}
}

func mustCount(t testing.TB, c *Counter, kind Kind, model string, body []byte) int64 {
	n, err := c.Count(kind, model, body)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCountAccounting checks Count against counts worked out by hand from
// the tokenizer (o200k_base: "You are a helpful assistant." 6 tokens,
// "Hello, world!" 4, "bob" 1, "Say hi" 2, "get_weather" 2,
// `{"city":"Lisbon"}` 6, "sunny, 21 C" 6, "a cat" 2, "Be brief." 3,
// "Paris" 1, the tools JSON below 29) and the accounting: 3 per message +
// its role (1) + content, a name +1, 3 priming the reply; a tool call 3 +
// name + arguments; tool definitions 8 + their JSON; a low detail image 85.
func TestCountAccounting(t *testing.T) {
	const tools = `[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]`
	for _, tc := range []struct {
		kind Kind
		body string
		want int64
	}{
		{Chat, `{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","name":"bob","content":"Hello, world!"}]}`,
			(3 + 1 + 6) + (3 + 1 + 1 + 1 + 4) + 3},
		{Chat, `{"messages":[{"role":"user","content":"Say hi"},` +
			`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Lisbon\"}"}}]},` +
			`{"role":"tool","tool_call_id":"call_1","content":"sunny, 21 C"}],"tools":` + tools + `}`,
			(3 + 1 + 2) + (3 + 1 + 3 + 2 + 6) + (3 + 1 + 6) + 3 + (8 + 29)},
		{Chat, `{"messages":[{"role":"user","content":[{"type":"text","text":"a cat"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"low"}}]}]}`,
			3 + 1 + 2 + 85 + 3},
		{Chat, `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}`,
			3 + 1 + DefaultImageTokens + 3},
		{Chat, `{"messages":[]}`, 3},
		{Completions, `{"prompt":"Hello, world!"}`, 4},
		{Completions, `{"prompt":["Hello, world!","Paris"],"suffix":"Say hi"}`, 4 + 1 + 2},
		{Completions, `{"prompt":[1,2,3]}`, 3},
		{Completions, `{"prompt":[[1,2],[3]]}`, 3},
		{Embeddings, `{"input":"Be brief."}`, 3},
		{Embeddings, `{"input":["a cat","bob"]}`, 3},
		{Embeddings, `{"input":[[1,2,3],[4]],"model":"text-embedding-3-small"}`, 4},
		{Responses, `{"instructions":"Be brief.","input":"Say hi"}`, (3 + 1 + 3) + (3 + 1 + 2) + 3},
		{Responses, `{"input":[{"role":"user","content":[{"type":"input_text","text":"Say hi"}]},` +
			`{"type":"function_call","call_id":"c1","name":"get_weather","arguments":"{\"city\":\"Lisbon\"}"},` +
			`{"type":"function_call_output","call_id":"c1","output":"sunny, 21 C"}]}`,
			(3 + 1 + 2) + (3 + 2 + 6) + (3 + 6) + 3},
	} {
		c := NewCounter(Options{})
		body := []byte(tc.body)
		for range 2 { // cold, then from the memo
			if n, err := c.Count(tc.kind, "gpt-4o", body); err != nil || n != tc.want {
				t.Errorf("Count(%d, %s) = %d, %v; want %d", tc.kind, tc.body, n, err, tc.want)
			}
		}
		if n, _ := c.Count(tc.kind, "llama-3-70b", body); n != (tc.want*5+3)/4 {
			t.Errorf("Count(%d, fallback, %s) = %d; want %d", tc.kind, tc.body, n, (tc.want*5+3)/4)
		}
		for _, e := range []Encoding{O200kBase, Cl100kBase, Fallback} {
			n, _ := c.Count(tc.kind, modelOf(e), body)
			if est := (&Counter{}).EstimateFor(e, tc.kind, body); est < n {
				t.Errorf("EstimateFor(%s, %s) = %d < Count %d", e, tc.body, est, n)
			}
		}
	}
}

func TestEstimateModel(t *testing.T) {
	c := NewCounter(Options{})
	msgs := `"messages":[{"role":"user","content":"Привет! Как настроить резервное копирование базы данных?"}]`
	for model, enc := range map[string]Encoding{"gpt-4o": O200kBase, "gpt-4": Cl100kBase, "mistral-large": Fallback} {
		for _, body := range []string{`{"model":"` + model + `",` + msgs + `}`, `{` + msgs + `,"model":"` + model + `"}`} {
			if got, want := c.Estimate(Chat, []byte(body)), c.EstimateFor(enc, Chat, []byte(body)); got != want {
				t.Errorf("Estimate(%s) = %d, want EstimateFor(%s) = %d", body, got, enc, want)
			}
		}
	}
}

func TestMalformed(t *testing.T) {
	c := NewCounter(Options{})
	for _, body := range []string{``, `[]`, `"x"`, `{"messages":[{"role":"user","content":"hi"}`, `{"messages":`, `nul`} {
		if _, err := c.Count(Chat, "gpt-4o", []byte(body)); !errors.Is(err, ErrBody) {
			t.Errorf("Count(%q) error = %v, want ErrBody", body, err)
		}
		if est := c.Estimate(Chat, []byte(body)); est < 0 || est > 2*int64(len(body))+16 {
			t.Errorf("Estimate(%q) = %d", body, est)
		}
	}
}

func TestMemo(t *testing.T) {
	bodies := make([][]byte, 300)
	for i := range bodies {
		msgs := append(cookbook[:i%len(cookbook):i%len(cookbook)],
			map[string]any{"role": "user", "content": fmt.Sprintf("question %d: %s", i, strings.Repeat("why? ", i%7))})
		bodies[i] = chatBody(t, "gpt-4o", msgs...)
	}
	plain := NewCounter(Options{CacheEntries: -1})
	want := make([]int64, len(bodies))
	for i, b := range bodies {
		want[i] = mustCount(t, plain, Chat, "gpt-4o", b)
	}
	if s := plain.Stats(); s != (Stats{}) {
		t.Errorf("memo disabled but Stats = %+v", s)
	}
	c := NewCounter(Options{CacheEntries: 64}) // far fewer entries than messages: evictions
	for round := range 3 {
		for i, b := range bodies {
			if n := mustCount(t, c, Chat, "gpt-4o", b); n != want[i] {
				t.Fatalf("round %d body %d: Count %d, want %d", round, i, n, want[i])
			}
		}
	}
	if len(c.memo.slots) != 64 {
		t.Errorf("memo grew to %d slots", len(c.memo.slots))
	}
	s := c.Stats()
	t.Logf("small memo over 3 rounds: %+v", s)
	if s.Hits == 0 || s.Misses == 0 {
		t.Errorf("Stats = %+v, want both hits and misses", s)
	}
	// A conversation resending its history tokenizes only the new message.
	c = NewCounter(Options{})
	mustCount(t, c, Chat, "gpt-4o", chatBody(t, "gpt-4o", cookbook[:5]...))
	before := c.Stats()
	mustCount(t, c, Chat, "gpt-4o", chatBody(t, "gpt-4o", cookbook...))
	if d := c.Stats(); d.Misses-before.Misses != 1 || d.Hits-before.Hits != 5 {
		t.Errorf("next turn: %+v -> %+v, want 5 hits and 1 miss", before, d)
	}
	// Once counted, a body is estimated exactly.
	body := chatBody(t, "gpt-4o", cookbook...)
	if est := c.Estimate(Chat, body); est != 124 {
		t.Errorf("Estimate of a counted body = %d, want 124", est)
	}
	// Same bytes, other encoding: counted again, not taken from the memo.
	if n := mustCount(t, c, Chat, "gpt-4", chatBody(t, "gpt-4", cookbook...)); n != 129 {
		t.Errorf("gpt-4 after gpt-4o: %d, want 129", n)
	}
}

// TestEstimateMemo: Estimate through the estimate memo (a conversation
// resending its history) gives exactly what a fresh scan gives, for every
// kind and encoding, also when the memo is too small and evicts.
func TestEstimateMemo(t *testing.T) {
	var bodies [][]byte
	for i := range 120 {
		msgs := append(cookbook[:i%len(cookbook):i%len(cookbook)],
			map[string]any{"role": "user", "content": fmt.Sprintf("question %d: %s", i, strings.Repeat("why? ", i%7))})
		bodies = append(bodies, chatBody(t, []string{"gpt-4o", "gpt-4", "qwen3"}[i%3], msgs...))
	}
	bodies = append(bodies,
		[]byte(`{"model":"gpt-4o","input":[{"role":"user","content":"hi there"},{"type":"function_call","name":"f","arguments":"{\"a\":1}"}],"instructions":"Be brief.","tools":[{"type":"function","name":"f"}]}`),
		[]byte(`{"model":"gpt-4o","prompt":["once upon a time","there was"],"suffix":"the end"}`),
		[]byte(`{"model":"text-embedding-3-small","input":["alpha beta","gamma",[1,2,3]]}`))
	pure := NewCounter(Options{CacheEntries: -1})
	for _, entries := range []int{0, 8} { // the default, and 8 entries: evictions
		c := NewCounter(Options{CacheEntries: entries})
		for round := range 3 {
			for i, b := range bodies {
				for kind := Chat; kind <= Responses; kind++ {
					if got, want := c.Estimate(kind, b), pure.Estimate(kind, b); got != want {
						t.Fatalf("entries %d round %d body %d kind %d: Estimate %d, want %d", entries, round, i, kind, got, want)
					}
					if got, want := c.EstimateFor(Fallback, kind, b), pure.EstimateFor(Fallback, kind, b); got != want {
						t.Fatalf("entries %d round %d body %d kind %d: EstimateFor %d, want %d", entries, round, i, kind, got, want)
					}
				}
			}
		}
		used := 0
		for i := range c.est.slots {
			if c.est.slots[i].Load() != 0 {
				used++
			}
		}
		if used == 0 || used%2 != 0 {
			t.Errorf("entries %d: %d estimate memo words in use, want a positive even number", entries, used)
		}
		if s := c.Stats(); s != (Stats{}) {
			t.Errorf("Estimate alone moved the count memo's Stats: %+v", s)
		}
	}
}

func TestConcurrent(t *testing.T) {
	var bodies [][]byte
	models := []string{"gpt-4o", "gpt-4", "qwen3"}
	for _, ss := range corpus(t) {
		for _, s := range ss[:min(len(ss), 12)] {
			bodies = append(bodies, chatBody(t, models[len(bodies)%3], map[string]any{"role": "user", "content": s}))
		}
	}
	ref := NewCounter(Options{CacheEntries: -1})
	type want struct{ est, n int64 }
	wants := make([]want, len(bodies))
	for i, b := range bodies {
		wants[i] = want{ref.Estimate(Chat, b), mustCount(t, ref, Chat, models[i%3], b)}
	}
	c := NewCounter(Options{CacheEntries: 128})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 3 * len(bodies) {
				i := (k*7 + g*13) % len(bodies)
				n, err := c.Count(Chat, models[i%3], bodies[i])
				// With the memo filling, Estimate moves between the pure
				// estimate and the exact count.
				if est := c.Estimate(Chat, bodies[i]); err != nil || n != wants[i].n || est > wants[i].est || est < n {
					t.Errorf("body %d: Count %d (%v), Estimate %d; want %+v", i, n, err, est, wants[i])
					return
				}
			}
		})
	}
	wg.Wait()
}
