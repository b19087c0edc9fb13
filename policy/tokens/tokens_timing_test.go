package tokens

import (
	"fmt"
	"strings"
	"testing"
)

// body1KB is a ~1 KB chat request: a system prompt, a short exchange and
// a question with a bit of code, as SDKs send it.
var body1KB = []byte(`{"model":"gpt-4o","messages":[` +
	`{"role":"system","content":"You are a concise assistant for a developer tools company. Answer in plain English, use short paragraphs, and include code only when it helps."},` +
	`{"role":"user","content":"How do I retry an HTTP request in Go when the server answers 429?"},` +
	`{"role":"assistant","content":"Read the Retry-After header, wait that long (or back off exponentially when it is missing), and retry a bounded number of times. Make sure the request body can be replayed: use http.NewRequestWithContext with a bytes.Reader, or set GetBody."},` +
	`{"role":"user","content":"Thanks! Could you show a small helper? Something like:\n\nfunc doWithRetry(c *http.Client, req *http.Request, max int) (*http.Response, error) {\n\tfor i := 0; ; i++ {\n\t\tresp, err := c.Do(req)\n\t\t// ...\n\t}\n}\n\nAlso, should I add jitter?"}` +
	`],"temperature":0.2,"max_tokens":512,"stream":true}`)

// BenchmarkEstimate1KB/new prices a conversation never seen (no memo);
// /counted one whose messages Count has memoized, so Estimate takes them
// exactly.
func BenchmarkEstimate1KB(b *testing.B) {
	for _, counted := range []bool{false, true} {
		b.Run(map[bool]string{false: "new", true: "counted"}[counted], func(b *testing.B) {
			c := NewCounter(Options{CacheEntries: -1})
			if counted {
				c = NewCounter(Options{})
				c.Count(Chat, "gpt-4o", body1KB)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(body1KB)))
			for b.Loop() {
				c.Estimate(Chat, body1KB)
			}
		})
	}
}

// BenchmarkEstimateNewTurn estimates the 1 KB conversation again and again
// with a different last question each time, as a chat resends its history:
// the estimate memo prices the earlier messages without scanning them.
func BenchmarkEstimateNewTurn(b *testing.B) {
	const n = 1024
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = []byte(strings.Replace(string(body1KB), "Also, should I add jitter?", fmt.Sprintf("Also, should I add jitter? (%d)", i), 1))
	}
	for _, memo := range []bool{false, true} {
		b.Run(map[bool]string{false: "no-memo", true: "memo"}[memo], func(b *testing.B) {
			c := NewCounter(Options{CacheEntries: map[bool]int{false: -1, true: 0}[memo]})
			c.Estimate(Chat, bodies[n-1])
			b.ReportAllocs()
			b.SetBytes(int64(len(body1KB)))
			i := 0
			for b.Loop() {
				c.Estimate(Chat, bodies[i%n])
				i++
			}
		})
	}
}

func BenchmarkEstimateText1KB(b *testing.B) {
	text := []byte(strings.Repeat("The quick brown fox jumps over the lazy dog, again and again. ", 16))
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		EstimateText(text)
	}
}

// BenchmarkCount1KB/cold tokenizes every message (a new conversation);
// warm finds them all in the memo (the same history resent).
func BenchmarkCount1KB(b *testing.B) {
	for _, warm := range []bool{false, true} {
		b.Run(map[bool]string{false: "cold", true: "warm"}[warm], func(b *testing.B) {
			c := NewCounter(Options{CacheEntries: map[bool]int{false: -1, true: 0}[warm]})
			if _, err := c.Count(Chat, "gpt-4o", body1KB); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(body1KB)))
			for b.Loop() {
				c.Count(Chat, "gpt-4o", body1KB)
			}
		})
	}
}

// BenchmarkCountNewTurn is the common case: a history of n turns seen
// before, plus one new user message.
func BenchmarkCountNewTurn(b *testing.B) {
	c := NewCounter(Options{})
	var sb strings.Builder
	sb.WriteString(`{"model":"gpt-4o","messages":[`)
	for i := range 20 {
		fmt.Fprintf(&sb, `{"role":"user","content":"Question %d: what does this code do? for i := range n { sum += i }"},{"role":"assistant","content":"It adds the integers from 0 to n-1 into sum, answer %d."},`, i, i)
	}
	prefix := sb.String()
	c.Count(Chat, "gpt-4o", []byte(prefix+`{"role":"user","content":"warm up"}]}`))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		body := []byte(prefix + `{"role":"user","content":"And what about turn ` + fmt.Sprint(i) + `? Explain briefly."}]}`)
		c.Count(Chat, "gpt-4o", body)
	}
}
