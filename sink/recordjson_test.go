package sink

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestRecordJSONMatchesMarshal: the JSONL writer's own encoder gives
// json.Marshal's bytes for records full of awkward strings, floats and
// times, and refuses what Marshal refuses.
func TestRecordJSONMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "Z", " ", "\"", "\\", "/", "<", ">", "&", "\x00", "\x01", "\x1f", "\b", "\f", "\n", "\r", "\t",
		"\x7f", "é", "€", "😀", "\u2028", "\u2029", "\ufffd", "\xff", "\xc3", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", `{"role":"user"}`}
	str := func() string {
		var s []byte
		for n := rng.IntN(40); n > 0; n-- {
			s = append(s, pieces[rng.IntN(len(pieces))]...)
		}
		return string(s)
	}
	floats := []float64{0, -0.0, 1, 0.001, 1.5, 123.456, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 1.5e22, -3e-9, math.MaxFloat64, math.SmallestNonzeroFloat64, 5e-324}
	flt := func() float64 {
		if rng.IntN(2) == 0 {
			return floats[rng.IntN(len(floats))]
		}
		return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20))
	}
	zones := []*time.Location{time.UTC, time.FixedZone("x", 5*3600+30*60), time.FixedZone("y", -8*3600), time.FixedZone("z", 59)}
	tm := func() time.Time {
		if rng.IntN(5) == 0 {
			return time.Time{}
		}
		return time.Unix(rng.Int64N(1<<34), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))])
	}
	for i := range 20000 {
		r := &Record{RequestID: str(), UpstreamRequestID: str(), Start: tm(), FirstToken: tm(), End: tm(), KeyID: str(), User: str(),
			Team: str(), Tier: str(), Endpoint: str(), ModelRequested: str(), Model: str(), Upstream: str(), Stream: rng.IntN(2) == 0,
			Request: str(), Response: str(), FinishReason: str(), PromptTokens: rng.Int64() - 1<<62, CompletionTokens: rng.Int64N(1000),
			TotalTokens: -rng.Int64N(5), EstimatedTokens: rng.Int64(), CostUSD: flt(), Status: rng.IntN(600), ErrorType: str(), LatencyMs: flt(),
			TTFTMs: flt(), QueueWaitMs: flt(), CacheStatus: str(), Retries: rng.IntN(5) - 1, ClientGone: rng.IntN(2) == 0, UserAgent: str()}
		want, err := json.Marshal(r)
		got, ok := appendRecordJSON(nil, r)
		if err != nil || !ok {
			t.Fatalf("record %d: Marshal error %v, ours ok %v", i, err, ok)
		}
		if string(got) != string(want) {
			t.Fatalf("record %d differs:\n got %s\nwant %s", i, got, want)
		}
	}
	for _, r := range []*Record{{LatencyMs: math.NaN()}, {TTFTMs: math.Inf(1)}, {CostUSD: math.NaN()}, {CostUSD: math.Inf(-1)}, {Start: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{End: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}} {
		if _, err := json.Marshal(r); err == nil {
			t.Fatalf("Marshal accepted %+v", r)
		}
		if _, ok := appendRecordJSON(nil, r); ok {
			t.Fatalf("ours accepted %+v", r)
		}
	}
}

// TestRecordJSONCost: cost_usd follows estimated_tokens, in shortest
// decimal form, and comes back exactly through encoding/json.
func TestRecordJSONCost(t *testing.T) {
	for _, c := range []struct {
		cost float64
		text string
	}{
		{0, "0"}, {0.000123, "0.000123"}, {1.5, "1.5"}, {0.0002832, "0.0002832"}, {1.5e-7, "1.5e-7"},
		{12345.678901234, "12345.678901234"}, {0.30000000000000004, "0.30000000000000004"},
	} {
		r := rec(3)
		r.EstimatedTokens, r.CostUSD = 9, c.cost
		b, ok := appendRecordJSON(nil, r)
		if !ok {
			t.Fatalf("cost %v refused", c.cost)
		}
		if want := `"estimated_tokens":9,"cost_usd":` + c.text + `,"status":`; !strings.Contains(string(b), want) {
			t.Fatalf("cost %v: %s lacks %s", c.cost, b, want)
		}
		var back Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.CostUSD != c.cost {
			t.Fatalf("cost %v came back as %v", c.cost, back.CostUSD)
		}
		if !reflect.DeepEqual(back, *r) {
			t.Fatalf("round trip\n%+v\nwant\n%+v", back, *r)
		}
	}
}
