package fakeai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"
)

type embeddingsJSON struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func TestEmbeddingsFloat(t *testing.T) {
	_, base := startServer(t, Config{})
	resp, body := post(t, base+"/embeddings", `{"model":"text-embedding-3-small","input":"hello world"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var e embeddingsJSON
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	if e.Object != "list" || e.Model != "text-embedding-3-small" || len(e.Data) != 1 || e.Data[0].Object != "embedding" {
		t.Fatalf("shape: %s", body)
	}
	if e.Usage.PromptTokens != 2 || e.Usage.TotalTokens != 2 {
		t.Fatalf("usage %+v", e.Usage)
	}
	var v []float64
	if err := json.Unmarshal(e.Data[0].Embedding, &v); err != nil {
		t.Fatal(err)
	}
	if len(v) != DefaultEmbeddingDimensions {
		t.Fatalf("len %d", len(v))
	}
	want := Embed("hello world", DefaultEmbeddingDimensions)
	var norm float64
	for i := range v {
		if float32(v[i]) != want[i] {
			t.Fatalf("value %d: %v vs %v", i, v[i], want[i])
		}
		norm += v[i] * v[i]
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Fatalf("norm² = %v, want 1", norm)
	}
}

func TestEmbeddingsBase64(t *testing.T) {
	_, base := startServer(t, Config{})
	_, body := post(t, base+"/embeddings",
		`{"model":"m","input":["a","b b"],"encoding_format":"base64","dimensions":16}`)
	var e embeddingsJSON
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Data) != 2 || e.Usage.PromptTokens != 3 {
		t.Fatalf("shape: %s", body)
	}
	for i, in := range []string{"a", "b b"} {
		// Decode the way the official SDK does: base64 of little-endian float32.
		var raw []byte
		if err := json.Unmarshal(e.Data[i].Embedding, &raw); err != nil {
			t.Fatalf("not a base64 string: %v", err)
		}
		if len(raw) != 16*4 {
			t.Fatalf("%d bytes", len(raw))
		}
		want := Embed(in, 16)
		for j := range want {
			if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:])); got != want[j] {
				t.Fatalf("input %d value %d: %v vs %v", i, j, got, want[j])
			}
		}
		if e.Data[i].Index != i {
			t.Fatalf("index %d", e.Data[i].Index)
		}
	}
	if Embed("a", 8)[0] == Embed("b b", 8)[0] {
		t.Fatal("different inputs, same vector")
	}
	if _, err := base64.StdEncoding.DecodeString(string(e.Data[0].Embedding[1 : len(e.Data[0].Embedding)-1])); err != nil {
		t.Fatalf("std base64: %v", err)
	}
}

func TestEmbeddingsErrors(t *testing.T) {
	_, base := startServer(t, Config{})
	for _, tc := range []struct{ body, code string }{
		{`{"input":"x"}`, ""},
		{`{"model":"m"}`, "missing_required_parameter"},
		{`{"model":"m","input":""}`, ""},
		{`{"model":"m","input":[]}`, ""},
		{`{"model":"m","input":{"a":1}}`, ""},
		{`{"model":"m","input":"x","encoding_format":"hex"}`, ""},
		{`{"model":"m","input":"x","dimensions":0}`, "integer_below_min_value"},
	} {
		resp, b := post(t, base+"/embeddings", tc.body)
		wantError(t, resp, b, 400, "invalid_request_error", tc.code)
	}
}
