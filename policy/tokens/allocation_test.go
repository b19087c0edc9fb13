//go:build !race

package tokens

import "testing"

// The estimate is on every request's path: it must not allocate, nor may
// a fully memoized Count.
func TestNoAllocs(t *testing.T) {
	c := NewCounter(Options{})
	if _, err := c.Count(Chat, "gpt-4o", body1KB); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(){
		"Estimate":     func() { c.Estimate(Chat, body1KB) },
		"EstimateFor":  func() { c.EstimateFor(Cl100kBase, Chat, body1KB) },
		"EstimateText": func() { EstimateText(body1KB) },
		"EncodingFor":  func() { EncodingFor("gpt-4o-mini") },
		"Count (warm)": func() { c.Count(Chat, "gpt-4o", body1KB) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}
