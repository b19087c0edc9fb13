package tokens

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
			be, bn := c.EstimateFor(e, Chat, body), mustCount(t, c, Chat, modelOf(e), body)
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
