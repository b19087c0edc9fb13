//go:build calibrate

package tokens

// Regenerates tables.bin, the estimator's model (both encodings in
// parallel, ~2 minutes on 2 cores):
//
//	go test -tags calibrate -run TestCalibrate -v ./policy/tokens/ -corpus DIR
//
// DIR holds natural text as CAT_NAME.txt files (UTF-8; CAT groups the
// report: en, code, json, html, num, cjk, mo). The shipped tables were
// fitted on ~75 MB found on a stock dev image:
//
//   - mo_LANG.txt: the msgstr strings of /usr/share/locale/LANG/LC_MESSAGES/*.mo
//     (Python gettext.GNUTranslations(...)._catalog), for the ~110 languages
//     with more than 20 kB;
//   - code_go/py/js/c.txt: Go sources of GOROOT/src, the Python standard
//     library, JavaScript/TypeScript and C files on disk, concatenated;
//   - json.txt: JSON files on disk; html.txt, en_twain.txt, num_pi.txt: the
//     testdata of github.com/klauspost/compress; en_docs.txt: Python's
//     NEWS, openai-go's api.md, Rust's release notes; num_math.txt: CPython's
//     math test vectors; cjk_py.txt: CPython's cjkencodings/*-utf8.txt.
//
// Each file gives 3/4 training and 1/4 validation samples (16 B to 2 KB),
// plus fuzz-style mutations; synthetic strings (random words and
// identifiers, keys, base64, hex, UUIDs, numbers, Unicode, emoji, runs,
// noise) and testdata/fuzz/FuzzEstimateBound join them. The fit and the
// final scale are logged per category; pseudo-English from a character
// trigram chain (synth-markov) is reported but not bounded: without the
// vocabulary it cannot be told from English.

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer"
)

var corpusDir = flag.String("corpus", "/tmp/corp", "directory of *.txt calibration corpora")

type sample struct {
	cat  string
	text string
}

// starts returns, per character of s, how many tokens start inside it.
func starts(c tokenizer.Codec, s string) []float64 {
	_, toks, err := c.Encode(s)
	if err != nil {
		panic(err)
	}
	at := make([]int, len(s)+1)
	off := 0
	for _, tk := range toks {
		at[off]++
		off += len(tk)
	}
	out := make([]float64, 0, len(s))
	for i, r := range s {
		n := 0
		for j := i; j < i+utf8.RuneLen(r) && j < len(s); j++ {
			n += at[j]
		}
		out = append(out, float64(n))
	}
	return out
}

func loadSamples(t *testing.T) (train, valid []sample) {
	files, _ := filepath.Glob(filepath.Join(*corpusDir, "*.txt"))
	if len(files) == 0 {
		t.Fatalf("no corpora in %s", *corpusDir)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := func(cat, s string, max int, dst *[]sample) {
		for len(s) > 0 && len(*dst) < 1<<30 {
			n := 16 + rng.IntN(2000)
			if rng.IntN(4) == 0 {
				n = 1 + rng.IntN(64)
			}
			n = min(n, len(s))
			for n < len(s) && !utf8.RuneStart(s[n]) {
				n++
			}
			*dst = append(*dst, sample{cat, s[:n]})
			s = s[n:]
			if max -= n; max <= 0 {
				return
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ToValidUTF8(string(b), "")
		if len(s) < 1000 {
			continue
		}
		cat := strings.TrimSuffix(filepath.Base(f), ".txt")
		if i := strings.IndexByte(cat, '_'); i > 0 {
			cat = cat[:i]
		}
		const budget = 300_000
		if len(s) > 2*budget {
			s = s[len(s)/2-budget : len(s)/2+budget]
		}
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
		half := len(s) * 3 / 4
		for half < len(s) && !utf8.RuneStart(s[half]) {
			half++
		}
		chunk(cat, s[:half], budget, &train)
		chunk(cat, s[half:], budget/3, &valid)
		if cat == "mo" || cat == "en" || cat == "code" {
			// fuzz-style mutations of natural text
			for k := 0; k < 200; k++ {
				i := rng.IntN(len(s))
				j := min(len(s), i+8+rng.IntN(300))
				dst := &train
				if k%4 == 0 {
					dst = &valid
				}
				*dst = append(*dst, sample{"mutated", mutate(rng, s[i:j])})
			}
		}
	}
	fz, _ := filepath.Glob("testdata/fuzz/FuzzEstimateBound/*")
	for _, f := range fz {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		q, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[len(lines)-1], "string("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for range 20 {
			train = append(train, sample{"fuzz", q})
		}
		valid = append(valid, sample{"fuzz", q})
	}
	for _, s := range train {
		if s.cat == "en" || s.cat == "code" {
			learnMarkov(s.text)
		}
	}
	for k := 0; k < *synthN; k++ {
		s := synth(rng, k%len(synthKinds))
		if rng.IntN(4) == 0 || s.cat == "synth-markov" || s.cat == "synth-runs" {
			valid = append(valid, s)
		} else {
			train = append(train, s)
		}
	}
	return train, valid
}

func mutate(rng *rand.Rand, s string) string {
	b := []byte(s)
	for n := 1 + rng.IntN(6); n > 0 && len(b) > 1; n-- {
		i, j := rng.IntN(len(b)), rng.IntN(len(b))
		if i > j {
			i, j = j, i
		}
		switch rng.IntN(6) {
		case 0:
			b[i] ^= 1 << rng.IntN(8)
		case 1:
			b = append(b[:i], append([]byte{byte(rng.IntN(256))}, b[i:]...)...)
		case 2:
			b = append(b[:i], b[j:]...)
		case 3:
			b = append(b[:j], append(append([]byte{}, b[i:j]...), b[j:]...)...)
		case 4:
			rng.Shuffle(min(j-i, 16), func(x, y int) { b[i+x], b[i+y] = b[i+y], b[i+x] })
		case 5:
			c := b[i]
			for k := 0; k < rng.IntN(12); k++ {
				b = append(b[:i], append([]byte{c}, b[i:]...)...)
			}
		}
	}
	return strings.ToValidUTF8(string(b), "")
}

var synthKinds = []string{"words", "Words", "WORDS", "camel", "alnum", "base64", "hex", "uuid", "printable",
	"numbers", "unicode", "cjk", "emoji", "space", "ascii", "bmp", "mixed", "markov", "markov", "runs", "runs", "noise", "short"}

// markov is a character trigram model of English and code: pseudo-words
// made of common letter pairs are what fuzzing finds first.
var markov = map[[2]byte][]byte{}

func learnMarkov(s string) {
	for i := 2; i < len(s); i++ {
		if s[i] < 0x80 && s[i-1] < 0x80 && s[i-2] < 0x80 {
			k := [2]byte{s[i-2], s[i-1]}
			if len(markov[k]) < 4096 {
				markov[k] = append(markov[k], s[i])
			}
		}
	}
}

func synth(rng *rand.Rand, kind int) sample {
	var b strings.Builder
	n := 8 + rng.IntN(600)
	if rng.IntN(3) == 0 {
		n = 1 + rng.IntN(24)
	}
	const lower, upper, digits = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
	pick := func(a string) byte { return a[rng.IntN(len(a))] }
	word := func(a string, n int) {
		for range n {
			b.WriteByte(pick(a))
		}
	}
	for b.Len() < n {
		switch synthKinds[kind] {
		case "words":
			word(lower, 1+rng.IntN(12))
			b.WriteByte(" ,.\n"[rng.IntN(4)])
		case "Words":
			word(upper, 1)
			word(lower, rng.IntN(12))
			b.WriteByte(' ')
		case "WORDS":
			word(upper, 1+rng.IntN(10))
			b.WriteByte(" _-"[rng.IntN(3)])
		case "camel":
			for range 1 + rng.IntN(4) {
				word(upper, 1)
				word(lower, 1+rng.IntN(8))
			}
			b.WriteByte(". ("[rng.IntN(3)])
		case "alnum":
			b.WriteString([]string{"sk-", "ghp_", "", "key=", "\""}[rng.IntN(5)])
			word(lower+upper+digits, 8+rng.IntN(60))
			b.WriteByte(' ')
		case "base64":
			word(lower+upper+digits+"+/", 4*(1+rng.IntN(80)))
			b.WriteString("==\n"[rng.IntN(3):])
		case "hex":
			word("0123456789abcdef", []int{8, 32, 40, 64}[rng.IntN(4)])
			b.WriteByte(" \n,"[rng.IntN(3)])
		case "uuid":
			fmt.Fprintf(&b, "%08x-%04x-%04x-%04x-%012x ", rng.Uint32(), rng.IntN(1<<16), rng.IntN(1<<16), rng.IntN(1<<16), rng.Int64N(1<<48))
		case "printable":
			for range 1 + rng.IntN(30) {
				b.WriteByte(byte(33 + rng.IntN(94)))
			}
			b.WriteByte(' ')
		case "numbers":
			switch rng.IntN(5) {
			case 0:
				fmt.Fprintf(&b, "%d ", rng.Int64N(1<<uint(1+rng.IntN(62))))
			case 1:
				fmt.Fprintf(&b, "%.*f, ", rng.IntN(9), (rng.Float64()-0.5)*math.Pow(10, float64(rng.IntN(12))))
			case 2:
				fmt.Fprintf(&b, "%g ", rng.NormFloat64()*1e-5)
			case 3:
				fmt.Fprintf(&b, "+1 (%03d) %03d-%04d\n", rng.IntN(1000), rng.IntN(1000), rng.IntN(10000))
			default:
				fmt.Fprintf(&b, "2025-%02d-%02dT%02d:%02d:%02d.%03dZ ", 1+rng.IntN(12), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1000))
			}
		case "unicode": // random letters of one script group
			g := groupRanges[rng.IntN(len(groupRanges))]
			for range 1 + rng.IntN(10) {
				r := g.lo + rune(rng.IntN(256))
				if unicode.IsGraphic(r) {
					b.WriteRune(r)
				}
			}
			b.WriteByte(' ')
		case "cjk":
			for range 1 + rng.IntN(20) {
				blk := [][2]int{{0x4E00, 0x5200}, {0x3040, 0xC0}, {0xAC00, 0x2BA4}, {0x3000, 0x40}, {0xFF00, 0x60}}[rng.IntN(5)]
				b.WriteRune(rune(blk[0] + rng.IntN(blk[1])))
			}
		case "emoji":
			word(lower, rng.IntN(8))
			b.WriteByte(' ')
			for range 1 + rng.IntN(5) {
				r := rune(0x1F300 + rng.IntN(0x1FB00-0x1F300))
				if !unicode.IsGraphic(r) {
					r = 0x1F600 + rune(rng.IntN(80))
				}
				b.WriteRune(r)
				switch rng.IntN(6) {
				case 0:
					b.WriteRune(0x200D)
				case 1:
					b.WriteRune(0xFE0F)
				case 2:
					b.WriteRune(0x1F3FB + rune(rng.IntN(5)))
				case 3:
					b.WriteRune(0x1F1E6 + rune(rng.IntN(26)))
					b.WriteRune(0x1F1E6 + rune(rng.IntN(26)))
				}
			}
		case "space":
			b.WriteString(strings.Repeat(" \t\n"[rng.IntN(3):][:1], 1+rng.IntN(40)))
			word(lower, rng.IntN(6))
		case "ascii": // any byte < 0x80
			for range 1 + rng.IntN(20) {
				b.WriteByte(byte(rng.IntN(128)))
			}
		case "runs": // a character or a short pattern repeated
			var p string
			switch rng.IntN(4) {
			case 0:
				p = string(rune(rng.IntN(128)))
			case 1:
				p = string(rune(0x80 + rng.IntN(0x1FFFF)))
			case 2:
				p = string(rune(33 + rng.IntN(94)))
			default:
				p = synth(rng, rng.IntN(16)).text
				p = p[:min(len(p), 1+rng.IntN(4))]
			}
			b.WriteString(strings.Repeat(strings.ToValidUTF8(p, "?"), 2+rng.IntN(60)))
			if rng.IntN(2) == 0 {
				b.WriteString(synth(rng, rng.IntN(16)).text[:0])
				word(lower+upper+digits, rng.IntN(6))
			}
		case "noise": // what fuzzers make: spaces, controls, punctuation, a few letters and digits
			for range 1 + rng.IntN(24) {
				b.WriteString([]string{" ", "  ", "\x00", "\x0f", "\r", "\n", "\t", string(rune(33 + rng.IntN(15))), string(rune(58 + rng.IntN(7))), string(rune(91 + rng.IntN(6))), string(rune(123 + rng.IntN(4))), string(rune(rng.IntN(32))), string(pick(upper)), string(pick(lower)), string(pick(digits))}[rng.IntN(15)])
			}
		case "mixed":
			for range 1 + rng.IntN(16) {
				b.WriteByte(pick(lower + upper))
			}
			b.WriteByte(" ._\n"[rng.IntN(4)])
		case "markov":
			k := [2]byte{' ', 't'}
			for range 1 + rng.IntN(200) {
				next := markov[k]
				if len(next) == 0 {
					k = [2]byte{' ', pick(lower)}
					continue
				}
				c := next[rng.IntN(len(next))]
				b.WriteByte(c)
				k = [2]byte{k[1], c}
			}
		case "short":
			s := synth(rng, rng.IntN(len(synthKinds)-1)).text
			for n := min(len(s), 1+rng.IntN(12)); ; n++ {
				if n >= len(s) || utf8.RuneStart(s[n]) {
					return sample{"synth-short", s[:min(n, len(s))]}
				}
			}
		case "bmp": // any graphic BMP or emoji character
			for range 1 + rng.IntN(10) {
				r := rune(0x80 + rng.IntN(0x1FFFF))
				if unicode.IsGraphic(r) {
					b.WriteRune(r)
				}
			}
		}
	}
	return sample{"synth-" + synthKinds[kind], b.String()}
}

func TestCalibrate(t *testing.T) {
	train, valid := loadSamples(t)
	t.Logf("%d training samples, %d validation samples", len(train), len(valid))
	encs := []tokenizer.Encoding{tokenizer.O200kBase, tokenizer.Cl100kBase}
	outs := make([][]byte, len(encs))
	var wg sync.WaitGroup
	for ei, enc := range encs {
		if *only != "" && string(enc) != *only {
			continue
		}
		wg.Go(func() { outs[ei] = calibrate(t, enc, train, valid) })
	}
	wg.Wait()
	if *only != "" {
		return
	}
	if err := os.WriteFile("tables.bin", bytes.Join(outs, nil), 0o644); err != nil {
		t.Fatal(err)
	}
}

// calibrate fits the table of one encoding and returns it serialized.
func calibrate(t *testing.T, enc tokenizer.Encoding, train, valid []sample) []byte {
	codec, err := tokenizer.Get(enc)
	if err != nil {
		t.Error(err)
		return nil
	}
	tb := new(table)
	for c := range tb.rep {
		// The most a third and later character of a run costs.
		rate := 0.0
		for _, pre := range []string{"", " ", "a", "."} {
			base, _ := codec.Count(pre + strings.Repeat(string(rune(c)), 2))
			for n := 3; n <= 300; n += 1 + n/40 {
				k, _ := codec.Count(pre + strings.Repeat(string(rune(c)), n))
				rate = max(rate, float64(k-base)/float64(n-2))
			}
		}
		tb.rep[c] = uint16(math.Ceil(rate * wOne))
	}
	// The dictionary: " word" tokens by rank.
	words := 0
	for id := uint(0); words < dictWords && id < 300000; id++ {
		tok, err := codec.Decode([]uint{id})
		if err != nil || len(tok) < 3 || tok[0] != ' ' || !eligible(tok[1:]) {
			continue
		}
		h := uint32(fnvOffset)
		for _, c := range []byte(tok[1:]) {
			h = (h ^ uint32(c)) * fnvPrime
		}
		h = max(h, 1)
		i := h & (dictSlots - 1)
		for tb.dict[i] != 0 && tb.dict[i] != h {
			i = (i + 1) & (dictSlots - 1)
		}
		tb.dict[i] = h
		words++
	}
	t.Logf("%s: %d dictionary words", enc, words)
	for r := rune(0x80); r < 0x20000; r++ {
		if r >= 0x10000 && r < 0x1F000 {
			continue
		}
		n := 4
		if !(r >= 0xD800 && r < 0xE000) {
			n, _ = codec.Count(string(r))
		}
		v := byte(min(max(n, 1), 4)-1) << (2 * (r & 3))
		if r < 0x10000 {
			tb.alone[r>>2] |= v
		} else {
			tb.emoji[(r-0x1F000)>>2] |= v
		}
	}
	w := fit(t, tb, codec, train, valid)
	var out bytes.Buffer
	out.Write(tb.alone[:])
	out.Write(tb.emoji[:])
	for i := range numW {
		v := uint16(min(math.Ceil(w[i]*wOne), math.MaxUint16))
		out.Write(binary.LittleEndian.AppendUint16(nil, v))
	}
	for _, v := range tb.rep {
		out.Write(binary.LittleEndian.AppendUint16(nil, v))
	}
	for _, v := range tb.dict {
		out.Write(binary.LittleEndian.AppendUint32(nil, v))
	}
	return out.Bytes()
}

// eligible reports whether w is "word", "Word" or "WORD" in ASCII: a piece
// both pre-tokenizers cut whole after a space.
func eligible(w string) bool {
	lower := func(c byte) bool { return c >= 'a' && c <= 'z' }
	upper := func(c byte) bool { return c >= 'A' && c <= 'Z' }
	allUpper, tailLower := true, true
	for i := 0; i < len(w); i++ {
		allUpper = allUpper && upper(w[i])
		if i > 0 || !upper(w[0]) {
			tailLower = tailLower && lower(w[i])
		}
	}
	return allUpper || tailLower
}

type obs struct {
	cat   string
	pairs []int32 // prev*numClass+cur per character
	count float64
	fixed float64 // tokens charged for periodic characters
	chars int
}

func observe(tb *table, codec tokenizer.Codec, ss []sample, S, N []float64) []obs {
	out := make([]obs, 0, len(ss))
	const gone = math.MinInt32
	for _, s := range ss {
		st := starts(codec, s.text)
		o := obs{cat: s.cat}
		wgt := 1.0
		if strings.HasPrefix(s.cat, "synth") || s.cat == "mutated" || s.cat == "fuzz" {
			wgt = 0.5
		}
		rec := make([]int32, 2*len(s.text)+1)
		_, n := tb.scan([]byte(s.text), false, rec)
		var codes []int32 // per character
		for _, p := range rec[:n] {
			if p <= visitUndo {
				for k := len(codes) - int(visitUndo-p); k < len(codes); k++ {
					codes[k] = gone
				}
				continue
			}
			codes = append(codes, p)
		}
		for i, p := range codes {
			o.count += st[i]
			switch {
			case p == gone:
			case p >= 0:
				o.pairs = append(o.pairs, p)
				if S != nil {
					S[p] += st[i] * wgt
					N[p] += wgt
				}
			case p >= -128:
				o.fixed += float64(tb.rep[-1-p]) / wOne
			default:
				o.fixed += float64(-128 - p)
			}
		}
		o.chars = len(codes)
		out = append(out, o)
	}
	return out
}

func prior(p int) float64 {
	if p >= numClass*numClass {
		return 1
	}
	cur := p % numClass
	if cur >= clUni0 && cur < clSpaces {
		return float64((cur-clUni0)%4 + 1)
	}
	return 1
}

func fit(t *testing.T, tb *table, codec tokenizer.Codec, train, valid []sample) []float64 {
	S := make([]float64, numW)
	N := make([]float64, len(S))
	tr := observe(tb, codec, train, S, N)
	va := observe(tb, codec, valid, nil, nil)
	w := make([]float64, len(S))
	const k = 4
	for p := range w {
		w[p] = (S[p] + k*prior(p)) / (N[p] + k)
	}
	report(t, codec.GetName()+" mean", w, va)
	// Sparse pair counts per training sample.
	type sp struct {
		p               []int32
		n               []float64
		count, a, fixed float64
	}
	xs := make([]sp, 0, len(tr))
	for _, o := range tr {
		if o.count == 0 {
			continue
		}
		m := map[int32]float64{}
		for _, p := range o.pairs {
			m[p]++
		}
		x := sp{count: o.count, a: catWeight(o.cat) / o.count, fixed: o.fixed}
		for p, n := range m {
			x.p = append(x.p, p)
			x.n = append(x.n, n)
		}
		xs = append(xs, x)
	}
	g := make([]float64, len(w))
	h := make([]float64, len(w))
	floors := make([]float64, len(w))
	for p := range w {
		floors[p] = floorOf(p)
		w[p] = max(w[p], floors[p])
	}

	for it := 0; it < *iters; it++ {
		clear(g)
		viol := 0
		for _, x := range xs {
			e := x.fixed
			for i, p := range x.p {
				e += x.n[i] * w[p]
			}
			e = headroom(e)
			c := x.a
			if e < x.count*(1+*rel)+*margin+*zK*math.Sqrt(x.count) {
				c -= *lambda / x.count
				if e < x.count {
					viol++
				}
			}
			for i, p := range x.p {
				g[p] += c * x.n[i]
			}
		}
		for p := range w {
			if g[p] == 0 {
				continue
			}
			h[p] += g[p] * g[p]
			w[p] = max(floors[p], w[p]-*eta*g[p]/math.Sqrt(h[p]))
		}
		if it%100 == 0 || it == *iters-1 {
			t.Logf("%s iter %d: %d of %d training samples under", codec.GetName(), it, viol, len(xs))
		}
	}
	report(t, codec.GetName()+" fit", w, va)
	if *worst > 0 {
		idx := make([]int, 0, len(va))
		for i, o := range va {
			if (*worstCat == "" && natural(o.cat) || *worstCat == "all" && o.cat != "synth-markov" || o.cat == *worstCat) && o.count > 0 {
				idx = append(idx, i)
			}
		}
		r := func(i int) float64 { return headroom(estimate(w, va[i])) / va[i].count }
		sort.Slice(idx, func(a, b int) bool { return r(idx[a]) < r(idx[b]) })
		for _, i := range idx[:*worst] {
			txt := valid[i].text
			if len(txt) > 300 {
				txt = txt[:300]
			}
			t.Logf("worst %.3f est %.1f count %.0f %s %q", r(i), estimate(w, va[i]), va[i].count, va[i].cat, txt)
		}
	}
	// The smallest scale that bounds every validation sample but the
	// pseudo-English ones, plus -scale headroom, goes into the table.
	for m := 1.0; ; m += 0.01 {
		under := 0
		var est, cnt [3]float64
		for _, o := range va {
			if o.cat == "synth-markov" {
				continue // adversarial, reported above
			}
			e := math.Ceil(headroom(estimate(w, o) * m))
			if e < o.count {
				under++
			}
			if i, ok := map[string]int{"en": 0, "code": 1, "json": 2}[o.cat]; ok {
				est[i] += e
				cnt[i] += o.count
			}
		}
		if under == 0 {
			t.Logf("%s: scale %.2f bounds all; en %.3f code %.3f json %.3f; shipping scale %.2f",
				codec.GetName(), m, est[0]/cnt[0], est[1]/cnt[1], est[2]/cnt[2], m+*scale)
			for p := range w {
				w[p] *= m + *scale
			}
			return w
		}
	}
}

var (
	worstCat = flag.String("worstcat", "", "category for -worst (default: natural ones)")
	only     = flag.String("enc", "", "calibrate only this encoding (no tables.bin written)")
	synthN   = flag.Int("synth", 30000, "synthetic samples")
	sqrtK    = flag.Float64("sqrt", estSqrt, "headroom per square root of the estimate")
	scale    = flag.Float64("scale", 0.02, "headroom added to the least scale that bounds the validation samples")
	worst    = flag.Int("worst", 0, "log the worst natural validation samples")
	zK       = flag.Float64("z", 0, "headroom per square root of the count the optimizer aims for")
	rel      = flag.Float64("rel", 0.1, "relative headroom the optimizer aims for")
	iters    = flag.Int("iters", 1500, "optimizer iterations")
	eta      = flag.Float64("eta", 0.02, "optimizer step")
	lambda   = flag.Float64("lambda", 100, "penalty per token under")
	margin   = flag.Float64("margin", 0.5, "tokens of headroom the optimizer aims for")
)

func natural(cat string) bool {
	return !strings.HasPrefix(cat, "synth") && cat != "mutated" && cat != "mo"
}

// floorOf is the least weight of p that the pre-tokenizers of both
// encodings force: a text's first character, and the boundaries around
// digits (runs split every three), letters and ASCII punctuation.
func floorOf(p int) float64 {
	letter := func(c int) bool { return c >= 1 && c <= 52 }
	switch {
	case p >= numClass*numClass:
		return 0
	}
	prev, cur := p/numClass, p%numClass
	ascii := cur < clUni0 || cur == clSpaces
	switch {
	case prev == clStart, prev == clCtrl, cur == clCtrl: // control characters stand alone
		return 1
	case prev == clDigit && cur == clDigit:
		return 1.0 / 3
	case prev == clDigit && ascii, cur == clDigit:
		return 1
	case letter(prev) && ascii && !letter(cur):
		return 1
	case prev >= clPunct0 && prev < clUni0 && cur == clSpace:
		return 1
	}
	return 0
}

// catWeight is how much tightness on a category matters.
func catWeight(cat string) float64 {
	switch {
	case cat == "en", cat == "code", cat == "json", cat == "html":
		return 4
	case strings.HasPrefix(cat, "synth"), cat == "mutated", cat == "fuzz":
		return 0.25
	}
	return 1
}

func estimate(w []float64, o obs) float64 {
	s := o.fixed
	for _, p := range o.pairs {
		s += w[p]
	}
	return s
}

func report(t *testing.T, name string, w []float64, va []obs) {
	type agg struct {
		est, cnt float64
		ratios   []float64
		under    int
	}
	cats := map[string]*agg{}
	for _, o := range va {
		a := cats[o.cat]
		if a == nil {
			a = &agg{}
			cats[o.cat] = a
		}
		e := estimate(w, o)
		a.est += e
		a.cnt += o.count
		if o.count > 0 {
			a.ratios = append(a.ratios, math.Ceil(headroom(e))/o.count)
		}
		if math.Ceil(headroom(e)) < o.count {
			a.under++
		}
	}
	names := make([]string, 0, len(cats))
	for n := range cats {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := cats[n]
		sort.Float64s(a.ratios)
		q := func(f float64) float64 { return a.ratios[int(f*float64(len(a.ratios)-1))] }
		t.Logf("%s %-18s n=%5d total ratio %.3f  min %.3f p1 %.3f p50 %.3f  under %d", name, n, len(a.ratios), a.est/a.cnt, q(0), q(0.01), q(0.5), a.under)
	}
}

const constSlack = estPerText

// headroom is the estimate of a text whose weights add up to e.
func headroom(e float64) float64 { return e + constSlack + *sqrtK*math.Sqrt(e) }
