package fakeai

import (
	"net/http"
)

// speechBytes is the body of every /v1/audio/speech answer.
var speechBytes = makeSpeech()

// SpeechBytes returns a copy of the SpeechLength bytes POST /v1/audio/speech
// answers with: deterministic pseudo-random data that contains zero bytes and
// invalid UTF-8, so a relay that treats it as text is caught.
func SpeechBytes() []byte {
	return append([]byte(nil), speechBytes...)
}

func makeSpeech() []byte {
	b := make([]byte, SpeechLength)
	x := uint64(0x5eed_f00d_cafe_beef)
	for i := range b {
		x ^= x << 13 // xorshift64
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x >> 56)
	}
	// An MP3 frame sync, then a NUL and an invalid UTF-8 sequence, for sure.
	copy(b, []byte{0xff, 0xfb, 0x00, 0xc3, 0x28, 0x00, 0xfe, 0xff})
	return b
}

type speechRequest struct {
	Model          string  `json:"model"`
	Input          *string `json:"input"`
	Voice          string  `json:"voice"`
	ResponseFormat string  `json:"response_format"`
}

var audioTypes = map[string][]string{
	"":     {"audio/mpeg"},
	"mp3":  {"audio/mpeg"},
	"opus": {"audio/ogg"},
	"aac":  {"audio/aac"},
	"flac": {"audio/flac"},
	"wav":  {"audio/wav"},
	"pcm":  {"audio/pcm"},
}

// speech answers POST /v1/audio/speech with speechBytes.
func (c *call) speech() {
	var req speechRequest
	if !c.decode(&req) {
		return
	}
	if req.Model == "" {
		c.missingModel()
		return
	}
	if req.Input == nil {
		c.missingParam("input")
		return
	}
	ct, ok := audioTypes[req.ResponseFormat]
	if !ok {
		c.invalid("response_format", "invalid_value", "Invalid value: '"+req.ResponseFormat+
			"'. Supported values are: 'mp3', 'opus', 'aac', 'flac', 'wav', and 'pcm'.")
		return
	}
	tokens := countWords(*req.Input)
	if !c.admit(tokens, req.Model) {
		return
	}
	c.settle(tokens, 0)
	c.writeBody(http.StatusOK, ct, speechBytes)
}
