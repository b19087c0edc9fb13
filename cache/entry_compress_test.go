package cache

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// prose is English text of the kind chat answers hold.
const prose = `The committee met on Tuesday to review the quarterly figures. Revenue grew by four percent, ` +
	`driven mostly by the new subscription plans, while costs stayed flat thanks to the move to the shared ` +
	`data centre. Several members asked whether the growth would last through the winter; the finance lead ` +
	`answered that bookings for the next two months already exceed last year's, but warned that currency ` +
	`movements could erase part of the gain. The meeting closed with a vote to extend the pilot in two more regions. `

// chatBody is a chat.completion whose answer is words words drawn at
// random from prose (no repeated passages, so it compresses like text).
func chatBody(words int) []byte {
	vocab := strings.Fields(prose)
	r := rand.New(rand.NewPCG(uint64(words), 9))
	var sb strings.Builder
	for i := range words {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(vocab[r.IntN(len(vocab))])
	}
	text := sb.String()
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-9f8e7d6c5b4a", "object": "chat.completion", "created": 1795781002, "model": "gpt-4o-mini-2024-07-18",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text, "refusal": nil},
			"logprobs": nil, "finish_reason": "stop"}},
		"usage":              map[string]any{"prompt_tokens": 412, "completion_tokens": words * 4 / 3, "total_tokens": 412 + words*4/3},
		"system_fingerprint": "fp_44709d6fcb",
	})
	return b
}

func embeddingBody(dims int) []byte {
	r := rand.New(rand.NewPCG(7, 8))
	v := make([]float64, dims)
	for i := range v {
		v[i] = float64(float32(r.NormFloat64() * 0.03))
	}
	b, _ := json.Marshal(map[string]any{"object": "list", "model": "text-embedding-3-small",
		"data":  []any{map[string]any{"object": "embedding", "index": 0, "embedding": v}},
		"usage": map[string]any{"prompt_tokens": 8, "total_tokens": 8}})
	return b
}

func TestEntryCompressedRoundTrip(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli())
	for _, body := range [][]byte{[]byte(`{"small":true}`), chatBody(300), embeddingBody(1536)} {
		e := &Entry{Created: now, Expires: now.Add(time.Hour), Body: body, PromptTokens: 3, CompletionTokens: 4}
		enc := e.Encode()
		got, err := Decode(enc)
		if err != nil || !bytes.Equal(got.Body, body) || got.PromptTokens != 3 || !got.Created.Equal(now) {
			t.Fatalf("round trip of %d bytes: %v", len(body), err)
		}
		if len(body) >= compressMinBytes && (enc[3] != 2 || len(enc) >= len(body)) {
			t.Fatalf("a %d-byte body was stored as version %d in %d bytes", len(body), enc[3], len(enc))
		}
		// A flipped byte anywhere in the stored body is a miss.
		bad := bytes.Clone(enc)
		bad[len(bad)-1] ^= 0x40
		if _, err := Decode(bad); err != ErrCorrupt {
			t.Fatalf("corrupt entry: %v, want ErrCorrupt", err)
		}
	}
	// Version 1 entries (stored before compression) still read.
	e := &Entry{Created: now, Expires: now, Body: chatBody(100)}
	v1 := make([]byte, entryHeader, entryHeader+len(e.Body))
	v1 = append(v1, e.Body...)
	e.putHeader(v1, entryMagic, v1[entryHeader:])
	if got, err := Decode(v1); err != nil || !bytes.Equal(got.Body, e.Body) {
		t.Fatalf("version 1 entry: %v", err)
	}
}

// TestEntriesPer64MB reports how many typical answers a 64 MB memory cache
// holds with and without compression, and fails if compression stops paying.
func TestEntriesPer64MB(t *testing.T) {
	const lru = 64 << 20
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"chat answer, ~300 words", chatBody(300)},
		{"embedding, 1,536 floats", embeddingBody(1536)},
	} {
		e := &Entry{Body: c.body}
		raw := len(c.body) + entryHeader + entryOverhead
		stored := len(e.Encode()) + entryOverhead
		t.Logf("%-24s %6d B raw, %6d B stored: %6d → %6d entries per 64 MB (%.1f×)", c.name, len(c.body), stored-entryOverhead,
			lru/raw, lru/stored, float64(raw)/float64(stored))
		if float64(raw)/float64(stored) < 1.5 {
			t.Fatalf("%s: compression gains only %.2f×", c.name, float64(raw)/float64(stored))
		}
	}
}

func BenchmarkDecodeCompressedChat(b *testing.B) {
	enc := (&Entry{Body: chatBody(300)}).Encode()
	b.ReportAllocs()
	b.SetBytes(int64(len(chatBody(300))))
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeChat stores a chat answer of 300 words (about 2 KiB) and
// one of 40 words, the size of a short reply.
func BenchmarkEncodeChat(b *testing.B) {
	for _, words := range []int{40, 300} {
		body := chatBody(words)
		b.Run(strconv.Itoa(words)+"words", func(b *testing.B) {
			e := &Entry{Body: body}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var stored int
			for b.Loop() {
				stored = len(e.Encode())
			}
			b.ReportMetric(float64(len(body))/float64(stored-entryHeader), "ratio")
		})
	}
}
