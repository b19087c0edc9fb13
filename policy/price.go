package policy

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Prices: what each model costs, in USD per 1M tokens (policies.yaml
// `prices`), and the cost of an answer from the usage the provider reports.
// The table is the admin's: Sluice ships an example (configs/policies.yaml)
// to check against the provider's price list.

// PriceSpec is one model's price in policies.yaml, in USD per 1M tokens.
type PriceSpec struct {
	// Input is the price of a prompt (input) token.
	Input float64 `yaml:"input"`
	// CachedInput is the price of a prompt token the provider served from
	// its prompt cache (usage.prompt_tokens_details.cached_tokens). Default:
	// Input.
	CachedInput *float64 `yaml:"cached_input"`
	// Output is the price of a completion (output) token; reasoning tokens
	// are billed as output and are part of completion_tokens. Embeddings
	// have none.
	Output float64 `yaml:"output"`
}

// Price is a compiled price, in USD per token.
type Price struct {
	Input, CachedInput, Output float64
}

// Usage is what an answer used, in tokens: Prompt includes CachedPrompt,
// and Completion the reasoning tokens. For n > 1 choices the provider's
// usage already counts every choice.
type Usage struct {
	Prompt, CachedPrompt, Completion int64
}

// Cost is the USD cost of u at p. Cached prompt tokens beyond the prompt
// (a malformed usage) are counted as prompt tokens.
func (p Price) Cost(u Usage) float64 {
	cached := min(max(u.CachedPrompt, 0), max(u.Prompt, 0))
	return float64(max(u.Prompt, 0)-cached)*p.Input + float64(cached)*p.CachedInput + float64(max(u.Completion, 0))*p.Output
}

// Unpriced says what a model without a price costs: UnpricedFree counts it
// at $0 (the default, so a gateway without a price table works as before);
// UnpricedRefuse answers its requests 403. A "*" entry in prices is the
// default price of every other model.
const (
	UnpricedFree   = "free"
	UnpricedRefuse = "refuse"
)

// Prices is the compiled price table: exact names, then longer prefixes
// ("gpt-4o*") first, then "*".
type Prices struct {
	exact    map[string]Price
	prefixes []pricePattern
	star     *Price
	// Unpriced is UnpricedFree or UnpricedRefuse.
	Unpriced string
	// specs are the prices as written, for Diff.
	specs map[string]PriceSpec
}

type pricePattern struct {
	prefix string
	price  Price
}

// Lookup returns the price of model (after aliases), and false when the
// table has none for it.
func (ps *Prices) Lookup(model string) (Price, bool) {
	if p, ok := ps.exact[model]; ok {
		return p, true
	}
	for _, pp := range ps.prefixes {
		if strings.HasPrefix(model, pp.prefix) {
			return pp.price, true
		}
	}
	if ps.star != nil {
		return *ps.star, true
	}
	return Price{}, false
}

// Any reports whether the table prices any model.
func (ps *Prices) Any() bool { return len(ps.specs) > 0 }

// maxPrice bounds a price, in USD per 1M tokens: far above any model's, low
// enough that a cost stays a finite, exact-enough float.
const maxPrice = 1e6

// compilePrices checks and compiles the prices section.
func compilePrices(specs map[string]PriceSpec, unpriced string, add func(path, format string, args ...any)) Prices {
	ps := Prices{exact: make(map[string]Price, len(specs)), Unpriced: unpriced, specs: specs}
	switch ps.Unpriced {
	case "":
		ps.Unpriced = UnpricedFree
	case UnpricedFree, UnpricedRefuse:
	default:
		add("unpriced", "must be free or refuse, not %q", unpriced)
	}
	for pattern, s := range specs {
		path := "prices." + pattern
		if pattern == "" || strings.Contains(strings.TrimSuffix(pattern, "*"), "*") {
			add("prices", "bad model pattern %q: an exact name, a prefix ending in *, or *", pattern)
			continue
		}
		cached := s.Input
		if s.CachedInput != nil {
			cached = *s.CachedInput
		}
		for _, v := range []struct {
			name string
			v    float64
		}{{"input", s.Input}, {"cached_input", cached}, {"output", s.Output}} {
			if math.IsNaN(v.v) || v.v < 0 || v.v > maxPrice {
				add(path+"."+v.name, "must be a price in USD per 1M tokens, from 0 to %g", float64(maxPrice))
			}
		}
		p := Price{Input: s.Input / 1e6, CachedInput: cached / 1e6, Output: s.Output / 1e6}
		switch {
		case pattern == "*":
			ps.star = &p
		case strings.HasSuffix(pattern, "*"):
			ps.prefixes = append(ps.prefixes, pricePattern{strings.TrimSuffix(pattern, "*"), p})
		default:
			ps.exact[pattern] = p
		}
	}
	slices.SortFunc(ps.prefixes, func(a, b pricePattern) int {
		if len(a.prefix) != len(b.prefix) {
			return len(b.prefix) - len(a.prefix)
		}
		return strings.Compare(a.prefix, b.prefix)
	})
	return ps
}

// priceChanges lists the price table's changes for Diff.
func priceChanges(a, b *Prices) []string {
	var out []string
	show := func(s PriceSpec) string {
		c := s.Input
		if s.CachedInput != nil {
			c = *s.CachedInput
		}
		return fmt.Sprintf("input %g, cached_input %g, output %g", s.Input, c, s.Output)
	}
	for _, m := range union(a.specs, b.specs) {
		sa, inA := a.specs[m]
		sb, inB := b.specs[m]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("+ price %s: %s", m, show(sb)))
		case !inB:
			out = append(out, fmt.Sprintf("- price %s", m))
		case show(sa) != show(sb):
			out = append(out, fmt.Sprintf("~ price %s: %s -> %s", m, show(sa), show(sb)))
		}
	}
	if a.Unpriced != b.Unpriced {
		out = append(out, fmt.Sprintf("~ unpriced: %s -> %s", a.Unpriced, b.Unpriced))
	}
	return out
}
