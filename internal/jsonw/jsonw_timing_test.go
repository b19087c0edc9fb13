package jsonw

import "testing"

// BenchmarkScanValue validates a ~1 KB chat request whole.
func BenchmarkScanValue(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(chat1K)))
	for b.Loop() {
		if !valid(chat1K) {
			b.Fatal("invalid")
		}
	}
}

// BenchmarkSkip skips the same body with the trusting walk.
func BenchmarkSkip(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(chat1K)))
	for b.Loop() {
		if Skip(chat1K, 0) != len(chat1K) {
			b.Fatal("short skip")
		}
	}
}

// BenchmarkIter walks the body's members and its messages' fields, as the
// token estimate does.
func BenchmarkIter(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(chat1K)))
	for b.Loop() {
		it := NewIter(chat1K)
		for k, v, ok := it.Next(); ok; k, v, ok = it.Next() {
			if string(k) != "messages" {
				continue
			}
			msgs := NewIter(v)
			for _, m, ok := msgs.Next(); ok; _, m, ok = msgs.Next() {
				fields := NewIter(m)
				for _, _, ok := fields.Next(); ok; _, _, ok = fields.Next() {
				}
			}
		}
	}
}

// BenchmarkAppendUnescaped decodes the escaped user message of the body.
func BenchmarkAppendUnescaped(b *testing.B) {
	it := NewIter(Field(chat1K, "messages"))
	it.Next()
	_, user, _ := it.Next()
	body, _ := StrBody(Field(user, "content"))
	buf := make([]byte, 0, len(body))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		buf = AppendUnescaped(buf[:0], body)
	}
}
