package policy

import (
	"math"
	"slices"
	"strings"
	"testing"
)

const priceDoc = `tiers: {t: {}}
keys:
  - id: k
    user: u
    tier: t
    sha256: ` + "KEYHASH" + `
prices:
  "gpt-4o-mini": {input: 0.15, output: 0.60, cached_input: 0.075}
  "gpt-4o*": {input: 2.50, output: 10.00}
  "gpt-4o-2024*": {input: 5.00, output: 15.00}
  "text-embedding-3-small": {input: 0.02}
  "o3": {input: 2.00, output: 8.00, cached_input: 0}
`

func parsePrices(t *testing.T, extra string) *Policy {
	t.Helper()
	p, err := Parse("p.yaml", []byte(strings.Replace(priceDoc, "KEYHASH", HashKey("sk-k"), 1)+extra), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// usd compares costs to a tenth of a micro-dollar.
func usd(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-7 {
		t.Fatalf("%s: $%.9f, want $%.9f", what, got, want)
	}
}

// TestPriceLookup: exact names first, then the longest prefix, then "*";
// a model without a price is free by default or refused when asked.
func TestPriceLookup(t *testing.T) {
	p := parsePrices(t, "")
	for model, want := range map[string]float64{
		"gpt-4o-mini":          0.15e-6,
		"gpt-4o":               2.50e-6,
		"gpt-4o-2024-08-06":    5.00e-6, // the longer prefix
		"gpt-4o-mini-realtime": 2.50e-6, // not the exact name
	} {
		pr, ok := p.Prices.Lookup(model)
		if !ok || math.Abs(pr.Input-want) > 1e-15 {
			t.Fatalf("%s: %+v %v; want input %g", model, pr, ok, want)
		}
	}
	if _, ok := p.Prices.Lookup("llama-3"); ok || p.Prices.Unpriced != UnpricedFree {
		t.Fatal("an unpriced model has a price, or is refused by default")
	}
	refusing := parsePrices(t, "unpriced: refuse\n")
	if refusing.Prices.Unpriced != UnpricedRefuse {
		t.Fatalf("unpriced: refuse compiled to %q", refusing.Prices.Unpriced)
	}
	star := parsePrices(t, "  \"*\": {input: 1, output: 2}\n")
	if pr, ok := star.Prices.Lookup("llama-3"); !ok || pr.Output != 2e-6 {
		t.Fatalf("*: %+v %v", pr, ok)
	}
}

// TestCostByHand: costs against hand computations from usage, for a chat
// answer with cached prompt tokens, a reasoning model whose cached input is
// free, embeddings (input only) and n = 3 (the usage counts every choice).
func TestCostByHand(t *testing.T) {
	p := parsePrices(t, "")
	mini, _ := p.Prices.Lookup("gpt-4o-mini")
	// 1,200 prompt tokens of which 1,024 cached, 300 completion:
	// 176 × 0.15 + 1,024 × 0.075 + 300 × 0.60 = 26.4 + 76.8 + 180 = 283.2 per 1M.
	usd(t, "chat with cache", mini.Cost(Usage{Prompt: 1200, CachedPrompt: 1024, Completion: 300}), 283.2e-6)
	o3, _ := p.Prices.Lookup("o3")
	// 5,000 prompt (2,000 cached at $0), 12,000 completion incl. reasoning:
	// 3,000 × 2 + 12,000 × 8 = 102,000 per 1M.
	usd(t, "reasoning", o3.Cost(Usage{Prompt: 5000, CachedPrompt: 2000, Completion: 12000}), 0.102)
	emb, _ := p.Prices.Lookup("text-embedding-3-small")
	usd(t, "embeddings", emb.Cost(Usage{Prompt: 8191}), 8191*0.02e-6)
	// n = 3: the provider reports 3 × 40 completion tokens in one usage.
	usd(t, "n=3", mini.Cost(Usage{Prompt: 20, Completion: 120}), (20*0.15+120*0.60)*1e-6)
	// Nonsense usage never costs less than nothing.
	usd(t, "malformed", mini.Cost(Usage{Prompt: 10, CachedPrompt: 50, Completion: -5}), 10*0.075e-6)
}

// TestPriceErrors: bad patterns, negative or absurd prices and an unknown
// unpriced mode are refused with the path of the mistake.
func TestPriceErrors(t *testing.T) {
	for extra, want := range map[string]string{
		"  \"gpt*4o\": {input: 1}\n":                "bad model pattern",
		"  \"x\": {input: -1}\n":                    "prices.x.input",
		"  \"x\": {output: 2e9}\n":                  "prices.x.output",
		"  \"x\": {input: 1, cached_input: -0.5}\n": "prices.x.cached_input",
		"unpriced: charge\n":                        "unpriced",
	} {
		doc := strings.Replace(priceDoc, "KEYHASH", HashKey("sk-k"), 1) + extra
		if _, err := Parse("p.yaml", []byte(doc), nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: %v; want an error containing %q", extra, err, want)
		}
	}
}

// TestDiffPrices: sluice diff lists added, removed and changed prices and
// the unpriced mode.
func TestDiffPrices(t *testing.T) {
	a := parsePrices(t, "")
	b, err := Parse("p.yaml", []byte(strings.Replace(strings.Replace(priceDoc, "KEYHASH", HashKey("sk-k"), 1),
		`"o3": {input: 2.00, output: 8.00, cached_input: 0}`, `"o4-mini": {input: 1.10, output: 4.40}`, 1)+
		"unpriced: refuse\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Prices.specs["gpt-4o-mini"] = PriceSpec{Input: 0.15, Output: 0.50}
	got := Diff(a, b)
	for _, want := range []string{"- price o3", "+ price o4-mini: input 1.1, cached_input 1.1, output 4.4",
		"~ price gpt-4o-mini: input 0.15, cached_input 0.075, output 0.6 -> input 0.15, cached_input 0.15, output 0.5",
		"~ unpriced: free -> refuse"} {
		if !slices.Contains(got, want) {
			t.Fatalf("diff %q lacks %q", got, want)
		}
	}
}
