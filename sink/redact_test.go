package sink

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestDefaultRedaction(t *testing.T) {
	r, err := NewRedactor(DefaultRedactRules)
	if err != nil {
		t.Fatal(err)
	}
	f := func(in, want string) {
		t.Helper()
		if got := r.String(in); got != want {
			t.Fatalf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	f("key sk-proj-AbCdEf0123456789xyz ok", "key [REDACTED:api_key] ok")
	f("sk-sluice-demo-e2e-0a1b2c3d4e5f6a7b8c9d", "[REDACTED:api_key]")
	f("aws AKIAIOSFODNN7EXAMPLE!", "aws [REDACTED:aws_key]!")
	f("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abcdefgh", "Authorization: Bearer [REDACTED]")
	f(`"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"`, `"[REDACTED:private_key]"`)
	f("sk-short and a normal sentence", "sk-short and a normal sentence")
}

func TestCustomRedactionRulesAndErrors(t *testing.T) {
	r, err := NewRedactor([]RedactRule{{Pattern: `\b\d{3}-\d{2}-(\d{4})\b`, Replace: "***-**-$1"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &Record{Request: "ssn 123-45-6789", Response: "ok 987-65-4321", UserAgent: "x"}
	r.Record(rec)
	if rec.Request != "ssn ***-**-6789" || rec.Response != "ok ***-**-4321" {
		t.Fatalf("custom rule: %q / %q", rec.Request, rec.Response)
	}
	if _, err := NewRedactor([]RedactRule{{Pattern: "("}}); err == nil {
		t.Fatal("invalid pattern accepted")
	}
	var none *Redactor
	if none.String("sk-proj-AbCdEf0123456789xyz") == "" {
		t.Fatal("nil redactor changed text")
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("hello", 10); got != "hello" {
		t.Fatalf("short text changed: %q", got)
	}
	got := Truncate("héllo world", 2) // "h" + first byte of "é": cut before é
	if got != "h"+TruncationMarker+"11 bytes]" {
		t.Fatalf("Truncate = %q", got)
	}
	if got := TruncateBytes([]byte(strings.Repeat("a", 10)), 4); got != "aaaa"+TruncationMarker+"6 bytes]" {
		t.Fatalf("TruncateBytes = %q", got)
	}
	if got := Truncate("abc", 0); got != "abc" {
		t.Fatalf("no cap: %q", got)
	}
}

func TestDDLByVersion(t *testing.T) {
	old := DDL("18.16.1", "db.t", 30)
	for _, bad := range []string{"DateTime64", "LowCardinality", "CODEC", "TTL"} {
		if strings.Contains(old, bad) {
			t.Fatalf("18.16 DDL uses %s:\n%s", bad, old)
		}
	}
	modern := DDL("24.8.4.13", "db.t", 30)
	for _, want := range []string{"DateTime64(3", "LowCardinality(String)", "CODEC(", "TTL toDate(start) + INTERVAL 30 DAY", "PARTITION BY toDate(start)"} {
		if !strings.Contains(modern, want) {
			t.Fatalf("modern DDL lacks %s:\n%s", want, modern)
		}
	}
	for _, d := range []string{old, modern} {
		if !strings.Contains(d, "ReplacingMergeTree") || !strings.Contains(d, "ORDER BY (user, start, request_id)") {
			t.Fatalf("DDL is not dedup-safe:\n%s", d)
		}
		for _, c := range Columns {
			if !strings.Contains(d, "\n  "+c+" ") {
				t.Fatalf("DDL lacks column %s", c)
			}
		}
	}
}

func TestContainsFold(t *testing.T) {
	f := func(s, sub string, want bool) {
		t.Helper()
		if got := containsFold(s, sub, rarest(sub)); got != want {
			t.Fatalf("containsFold(%q, %q) = %v", s, sub, got)
		}
	}
	f("Authorization: BEARER x", "bearer", true)
	f("beare", "bearer", false)
	f("xxAKIAyy", "akia", true)
	f("", "sk-", false)
	f("-----BEGIN RSA PRIVATE KEY-----", "private key-----", true)
}

// BenchmarkRedactClean is the common case: a chat with no secret; /prose
// is about 1 KB of ordinary sentences, full of the hints' first letters.
func BenchmarkRedactClean(b *testing.B) {
	r, _ := NewRedactor(DefaultRedactRules)
	for name, s := range map[string]string{
		"words": `[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + strings.Repeat("word ", 60) + `"}]`,
		"prose": `[{"role":"system","content":"You are Quill, the support assistant of an online bookshop. Answer in at most three short sentences, in the customer's language. Never invent order details: if you need an order number or an email address, ask for it. Prices are in euros and include VAT."},` +
			`{"role":"user","content":"Hi! I ordered two paperbacks last Tuesday and the tracking page still says the parcel is being prepared. Is something wrong with it? Can I still add a gift wrap to the second book, and would that delay it? Please be brief, I am about to board a plane and will read your answer after I land."}]`,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				_ = r.String(s)
			}
		})
	}
}

// TestContainsFoldMatchesLowerContains compares containsFold with
// strings.Contains over lower-cased text, for random ASCII strings built
// from a small alphabet (so that near-misses are common).
func TestContainsFoldMatchesLowerContains(t *testing.T) {
	const alphabet = "sSkK-aAbB x"
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 20000 {
		s := rnd(r.IntN(40))
		sub := strings.ToLower(rnd(1 + r.IntN(4)))
		want := strings.Contains(strings.ToLower(s), sub)
		if got := containsFold(s, sub, rarest(sub)); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	}
}
