package tokens

import "testing"

func BenchmarkScanRaw(b *testing.B) {
	text := body1KB
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tables[0].scan(text, true, nil)
	}
}

func BenchmarkWalkOnly(b *testing.B) {
	b.SetBytes(int64(len(body1KB)))
	for b.Loop() {
		it := newIter(body1KB)
		for _, v, ok := it.next(); ok; _, v, ok = it.next() {
			m := newIter(v)
			for _, x, ok := m.next(); ok; _, x, ok = m.next() {
				f := newIter(x)
				for _, _, ok := f.next(); ok; _, _, ok = f.next() {
				}
			}
		}
	}
}
