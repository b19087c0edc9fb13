//go:build !race

package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestScanRequestNoAllocs keeps the scanner off the heap: it runs on every
// request.
func TestScanRequestNoAllocs(t *testing.T) {
	var f reqFields
	n := testing.AllocsPerRun(100, func() {
		if err := scanRequest(chatBody1K, &f); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("scanRequest allocates %v times per call; want 0", n)
	}
}

// TestUsedTokensNoAllocs: counting a known tier and group's tokens, done
// for every answer, stays off the heap.
func TestUsedTokensNoAllocs(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry(), "test")
	u := usage{prompt: 10, completion: 3, ok: true}
	m.usedTokens("free", "gpt-4o*", u)
	if n := testing.AllocsPerRun(100, func() { m.usedTokens("free", "gpt-4o*", u) }); n != 0 {
		t.Fatalf("usedTokens allocates %v times per call; want 0", n)
	}
}
