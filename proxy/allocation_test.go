//go:build !race

package proxy

import "testing"

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
