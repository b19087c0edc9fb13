// Package tokens estimates and counts the prompt tokens of OpenAI-shaped
// requests, so that Sluice can reserve tokens per user before a call.
//
// Two prices (DESIGN.md, "Token counting is expensive; spend it only where
// it decides something"):
//
//   - Estimate is a cheap calibrated upper bound: one pass over the body, no
//     tokenizer, no allocation, ~3 µs for a 1 KB chat body (~0.6 µs when
//     only its last message is new: it memoizes its price of each
//     message). On realistic text it exceeds the exact count by ~10-30%
//     (o200k_base: English and code ~1.2x, JSON ~1.17x, CJK ~1.25x, other
//     scripts up to ~1.5x) and was never below it in validation;
//     adversarial strings (pseudo-words, punctuation noise) can exceed it,
//     by at most a quarter plus 2 tokens. It is what buckets reserve.
//   - Count runs the real BPE tokenizer (tiktoken-go) with OpenAI's chat
//     accounting: ~70 µs per KB of new text. It memoizes per message, so a
//     chat that resends its history pays only for the newest message, and
//     Estimate reuses those exact counts too (~0.5 µs for a counted 1 KB
//     body). Spend it when an estimate is close enough to a bucket's
//     headroom to change the decision, then settle from the upstream's usage.
//
// Both see only what the request carries: a Responses request that names a
// previous_response_id or item references is billed for history they cannot
// see, and settlement from the upstream's usage corrects it.
package tokens

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"

	"github.com/tiktoken-go/tokenizer"
)

// Kind is the endpoint a request body belongs to.
type Kind uint8

const (
	Chat        Kind = iota // /v1/chat/completions: messages, tools, functions
	Completions             // /v1/completions: prompt (string, strings or token ids), suffix
	Embeddings              // /v1/embeddings: input (string, strings or token ids)
	Responses               // /v1/responses: instructions, input (string or items), tools
)

// Encoding names the tokenizer a model uses. The zero value is Fallback.
type Encoding uint8

const (
	// Fallback is for models whose tokenizer Sluice does not ship: open
	// models behind vLLM or Ollama (Llama, Qwen, Mistral, Gemma, DeepSeek),
	// other vendors' models behind an adapter, unknown names. It counts
	// with o200k_base and multiplies the total by 5/4 (rounded up): modern
	// vocabularies (100k-260k entries) stay within that on English and
	// code; small 32k vocabularies on non-Latin scripts can exceed it, and
	// settlement from usage corrects what the reservation missed.
	Fallback   Encoding = iota
	O200kBase           // o200k_base: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4, chatgpt-4o, gpt-oss
	Cl100kBase          // cl100k_base: gpt-4, gpt-4-turbo, gpt-3.5, text-embedding-3, text-embedding-ada-002
)

// String returns the encoding's tiktoken name ("fallback" for Fallback).
func (e Encoding) String() string {
	switch e {
	case O200kBase:
		return "o200k_base"
	case Cl100kBase:
		return "cl100k_base"
	}
	return "fallback"
}

// EncodingFor returns the encoding of a model name. It ignores ASCII case,
// a fine-tune prefix ("ft:gpt-4o-mini:org::id") and a provider prefix
// ("openai/gpt-4o", "azure/gpt-35-turbo"). It does not allocate.
func EncodingFor(model string) Encoding { return encodingFor(model) }

func encodingFor[T string | []byte](m T) Encoding {
	if hasPrefix(m, "ft:") {
		m = m[3:]
	}
	for i := len(m) - 1; i >= 0; i-- {
		if m[i] == '/' {
			m = m[i+1:]
			break
		}
	}
	switch {
	case hasPrefix(m, "gpt-4o"), hasPrefix(m, "gpt-4.1"), hasPrefix(m, "gpt-4.5"), hasPrefix(m, "gpt-5"),
		hasPrefix(m, "chatgpt-4o"), hasPrefix(m, "gpt-oss"),
		len(m) >= 2 && lower(m[0]) == 'o' && (m[1] == '1' || m[1] == '3' || m[1] == '4') &&
			(len(m) == 2 || m[2] == '-' || m[2] == '.'):
		return O200kBase
	case hasPrefix(m, "gpt-4"), hasPrefix(m, "gpt-3.5"), hasPrefix(m, "gpt-35"),
		hasPrefix(m, "text-embedding-3"), hasPrefix(m, "text-embedding-ada-002"),
		hasPrefix(m, "davinci-002"), hasPrefix(m, "babbage-002"):
		return Cl100kBase
	}
	return Fallback
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasPrefix reports whether s starts with the lower-case ASCII p, ignoring case.
func hasPrefix[T string | []byte](s T, p string) bool {
	if len(s) < len(p) {
		return false
	}
	for i := range len(p) {
		if lower(s[i]) != p[i] {
			return false
		}
	}
	return true
}

// OpenAI's chat accounting ("How to count tokens with tiktoken", OpenAI
// cookbook, for gpt-3.5-turbo-0613 and later, gpt-4, gpt-4o): each message
// costs 3 tokens (<|start|>, role separator, <|end|>) plus its role and
// content, a name costs its tokens plus 1, and every reply is primed with
// 3 (<|start|>assistant<|message|>). Sluice applies the same to Responses
// items and instructions. Tool calls, tool definitions, images and other
// parts have no published accounting; the choices below are documented
// approximations.
const (
	perMessage  = 3   // tokens framing each message
	perName     = 1   // extra tokens for a message's name
	replyPrimer = 3   // tokens priming the reply
	perToolCall = 3   // tokens framing each tool or function call (approximation)
	toolsHeader = 8   // tokens introducing tool definitions, which are counted as their JSON text (approximation)
	estPerText  = 2   // Estimate's headroom per text field, part of the calibrated model
	estSqrt     = 2.0 // Estimate's headroom per square root of its text weights, part of the calibrated model
)

// Defaults for Options.
const (
	DefaultCacheEntries = 1 << 16 // memoized message counts and estimates (512 KiB and 1 MiB)
	DefaultImageTokens  = 1445    // gpt-4o high detail at its largest: 85 + 170 per 512 px tile, 8 tiles
)

// Options configure a Counter. The zero value uses the defaults.
type Options struct {
	// CacheEntries is how many message counts Count memoizes (8 bytes
	// each) and how many message estimates Estimate memoizes (16 bytes
	// each), rounded up to a power of two, at most 1<<24. 0 means
	// DefaultCacheEntries; negative disables both memos.
	CacheEntries int
	// ImageTokens is the prompt tokens charged for each image part (and
	// each audio or file part): Sluice never fetches the image to learn
	// its size. 0 means DefaultImageTokens; a "low" detail image costs 1/17
	// of it (85 of 1445, as for gpt-4o). Raise it for models that price
	// images higher (gpt-4o-mini bills an image as 2833 + 5667 per tile).
	ImageTokens int64
}

// ErrBody reports a request body Count could not parse.
var ErrBody = errors.New("tokens: malformed request body")

// Counter estimates and counts prompt tokens. It is safe for concurrent
// use; the zero value works, without a memo and with default options.
type Counter struct {
	memo        *memo
	est         *estMemo
	imageTokens int64
	hits, miss  atomic.Uint64
}

// NewCounter returns a Counter configured by opts.
func NewCounter(opts Options) *Counter {
	c := &Counter{imageTokens: opts.ImageTokens}
	switch n := opts.CacheEntries; {
	case n == 0:
		c.memo, c.est = newMemo(DefaultCacheEntries), newEstMemo(DefaultCacheEntries)
	case n > 0:
		c.memo, c.est = newMemo(n), newEstMemo(n)
	}
	return c
}

// Stats are a Counter's memo counters since it was made.
type Stats struct {
	Hits   uint64 // messages (and other units) whose count came from the memo
	Misses uint64 // units tokenized by Count
}

// Stats returns the memo counters.
func (c *Counter) Stats() Stats { return Stats{c.hits.Load(), c.miss.Load()} }

// Estimate returns a cheap upper bound of the prompt tokens of body, a
// request of the given kind, for the encoding of the body's "model" (see
// EstimateFor when routing changes the model): Count's accounting with each
// text priced by the calibrated model, or exactly when Count has memoized
// it. See the package doc for how tight and how safe it is. It never
// allocates and never fails: a body it cannot parse is priced as text.
func (c *Counter) Estimate(kind Kind, body []byte) int64 {
	// Price with o200k_base's table while looking for the model; only a
	// cl100k_base model needs a second walk.
	w := walker{c: c, t: tables[0], enc: O200kBase, model: true}
	fixed, ok := w.request(kind, body)
	enc := encodingFor(w.modelName)
	if enc == Cl100kBase {
		return c.EstimateFor(enc, kind, body)
	}
	return scaleFor(enc, w.finish(fixed, ok, body))
}

// EstimateFor is Estimate for the given encoding, whatever the body's
// model says: an upper bound of Count for any model of that encoding.
func (c *Counter) EstimateFor(enc Encoding, kind Kind, body []byte) int64 {
	w := walker{c: c, t: tables[tableIndex(base(enc))], enc: base(enc)}
	fixed, ok := w.request(kind, body)
	return scaleFor(enc, w.finish(fixed, ok, body))
}

// finish turns an estimate walk's sum into whole tokens; a body the walk
// could not parse is priced as text.
func (w *walker) finish(fixed uint64, ok bool, body []byte) int64 {
	if !ok {
		w.stat, _ = w.t.scan(body, false, nil)
		fixed = w.stat + estPerText*tok
	}
	return w.round(fixed)
}

// round adds the square-root headroom to an estimate and rounds it up to
// whole tokens.
func (w *walker) round(fixed uint64) int64 {
	return int64(math.Ceil((float64(fixed) + estSqrt*math.Sqrt(float64(w.stat)*wOne)) / wOne))
}

// EstimateText returns an upper bound of the tokens of text (raw, not
// JSON-escaped) in encoding e, as Estimate prices text: for a completion
// cut short before the upstream reported usage.
func (e Encoding) EstimateText(text []byte) int64 {
	w := walker{t: tables[tableIndex(base(e))]}
	w.stat, _ = w.t.scan(text, false, nil)
	return scaleFor(e, w.round(w.stat+estPerText*tok))
}

// EstimateText returns an upper bound of the tokens of text (raw, not
// JSON-escaped) in any encoding, the largest of the three: for a
// completion cut short before the upstream reported usage, when the
// model's encoding is not at hand.
func EstimateText(text []byte) int64 {
	return max(Fallback.EstimateText(text), Cl100kBase.EstimateText(text))
}

// Count returns the exact prompt tokens of body, a request of the given
// kind, for model, as OpenAI bills them. Chat follows OpenAI's published
// accounting (cookbook "How to count tokens with tiktoken"; its example
// counts 129 for gpt-4 and 124 for gpt-4o, as the API reports): each
// message 3 tokens + its role + its content, a name its tokens + 1, and 3
// priming the reply. Responses items and instructions count as messages;
// completion prompts and embedding inputs count their tokens, token-id
// inputs their length. Without published accounting, approximations: a
// tool call 3 + name + arguments, tool definitions 8 + their JSON, an
// image (or audio, file) part Options.ImageTokens. Fallback models get
// the 5/4 factor. The first Count for an encoding builds its
// vocabulary (~50 ms for o200k_base, ~30 ms for cl100k_base, ~10 MB for
// both): call Count once per encoding at startup to keep that off the
// request path. It returns ErrBody when body is not a JSON object.
func (c *Counter) Count(kind Kind, model string, body []byte) (int64, error) {
	enc := EncodingFor(model)
	w := walker{c: c, codec: codec(base(enc)), enc: base(enc)}
	fixed, ok := w.request(kind, body)
	if !ok {
		return 0, ErrBody
	}
	if w.err != nil {
		return 0, w.err
	}
	return scaleFor(enc, int64(fixed>>wShift)), nil
}

// base is the encoding whose tokenizer and tables serve e.
func base(e Encoding) Encoding {
	if e == Fallback {
		return O200kBase
	}
	return e
}

// tables index: o200k_base, cl100k_base.
func tableIndex(e Encoding) int { return int(e) - 1 }

// scaleFor applies Fallback's safety factor.
func scaleFor(e Encoding, n int64) int64 {
	if e == Fallback {
		return (n*5 + 3) / 4
	}
	return n
}

var codecs = [2]func() tokenizer.Codec{
	sync.OnceValue(func() tokenizer.Codec { return mustCodec(tokenizer.O200kBase) }),
	sync.OnceValue(func() tokenizer.Codec { return mustCodec(tokenizer.Cl100kBase) }),
}

func mustCodec(e tokenizer.Encoding) tokenizer.Codec {
	c, err := tokenizer.Get(e)
	if err != nil {
		panic(err) // both encodings are compiled into tiktoken-go
	}
	return c
}

// codec returns the tokenizer of a base encoding, loading it on first use.
func codec(e Encoding) tokenizer.Codec { return codecs[tableIndex(e)]() }
