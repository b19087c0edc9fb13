package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/internal/jsonw"
	"sluice/sink"
)

// TranscriptOptions say where the proxy records its exchanges and what it
// keeps.
type TranscriptOptions struct {
	// Sink takes the records. Nil: nothing is recorded.
	Sink *sink.Sink
	// Reader serves GET /admin/transcripts; nil answers 501.
	Reader sink.Reader
	// MetadataOnly leaves Request and Response empty.
	MetadataOnly bool
	// MaxContentBytes caps the request and the response text kept per
	// record (the sink caps again after redaction). Default 65536.
	MaxContentBytes int
}

// transcripts is the proxy's side of the sink.
type transcripts struct {
	sink       *sink.Sink
	reader     sink.Reader
	metadata   bool
	maxContent int
	// agents interns User-Agent values (their first 256 bytes).
	agents names
}

// SetTranscripts turns recording on; call it before Serve.
func (s *Server) SetTranscripts(o TranscriptOptions) {
	if o.MaxContentBytes <= 0 {
		o.MaxContentBytes = sink.DefaultMaxContentBytes
	}
	t := &transcripts{sink: o.Sink, reader: o.Reader, metadata: o.MetadataOnly, maxContent: o.MaxContentBytes}
	s.tr = t
}

// txState is what one exchange collects for its transcript, in memory it
// owns (nothing aliases the RequestCtx).
type txState struct {
	// id is Sluice's own request id, unique per exchange: the record's key.
	id       string
	max      int
	metadata bool
	// request is the messages (or input / prompt) JSON, capped.
	request   string
	stream    bool
	userAgent string
	// text is the answer's text, at most max bytes; textCut counts the bytes
	// beyond.
	text     []byte
	textCut  int
	finish   string
	errType  string
	usage    usage
	firstTok time.Time
}

// beginTranscript starts an exchange's transcript state; nil when
// recording is off.
func (s *Server) beginTranscript(ctx *fasthttp.RequestCtx, x *exchange) *txState {
	if s.tr == nil || s.tr.sink == nil {
		return nil
	}
	ua := ctx.Request.Header.UserAgent()
	t, _ := txPool.Get().(*txState)
	if t == nil {
		t = new(txState)
	}
	agent, known := s.tr.agents.get(ua[:min(len(ua), maxNameLen)])
	if !known {
		s.tr.agents.add(agent)
	}
	*t = txState{id: x.requestID(), max: s.tr.maxContent, metadata: s.tr.metadata,
		userAgent: agent, text: t.text[:0]}
	return t
}

// txPool recycles txStates and their answer-text buffers: record returns
// them once the record holds its own copies.
var txPool sync.Pool

// maxPooledText is the largest answer-text buffer kept for reuse.
const maxPooledText = 64 << 10

// release returns t to txPool; t must not be used afterwards.
func (t *txState) release() {
	text := t.text[:0]
	if cap(text) > maxPooledText {
		text = nil
	}
	*t = txState{text: text}
	txPool.Put(t)
}

// requestKeys are the top-level fields that hold what the client sent the
// model: chat messages, a Responses or embeddings input, a legacy prompt.
var requestKeys = [...]string{"messages", "input", "prompt"}

// noteRequest copies the request's messages out of the body (the proxy
// has them from its scan already and calls noteContent).
func (t *txState) noteRequest(body []byte, stream bool) {
	if t == nil {
		return
	}
	t.noteContent(topLevelValue(body, requestKeys[:]), stream)
}

// noteContent copies the request's messages (input, prompt): v is their
// JSON value, found by scanRequest (reqFields.content), or nil.
func (t *txState) noteContent(v []byte, stream bool) {
	if t == nil {
		return
	}
	t.stream = stream
	if t.metadata || v == nil {
		return
	}
	t.request = sink.TruncateBytes(v, t.max)
}

// topLevelValue returns the raw JSON value of the first of keys found at
// the top level of the object body (already validated), or nil.
func topLevelValue(body []byte, keys []string) []byte {
	s := jsonw.Scanner{B: body}
	s.WS()
	if !s.Byte('{') {
		return nil
	}
	for {
		s.WS()
		keyStart := s.I
		if !s.Str() {
			return nil
		}
		key := s.B[keyStart+1 : s.I-1]
		s.WS()
		if !s.Byte(':') {
			return nil
		}
		s.WS()
		start := s.I
		if !s.Value(1) {
			return nil
		}
		for _, k := range keys {
			if string(key) == k {
				return body[start:s.I]
			}
		}
		s.WS()
		if !s.Byte(',') {
			return nil
		}
	}
}

var (
	keyContent = []byte(`"content":`)
	keyText    = []byte(`"text":`)
	keyDelta   = []byte(`"delta":`)
	keyFinish  = []byte(`"finish_reason":`)
	keyType    = []byte(`"type":`)
)

// textKey is the field whose string values make the answer's text, by
// endpoint and stream.
func textKey(ep endpoint, stream bool) []byte {
	switch ep {
	case epChat:
		return keyContent
	case epCompletions:
		return keyText
	case epResponses:
		if stream {
			return keyDelta
		}
		return keyText
	}
	return nil
}

// appendText appends the text an answer (or one stream event) carries.
func (t *txState) appendText(b []byte, key []byte) {
	if key == nil || t.metadata {
		return
	}
	for len(b) > 0 {
		v, rest, ok := nextString(b, key)
		if !ok {
			return
		}
		b = rest
		if room := t.max - len(t.text); room >= len(v) {
			t.text = append(t.text, v...)
		} else {
			if room > 0 {
				t.text = append(t.text, v[:room]...)
			}
			t.textCut += len(v) - max(room, 0)
		}
	}
}

// nextString finds the next `key` followed by a string value in b and
// returns the value unescaped and the rest of b after it.
func nextString(b, key []byte) (val, rest []byte, ok bool) {
	for {
		i := bytes.Index(b, key)
		if i < 0 {
			return nil, nil, false
		}
		s := jsonw.Scanner{B: b, I: i + len(key)}
		s.WS()
		start := s.I
		if s.Kind() != jsonw.String {
			b = b[s.I:]
			continue
		}
		if !s.Str() {
			return nil, nil, false
		}
		return s.StrValue(start), b[s.I:], true
	}
}

// lastString returns the last string value of key in b, or "" (OpenAI's
// finish reasons without allocating).
func lastString(b, key []byte) string {
	var last []byte
	for {
		v, rest, ok := nextString(b, key)
		if !ok {
			switch string(last) {
			case "stop":
				return "stop"
			case "length":
				return "length"
			case "tool_calls":
				return "tool_calls"
			case "content_filter":
				return "content_filter"
			}
			return string(last)
		}
		last, b = v, rest
	}
}

// event notes one SSE event of a streamed answer.
func (t *txState) event(ep endpoint, ev []byte) {
	if t == nil {
		return
	}
	if t.firstTok.IsZero() {
		t.firstTok = time.Now()
	}
	if bytes.Contains(ev, usageKey) {
		if u := findUsage(ev); u.ok {
			t.usage = u
		}
	}
	if bytes.Contains(ev, keyFinish) {
		if f := lastString(ev, keyFinish); f != "" {
			t.finish = f
		}
	}
	t.appendText(ev, textKey(ep, true))
}

// answer notes a buffered answer: its text, usage, finish reason or error.
func (t *txState) answer(ep endpoint, status int, body []byte) {
	if t == nil {
		return
	}
	var u usage
	if status < 400 && ep.parsesBody() {
		u = findUsage(body)
	}
	t.answerUsage(ep, status, body, u)
}

// answerUsage is answer with the body's usage already found (findUsage;
// zero for an error or a body that is not parsed).
func (t *txState) answerUsage(ep endpoint, status int, body []byte, u usage) {
	if t == nil {
		return
	}
	if status >= 400 {
		t.errType = lastStringFirst(body, keyType)
		return
	}
	if !ep.parsesBody() {
		return
	}
	t.usage = u
	t.finish = lastString(body, keyFinish)
	t.appendText(body, textKey(ep, false))
}

// lastStringFirst returns the first string value of key in b, or "".
func lastStringFirst(b, key []byte) string {
	v, _, ok := nextString(b, key)
	if !ok {
		return ""
	}
	return string(v)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// record hands the finished exchange to the sink without blocking.
func (s *Server) record(reqID []byte, x *exchange, end time.Time, clientGone bool) {
	t := x.tr
	if t == nil {
		return
	}
	x.tr = nil
	r := &sink.Record{
		RequestID:        t.id,
		Start:            x.start,
		End:              end,
		KeyID:            x.keyID,
		User:             x.user,
		Team:             x.team,
		Tier:             x.tier,
		Endpoint:         endpointLabels[x.ep],
		ModelRequested:   x.modelAsked,
		Model:            x.model,
		Stream:           t.stream,
		Request:          t.request,
		FinishReason:     t.finish,
		PromptTokens:     t.usage.prompt,
		CompletionTokens: t.usage.completion,
		TotalTokens:      t.usage.total(),
		EstimatedTokens:  x.promptEst,
		CostUSD:          x.answerCost(),
		Status:           x.status,
		ErrorType:        t.errType,
		LatencyMs:        ms(end.Sub(x.start)),
		QueueWaitMs:      ms(x.queueWait),
		CacheStatus:      x.cacheStatus,
		Retries:          x.retries,
		ClientGone:       clientGone,
		UserAgent:        t.userAgent,
	}
	if x.up != nil {
		r.Upstream = x.up.name
	}
	if string(reqID) != t.id {
		r.UpstreamRequestID = string(reqID)
	}
	first := t.firstTok
	if first.IsZero() && !x.upFirst.IsZero() && !t.stream {
		first = x.upFirst
	}
	if !first.IsZero() {
		r.FirstToken = first
		r.TTFTMs = ms(first.Sub(x.start))
	}
	if len(t.text) > 0 || t.textCut > 0 {
		r.Response = string(t.text)
		if t.textCut > 0 {
			r.Response += sink.TruncationMarker + strconv.Itoa(t.textCut) + " bytes]"
		}
	}
	t.release()
	s.tr.sink.Enqueue(r)
}

// maxTranscripts bounds one /admin/transcripts answer.
const maxTranscripts = 1000

// handleTranscripts serves GET /admin/transcripts?user=U&since=T&limit=N:
// the user's transcripts since T (RFC 3339, or a duration back from now
// such as "24h"; default 24h), newest first, at most N (default 100, max
// 1000). It needs "Authorization: Bearer <server.admin_token>".
func (s *Server) handleTranscripts(w http.ResponseWriter, r *http.Request) {
	t := s.tr
	if t == nil || t.reader == nil {
		http.Error(w, "transcripts are not recorded", http.StatusNotImplemented)
		return
	}
	q := r.URL.Query()
	user := q.Get("user")
	if user == "" {
		http.Error(w, "user is required", http.StatusBadRequest)
		return
	}
	since := time.Now().Add(-24 * time.Hour)
	if v := q.Get("since"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			since = time.Now().Add(-d)
		} else if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
			since = ts
		} else {
			http.Error(w, "since must be RFC 3339 or a duration such as 24h", http.StatusBadRequest)
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			http.Error(w, "limit must be a positive integer", http.StatusBadRequest)
			return
		}
		limit = min(n, maxTranscripts)
	}
	// A user name is not unique across teams: trusted app keys of two teams
	// may both name an end user "alice". team= and key= keep one tenant's
	// records (applied to the user's newest maxTranscripts in the window).
	team, keyID := q.Get("team"), q.Get("key")
	fetch := limit
	if team != "" || keyID != "" {
		fetch = maxTranscripts
	}
	recs, err := t.reader.Recent(r.Context(), user, since, fetch)
	if err != nil {
		s.log.Warn("admin transcripts query failed", "user", user, "error", err)
		http.Error(w, "transcript store unavailable", http.StatusServiceUnavailable)
		return
	}
	if team != "" || keyID != "" {
		recs = slices.DeleteFunc(recs, func(rec *sink.Record) bool {
			return (team != "" && rec.Team != team) || (keyID != "" && rec.KeyID != keyID)
		})
		recs = recs[:min(len(recs), limit)]
	}
	if recs == nil {
		recs = []*sink.Record{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		User        string         `json:"user"`
		Since       time.Time      `json:"since"`
		Transcripts []*sink.Record `json:"transcripts"`
	}{user, since.UTC(), recs})
}
