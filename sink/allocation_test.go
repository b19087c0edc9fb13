//go:build !race

package sink

import "testing"

// TestRecordJSONDoesNotAllocate: the JSONL encoder writes a whole record,
// cost_usd and the other floats included, into a buffer with room without
// allocating. Behind !race: the race detector allocates; scripts/test.sh
// runs this file without it.
func TestRecordJSONDoesNotAllocate(t *testing.T) {
	r := rec(1)
	r.CostUSD, r.TTFTMs, r.QueueWaitMs, r.FirstToken = 0.000123, 1.25, 1.5e-7, r.Start
	buf := make([]byte, 0, 4096)
	var ok bool
	n := testing.AllocsPerRun(1000, func() {
		buf, ok = appendRecordJSON(buf[:0], r)
	})
	if !ok {
		t.Fatal("record refused")
	}
	if n != 0 {
		t.Fatalf("appendRecordJSON: %v allocations per record, want 0", n)
	}
}
