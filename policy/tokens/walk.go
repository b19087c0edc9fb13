package tokens

import (
	"fmt"

	"github.com/tiktoken-go/tokenizer"
)

// walker prices one request body, in 1/4096 token: with the calibrated
// table t (Estimate) or with the tokenizer (Count). Both walk the same code,
// so Estimate bounds Count wherever the table bounds the tokenizer.
type walker struct {
	c         *Counter
	t         *table          // estimate mode when not nil
	codec     tokenizer.Codec // count mode
	enc       Encoding        // base encoding (O200kBase for Fallback), part of memo keys
	buf       []byte          // count mode: unescaped text
	err       error           // count mode: first tokenizer error
	stat      uint64          // estimate mode: the texts' weights, without headroom
	model     bool            // note the body's "model" in modelName
	modelName []byte
}

const tok = wOne // one token, fixed point

// Memo units: what a memoized count covers.
const (
	unitMessage = iota + 1 // a chat message or a Responses message item
	unitItem               // a Responses input item
	unitText               // a string value (prompt, input, instructions)
	unitTools              // tool or function definitions
)

// request prices body, a request of kind; false when body is not a JSON
// object.
func (w *walker) request(kind Kind, body []byte) (uint64, bool) {
	it := newIter(body[skipWS(body, 0):])
	if !it.IsObject() {
		return 0, false
	}
	var sum uint64
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if w.model && string(k) == "model" {
			w.modelName, _ = strBody(v)
		}
		switch key := string(k); kind {
		case Chat:
			switch key {
			case "messages":
				sum += w.each(v, unitMessage)
			case "tools", "functions":
				sum += w.unit(unitTools, v)
			}
		case Completions:
			if key == "prompt" || key == "suffix" {
				sum += w.inputs(v)
			}
		case Embeddings:
			if key == "input" {
				sum += w.inputs(v)
			}
		case Responses:
			switch key {
			case "instructions":
				if _, ok := strBody(v); ok {
					sum += (perMessage+1)*tok + w.unit(unitText, v)
				}
			case "input":
				if _, ok := strBody(v); ok {
					sum += (perMessage+1)*tok + w.unit(unitText, v)
				} else {
					sum += w.each(v, unitItem)
				}
			case "tools":
				sum += w.unit(unitTools, v)
			}
		}
	}
	if it.Bad() {
		return 0, false
	}
	if kind == Chat || kind == Responses {
		sum += replyPrimer * tok
	}
	return sum, true
}

// each prices every element of the array v as a unit.
func (w *walker) each(v []byte, unit uint8) (sum uint64) {
	it := newIter(v)
	for _, e, ok := it.next(); ok; _, e, ok = it.next() {
		sum += w.unit(unit, e)
	}
	return sum
}

// unit prices v through the memo: Count fills it, and both Count and
// Estimate take exact counts from it (so a conversation's history, once
// counted, is estimated exactly and only new messages are guessed).
func (w *walker) unit(unit uint8, v []byte) uint64 {
	m := w.c.memo
	if m == nil {
		return w.price(unit, v)
	}
	h := m.key(unit, w.enc, v)
	if n, ok := m.get(h); ok {
		if w.t == nil {
			w.c.hits.Add(1)
		}
		return n * tok
	}
	if w.t != nil {
		return w.estimate(unit, v, h)
	}
	w.c.miss.Add(1)
	err := w.err
	n := w.price(unit, v)
	if w.err == err {
		m.put(h, n/tok)
	}
	return n
}

// estimate prices a unit in estimate mode through the estimate memo (h is
// the unit's memo key), which gives back the same sum and headroom weights
// a fresh scan would.
func (w *walker) estimate(unit uint8, v []byte, h uint64) uint64 {
	m := w.c.est
	if sum, stat, ok := m.get(h); ok {
		w.stat += stat
		return sum
	}
	before := w.stat
	sum := w.price(unit, v)
	m.put(h, sum, w.stat-before)
	return sum
}

// price prices a unit without the memo.
func (w *walker) price(unit uint8, v []byte) uint64 {
	switch unit {
	case unitMessage:
		return w.message(v)
	case unitItem:
		return w.item(v)
	case unitText:
		return w.str(v)
	}
	if len(v) < 3 || v[0] != '[' && v[0] != '{' { // null, [], {}
		return 0
	}
	return toolsHeader*tok + w.text(v, false)
}

// text prices a string body (escaped) or raw JSON text.
func (w *walker) text(s []byte, escaped bool) uint64 {
	if w.t != nil {
		n, _ := w.t.scan(s, escaped, nil)
		w.stat += n
		return n + estPerText*tok
	}
	if escaped {
		w.buf = appendUnescaped(w.buf[:0], s)
		s = w.buf
	}
	n, err := w.codec.Count(string(s))
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("tokens: %s: %w", w.enc, err)
	}
	return uint64(n) * tok
}

// str prices the JSON string v; anything else costs nothing.
func (w *walker) str(v []byte) uint64 {
	if s, ok := strBody(v); ok {
		return w.text(s, true)
	}
	return 0
}

// inputs prices a prompt or input: a string, or an array of strings, of
// token ids, or of arrays of token ids.
func (w *walker) inputs(v []byte) uint64 {
	if len(v) == 0 || v[0] != '[' {
		return w.unit(unitText, v)
	}
	var sum uint64
	it := newIter(v)
	for _, e, ok := it.next(); ok; _, e, ok = it.next() {
		switch e[0] {
		case '"':
			sum += w.unit(unitText, e)
		case '[':
			sum += w.inputs(e)
		case 'n': // null
		default: // a token id
			sum += tok
		}
	}
	return sum
}

// message prices a chat message (or a Responses message item).
func (w *walker) message(v []byte) uint64 {
	sum := uint64(perMessage * tok)
	it := newIter(v)
	for k, val, ok := it.next(); ok; k, val, ok = it.next() {
		switch string(k) {
		case "role":
			switch s, _ := strBody(val); string(s) {
			case "user", "assistant", "system", "developer", "tool", "function":
				sum += tok // one token in both encodings
			default:
				sum += w.str(val)
			}
		case "content":
			sum += w.content(val)
		case "name":
			if _, ok := strBody(val); ok {
				sum += perName*tok + w.str(val)
			}
		case "tool_calls":
			calls := newIter(val)
			for _, c, ok := calls.next(); ok; _, c, ok = calls.next() {
				sum += w.call(field(c, "function"))
			}
		case "function_call":
			sum += w.call(val)
		}
	}
	return sum
}

// call prices a function call {name, arguments}.
func (w *walker) call(v []byte) uint64 {
	if v == nil || v[0] != '{' {
		return 0
	}
	return perToolCall*tok + w.str(field(v, "name")) + w.str(field(v, "arguments"))
}

// content prices message content: a string or an array of parts.
func (w *walker) content(v []byte) uint64 {
	if len(v) == 0 || v[0] != '[' {
		return w.str(v)
	}
	var sum uint64
	parts := newIter(v)
	for _, p, ok := parts.next(); ok; _, p, ok = parts.next() {
		sum += w.part(p)
	}
	return sum
}

// part prices one content part: text, or a fixed cost for an image,
// audio or file. A part that is not an object costs nothing: the provider
// refuses such a request.
func (w *walker) part(p []byte) uint64 {
	if len(p) == 0 || p[0] != '{' {
		return 0
	}
	var typ, text, detail []byte
	it := newIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		switch string(k) {
		case "type":
			typ, _ = strBody(v)
		case "text", "refusal":
			text = v
		case "detail":
			detail, _ = strBody(v)
		case "image_url":
			if d := field(v, "detail"); d != nil {
				detail, _ = strBody(d)
			}
		}
	}
	switch string(typ) {
	case "text", "input_text", "output_text", "refusal":
		return w.str(text)
	}
	n := w.c.imageTokens
	if n <= 0 {
		n = DefaultImageTokens
	}
	if string(detail) == "low" {
		n /= 17
	}
	return uint64(n) * tok
}

// item prices a Responses input item.
func (w *walker) item(v []byte) uint64 {
	typ, _ := strBody(field(v, "type"))
	switch string(typ) {
	case "", "message":
		return w.message(v)
	case "function_call":
		return w.call(v)
	case "function_call_output":
		return perMessage*tok + w.content(field(v, "output"))
	}
	return perMessage*tok + w.text(v, false) // other items priced as their JSON
}
