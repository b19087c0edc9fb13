package proxy

import "testing"

// BenchmarkFindUsage reads the usage of a non-stream chat answer, done for
// every answer to settle its tokens.
func BenchmarkFindUsage(b *testing.B) {
	body := []byte(chatAnswer)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if u := findUsage(body); !u.ok {
			b.Fatal("no usage")
		}
	}
}

// BenchmarkIsJSONObject validates a ~1 KB request body whole, as the cache
// checks an answer before keeping it.
func BenchmarkIsJSONObject(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(chatBody1K)))
	for b.Loop() {
		if !isJSONObject(chatBody1K) {
			b.Fatal("not an object")
		}
	}
}
