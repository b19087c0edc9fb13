package fakeai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"math"
)

// embeddingRequest holds the fields of an embeddings request the fake uses.
type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

type embeddingList struct {
	Object string          `json:"object"`
	Data   []embeddingItem `json:"data"`
	Model  string          `json:"model"`
	Usage  embeddingUsage  `json:"usage"`
}

type embeddingItem struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32 or base64 string
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// Embed returns the fake's embedding of text: dimensions float32 values of
// unit length (L2), derived deterministically from text. Tests can compare
// what a client received with Embed(input, dims).
func Embed(text string, dimensions int) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text))
	x := h.Sum64()
	v := make([]float64, dimensions)
	var norm float64
	for i := range v {
		// splitmix64
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		v[i] = float64(z>>11)/float64(1<<53)*2 - 1
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	out := make([]float32, dimensions)
	for i := range v {
		if norm > 0 {
			out[i] = float32(v[i] / norm)
		}
	}
	return out
}

// encodeBase64 returns the base64 of the little-endian float32 bytes of v,
// the encoding_format "base64" the official SDKs decode.
func encodeBase64(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

const invalidInputMessage = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."

func (c *call) embeddings() {
	var req embeddingRequest
	if !c.decode(&req) {
		return
	}
	if req.Model == "" {
		c.missingModel()
		return
	}
	if len(trimSpace(req.Input)) == 0 || string(trimSpace(req.Input)) == "null" {
		c.missingParam("input")
		return
	}
	inputs, ok := promptTexts(req.Input)
	if !ok {
		c.invalid("input", "", invalidInputMessage)
		return
	}
	for _, in := range inputs {
		if in == "" {
			c.invalid("input", "", invalidInputMessage)
			return
		}
	}
	asBase64 := false
	switch req.EncodingFormat {
	case "", "float":
	case "base64":
		asBase64 = true
	default:
		c.invalid("encoding_format", "", "'"+req.EncodingFormat+"' is not one of ['float', 'base64'] - 'encoding_format'")
		return
	}
	dims := DefaultEmbeddingDimensions
	if req.Dimensions != nil {
		dims = *req.Dimensions
		if dims < 1 {
			c.belowMin("dimensions", dims, 1)
			return
		}
		if dims > MaxEmbeddingDimensions {
			c.aboveMax("dimensions", dims, MaxEmbeddingDimensions)
			return
		}
	}
	tokens := 0
	for _, in := range inputs {
		tokens += countWords(in)
	}
	if !c.admit(tokens, req.Model) {
		return
	}
	c.settle(tokens, 0)
	out := embeddingList{Object: "list", Data: make([]embeddingItem, len(inputs)), Model: req.Model,
		Usage: embeddingUsage{PromptTokens: tokens, TotalTokens: tokens}}
	for i, in := range inputs {
		v := Embed(in, dims)
		out.Data[i] = embeddingItem{Object: "embedding", Index: i, Embedding: v}
		if asBase64 {
			out.Data[i].Embedding = encodeBase64(v)
		}
	}
	c.writeJSON(200, &out)
}
