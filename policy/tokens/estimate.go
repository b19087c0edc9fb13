package tokens

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"unicode/utf8"
)

// The estimator prices text without the tokenizer, in one pass, from
// tables fitted by calibrate_test.go (tables.bin, one model per encoding):
//
//   - A bigram model of token starts: every character adds
//     w[class(previous)][class(this)], the calibrated number of tokens that
//     start inside it in that context. Token boundaries are decided mostly
//     by the pair around them: pre-tokenizers split at class changes, BPE
//     merges common pairs. Classes: each ASCII letter (bigram statistics
//     tell a word from a random string), digits, each punctuation byte,
//     space, a space after a space, \t, \n, \r, control bytes; other
//     characters by script group (31) and by how many tokens the character
//     alone encodes to (1-4: a rare CJK character is 2-3, a common one 1).
//     Pairs of letters also key on how long the letter run is so far.
//   - A dictionary of the 8192 most frequent " word" tokens: a known word
//     is one token, exactly, so its inner letters cost nothing; the weights
//     are fitted on what is left (rare words, other languages, identifiers).
//   - Repeats: runs and short periods, which BPE handles unevenly, are
//     priced apart (see scan).
//   - Headroom: Estimate adds estPerText per text field and estSqrt times
//     the square root of the summed weights (their error grows like a sum
//     of independent ones), rounded up.
//
// The weights minimise the estimate over natural text subject to staying
// above the exact count on every training sample (~70k: natural text in
// ~110 languages, code, JSON, numbers, keys, hashes, emoji, mutations),
// then are scaled until every validation sample is bounded too. Structural
// boundaries the pre-tokenizers force (a text's first character, around
// digits, after letters) keep weight 1, so digit runs, for one, are
// bounded exactly.
const (
	clStart   = 0                    // before the first character of a text
	clDigit   = 53                   // 0-9
	clSpace   = 54                   // ' '
	clLF      = 55                   // '\n'
	clTab     = 56                   // '\t'
	clCR      = 57                   // '\r'
	clCtrl    = 58                   // other C0 controls and DEL
	clPunct0  = 59                   // 32 ASCII punctuation bytes follow
	clUni0    = 91                   // non-ASCII: clUni0 + group*4 + tokens-1
	numGroups = 31                   // script groups, see groupRanges
	clSpaces  = clUni0 + 4*numGroups // a space after a space (the run's last one starts a token when a word follows)
	numClass  = clSpaces + 1
	numRuns   = 4                                 // a pair of ASCII letters also keys on the letter run's length so far: 2, 3, 4, 5+
	numW      = numClass*numClass + numRuns*52*52 // weights; table.w is indexed with a uint16
	_         = uint16(numW - 1)
	wShift    = 12 // weights are fixed point, 1/4096 token
	wOne      = 1 << wShift
)

// asciiClass maps a byte < 0x80 to its class.
var asciiClass = func() (t [128]uint8) {
	p := uint8(clPunct0)
	for b := range 128 {
		switch c := byte(b); {
		case c >= 'a' && c <= 'z':
			t[b] = 1 + c - 'a'
		case c >= 'A' && c <= 'Z':
			t[b] = 27 + c - 'A'
		case c >= '0' && c <= '9':
			t[b] = clDigit
		case c == ' ':
			t[b] = clSpace
		case c == '\n':
			t[b] = clLF
		case c == '\t':
			t[b] = clTab
		case c == '\r':
			t[b] = clCR
		case c < 0x20 || c == 0x7f:
			t[b] = clCtrl
		default:
			t[b] = p
			p++
		}
	}
	return t
}()

// groupRanges lists script groups by first code point, sorted; a group runs
// to the next entry. Scripts that tokenize differently get their own group.
var groupRanges = [...]struct {
	lo rune
	g  uint8
}{
	{0x80, 0}, {0xC0, 1}, {0x250, 2}, {0x370, 3}, {0x400, 4}, {0x530, 5}, {0x590, 6}, {0x600, 7},
	{0x700, 8}, {0x750, 7}, {0x780, 8}, {0x8A0, 7}, {0x900, 9}, {0x980, 10}, {0xA00, 11}, {0xB00, 12},
	{0xC00, 13}, {0xD00, 14}, {0xE00, 15}, {0xE80, 16}, {0x1000, 17}, {0x10A0, 18}, {0x1100, 19},
	{0x1780, 20}, {0x18B0, 21}, {0x1AB0, 2}, {0x1B00, 21}, {0x1C80, 4}, {0x1C90, 18}, {0x1CC0, 21},
	{0x1DC0, 2}, {0x1E00, 1}, {0x1F00, 3}, {0x2000, 22}, {0x2070, 23}, {0x20D0, 2}, {0x2100, 23},
	{0x2C00, 21}, {0x2C60, 1}, {0x2C80, 21}, {0x2D00, 18}, {0x2D30, 21}, {0x2DE0, 4}, {0x2E00, 22},
	{0x2E80, 24}, {0x3400, 25}, {0xA000, 27}, {0xA640, 4}, {0xA6A0, 27}, {0xA720, 1}, {0xA800, 27},
	{0xAC00, 26}, {0xD7B0, 27}, {0xF900, 25}, {0xFB00, 1}, {0xFB10, 6}, {0xFB50, 7}, {0xFE00, 28},
	{0xFE70, 7}, {0xFF00, 28}, {0x10000, 30}, {0x1F000, 29}, {0x1FB00, 30},
}

// groupOf16 maps a BMP code point >> 4 to its group.
var groupOf16 = func() (t [0x1000]uint8) {
	j := 0
	for i := range t {
		r := rune(i << 4)
		for j+1 < len(groupRanges) && groupRanges[j+1].lo <= r {
			j++
		}
		t[i] = groupRanges[j].g
	}
	return t
}()

// table is the calibrated model of one encoding.
type table struct {
	alone [0x10000 / 4]byte // BMP: tokens-1 the character alone encodes to, 2 bits each
	emoji [0x1000 / 4]byte  // same for U+1F000..U+1FFFF
	w     [1 << 16]uint16   // weight[prev*numClass+cur], then the letter-run pairs, numW in all (1/4096 token); sized so a uint16 index needs no bounds check
	rep   [128]uint16       // weight of an ASCII character repeated a third time or more; 1/4096 token
	dict  [dictSlots]uint32 // known words: FNV-1a hashes of letter runs that with a space before them are one token
}

// The dictionary holds the dictWords most frequent (lowest-ranked) tokens
// of the form " word", " Word" or " WORD" (ASCII letters, two or more): a
// letter run found in it, after a space and before anything but a letter
// or an apostrophe, is a pre-tokenizer piece and one token, exactly, so
// its inner letters cost nothing. Other words pay the model's weights,
// which are fitted on what is left: rare words, other languages, random
// strings.
const (
	dictWords = 8192
	dictSlots = 2 * dictWords // open addressing, linear probing; 0 is empty
	fnvOffset = 2166136261
	fnvPrime  = 16777619
)

// known reports whether the letter run hashed to h is in the dictionary.
func (t *table) known(h uint32) bool {
	h = max(h, 1)
	for i := h & (dictSlots - 1); ; i = (i + 1) & (dictSlots - 1) {
		switch t.dict[i] {
		case h:
			return true
		case 0:
			return false
		}
	}
}

//go:embed tables.bin
var tablesBin []byte

// tables holds the models of o200k_base and cl100k_base, in that order.
var tables = func() (t [2]*table) {
	b := tablesBin
	for i := range t {
		t[i] = new(table)
		if len(b) < len(t[i].alone)+len(t[i].emoji)+2*numW+2*len(t[i].rep)+4*len(t[i].dict) {
			// Missing or stale tables.bin (regenerate with calibrate_test.go):
			// fall back to one token per byte, the loosest true bound.
			t[i].fillBytes()
			continue
		}
		b = b[copy(t[i].alone[:], b):]
		b = b[copy(t[i].emoji[:], b):]
		for j := range numW {
			t[i].w[j] = binary.LittleEndian.Uint16(b[2*j:])
		}
		b = b[2*numW:]
		for j := range t[i].rep {
			t[i].rep[j] = binary.LittleEndian.Uint16(b[2*j:])
		}
		b = b[2*len(t[i].rep):]
		for j := range t[i].dict {
			t[i].dict[j] = binary.LittleEndian.Uint32(b[4*j:])
		}
		b = b[4*len(t[i].dict):]
	}
	return t
}()

// fillBytes makes t charge one token per byte.
func (t *table) fillBytes() {
	for i := range t.alone {
		t.alone[i] = 0xff
	}
	for i := range t.emoji {
		t.emoji[i] = 0xff
	}
	for i := range t.rep {
		t.rep[i] = wOne
	}
	for i := range numW {
		t.w[i] = wOne
		if cur := i % numClass; i < numClass*numClass && cur >= clUni0 && cur < clSpaces {
			t.w[i] = wOne * 4
		}
	}
}

// uniClass returns the class of a non-ASCII rune.
func (t *table) uniClass(r rune) uint8 {
	var g, n uint8
	switch {
	case r < 0x10000:
		g = groupOf16[r>>4]
		n = t.alone[r>>2] >> (2 * (r & 3)) & 3
		if r >= 0xD800 && r < 0xE000 {
			n = 3 // never produced by a decoder; treat as worst case
		}
	case r >= 0x1F000 && r < 0x20000:
		g, n = 29, t.emoji[(r-0x1F000)>>2]>>(2*(r&3))&3
	default:
		g, n = 30, 3
	}
	return clUni0 + 4*g + n
}

// scan adds up the weights of the text in s (raw bytes, or the inside of a
// JSON string literal when escaped is true, decoding \n, \", \uXXXX...)
// and returns the sum in 1/4096 token.
//
// Text that repeats with a short period is not what the model learned
// from, and BPE handles it unevenly: a character three or more times in a
// row costs what long runs of it measure (ASCII; other characters the
// tokens they encode to alone), and a character that ends eight with a
// period of 2, 3 or 4 ("abababab", "  x  x  ") costs its bytes, a true
// bound (a token covers at least one byte).
//
// rec, when not nil (calibration), receives what every character cost:
// w[i] for i >= 0, rep[-1-i] for -128 <= i < 0, -128-i tokens below that,
// and visitUndo-n when the last n characters turn out to cost nothing (a
// known word); it needs room for 2*len(s)+1 entries. scan returns how many
// it wrote.
func (t *table) scan(s []byte, escaped bool, rec []int32) (uint64, int) {
	st := scanState{hist: ^uint64(0), prev: clStart}
	for i := 0; i < len(s); {
		if rec == nil {
			if i = t.fast(&st, s, i, escaped); i == len(s) {
				break
			}
		}
		r, n := rune(s[i]), 1
		switch {
		case r >= utf8.RuneSelf:
			r, n = utf8.DecodeRune(s[i:])
		case r == '\\' && escaped:
			r, n = unescape(s[i:])
		}
		i += n
		t.step(&st, r, rec)
	}
	t.step(&st, -1, rec) // the end closes a letter run
	return st.sum, st.n
}

// scanState is scan's state between characters.
type scanState struct {
	sum, runW uint64 // runW: the cost of the current letter run's inner letters
	hist      uint64 // the last 8 characters, a byte each (non-ASCII folded), most recent lowest
	wh        uint32 // FNV-1a hash of the current letter run
	prev, run int32  // previous class; letters in the current run
	spaced    bool   // the current letter run follows a space
	n         int    // entries written to rec
}

// step prices one character (r < 0: the end of the text).
func (t *table) step(st *scanState, r rune, rec []int32) {
	var cl int32
	switch {
	case r < 0:
		cl = clStart
	case r < utf8.RuneSelf:
		cl = int32(asciiClass[r])
	default:
		cl = int32(t.uniClass(r))
	}
	if cl == clSpace && (st.prev == clSpace || st.prev == clSpaces) {
		cl = clSpaces
	}
	idx := st.prev*numClass + cl
	if uint32(cl-1) < 52 {
		if st.run++; st.run == 1 {
			st.wh, st.runW, st.spaced = fnvOffset, 0, st.prev == clSpace || st.prev == clSpaces
		} else {
			idx = numClass*numClass + ((min(st.run, numRuns+1)-2)*52+st.prev-1)*52 + cl - 1
		}
		st.wh = (st.wh ^ uint32(r)) * fnvPrime
	} else if st.run > 0 {
		if st.run > 1 && st.spaced && r < utf8.RuneSelf && r != '\'' && t.known(st.wh) {
			st.sum -= st.runW
			if rec != nil {
				rec[st.n] = visitUndo - (st.run - 1)
				st.n++
			}
		}
		st.run = 0
	}
	if r < 0 {
		return
	}
	c := uint64(r)
	if r >= utf8.RuneSelf {
		c = 0x80 | uint64(r)*0x9e3779b1>>25&0x7f
	}
	st.hist = st.hist<<8 | c
	w := uint64(t.w[uint16(idx)])
	if tripled, periodic := repeats(st.hist); tripled || periodic {
		idx, w = t.repeated(r, cl, tripled)
	}
	st.sum += w
	if st.run > 1 {
		st.runW += w
	}
	if rec != nil {
		rec[st.n] = idx
		st.n++
	}
	st.prev = cl
}

// fast is step for a stretch of plain ASCII from s[i] on, specialized and
// free of calls so that its state stays in registers; it returns where it
// stopped (a non-ASCII byte, an escape, or the end).
func (t *table) fast(st *scanState, s []byte, i int, escaped bool) int {
	if escaped {
		if j := bytes.IndexByte(s[i:], '\\'); j >= 0 {
			s = s[:i+j]
		}
	}
	sum, runW, hist, wh, prev, run, spaced := st.sum, st.runW, st.hist, st.wh, st.prev, st.run, st.spaced
	for i < len(s) {
		c := s[i]
		if c >= utf8.RuneSelf {
			break
		}
		cl := int32(asciiClass[c])
		if run == 0 && uint32(cl-1) < 52 && (prev == clSpace || prev == clSpaces) {
			// A whole known word costs what its first letter does.
			j, h, hh := i, uint32(fnvOffset), hist
			for j < len(s) && uint32(asciiClass[s[j]&0x7f]-1) < 52 && s[j] < utf8.RuneSelf {
				h = (h ^ uint32(s[j])) * fnvPrime
				hh = hh<<8 | uint64(s[j])
				j++
			}
			if j-i > 1 && j < len(s) && s[j] < utf8.RuneSelf && s[j] != '\'' && t.known(h) {
				hist = hist<<8 | uint64(c)
				w := uint64(t.w[uint16(prev*numClass+cl)])
				if tripled, periodic := repeats(hist); tripled {
					w = uint64(t.rep[c])
				} else if periodic {
					w = wOne
				}
				sum += w
				hist, prev, i = hh, int32(asciiClass[s[j-1]]), j
				continue
			}
		}
		if cl == clSpace && (prev == clSpace || prev == clSpaces) {
			cl = clSpaces
		}
		idx := prev*numClass + cl
		if uint32(cl-1) < 52 {
			if run++; run == 1 {
				wh, runW, spaced = fnvOffset, 0, prev == clSpace || prev == clSpaces
			} else {
				idx = numClass*numClass + ((min(run, numRuns+1)-2)*52+prev-1)*52 + cl - 1
			}
			wh = (wh ^ uint32(c)) * fnvPrime
		} else if run > 0 {
			if run > 1 && spaced && c != '\'' && t.known(wh) {
				sum -= runW
			}
			run = 0
		}
		hist = hist<<8 | uint64(c)
		w := uint64(t.w[uint16(idx)])
		// Is one of the four characters before equal to this one? (SWAR
		// zero-byte test; a rare false hit only costs the exact test.)
		if x := uint32(hist>>8) ^ uint32(c)*0x01010101; (x-0x01010101)&^x&0x80808080 != 0 {
			if tripled, periodic := repeats(hist); tripled {
				w = uint64(t.rep[c])
			} else if periodic {
				w = wOne
			}
		}
		sum += w
		if run > 1 {
			runW += w
		}
		prev = cl
		i++
	}
	st.sum, st.runW, st.hist, st.wh, st.prev, st.run, st.spaced = sum, runW, hist, wh, prev, run, spaced
	return i
}

// repeats reports whether the newest character of hist is the third in a
// row, or ends eight characters with a period of 2, 3 or 4.
func repeats(hist uint64) (tripled, periodic bool) {
	return (hist^hist>>8)&0xffff == 0,
		(hist^hist>>16)&0xffff_ffff_ffff == 0 || (hist^hist>>24)&0xff_ffff_ffff == 0 || (hist^hist>>32)&0xffff_ffff == 0
}

// repeated prices a character of a repeat: the third or later of a run
// costs what long runs of it measure (ASCII), or the tokens it encodes to
// alone; a periodic one costs its bytes. It returns rec's code and the
// weight.
func (t *table) repeated(r rune, cl int32, tripled bool) (int32, uint64) {
	switch {
	case tripled && r < utf8.RuneSelf:
		return -1 - r, uint64(t.rep[r])
	case tripled:
		n := 1 + (cl-clUni0)%4
		return -128 - n, uint64(n) * wOne
	}
	n := int32(utf8.RuneLen(r))
	return -128 - n, uint64(n) * wOne
}

// visitUndo - n in rec means the last n characters cost nothing after all
// (a known word).
const visitUndo = -1 << 20
