package fakeai

import (
	"encoding/json"
	"strconv"
	"time"
)

// chatRequest holds the fields of a chat completion request the fake uses.
type chatRequest struct {
	Model               string         `json:"model"`
	Messages            *[]chatMessage `json:"messages"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	N                   *int           `json:"n"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// usage is the chat and legacy completion usage object.
type usage struct {
	PromptTokens            int                `json:"prompt_tokens"`
	CompletionTokens        int                `json:"completion_tokens"`
	TotalTokens             int                `json:"total_tokens"`
	PromptTokensDetails     *promptDetails     `json:"prompt_tokens_details,omitempty"`
	CompletionTokensDetails *completionDetails `json:"completion_tokens_details,omitempty"`
}

type promptDetails struct {
	CachedTokens int `json:"cached_tokens"`
	AudioTokens  int `json:"audio_tokens"`
}

type completionDetails struct {
	ReasoningTokens          int `json:"reasoning_tokens"`
	AudioTokens              int `json:"audio_tokens"`
	AcceptedPredictionTokens int `json:"accepted_prediction_tokens"`
	RejectedPredictionTokens int `json:"rejected_prediction_tokens"`
}

// Shared read-only values.
var (
	zeroPromptDetails     = &promptDetails{}
	zeroCompletionDetails = &completionDetails{}
	emptyList             = []struct{}{}
	jsonNull              = json.RawMessage("null")
)

const (
	systemFingerprint = "fp_fakeai"
	serviceTier       = "default"
	maxChoices        = 128
)

type chatCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	Choices           []chatChoice `json:"choices"`
	Usage             *usage       `json:"usage"`
	ServiceTier       string       `json:"service_tier"`
	SystemFingerprint string       `json:"system_fingerprint"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatMessageOut  `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type chatMessageOut struct {
	Role        string          `json:"role"`
	Content     string          `json:"content"`
	Refusal     json.RawMessage `json:"refusal"`
	Annotations []struct{}      `json:"annotations"`
}

type chatChunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	ServiceTier       string        `json:"service_tier"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	Usage             any           `json:"usage,omitempty"` // nil: absent; jsonNull or *usage
}

type chunkChoice struct {
	Index        int             `json:"index"`
	Delta        chunkDelta      `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chunkDelta struct {
	Role    string          `json:"role,omitempty"`
	Content *string         `json:"content,omitempty"`
	Refusal json.RawMessage `json:"refusal,omitempty"`
}

// choiceCount validates n (default 1), answering 400 when out of range.
func (c *call) choiceCount(n *int) (int, bool) {
	switch {
	case n == nil:
		return 1, true
	case *n < 1:
		c.belowMin("n", *n, 1)
		return 0, false
	case *n > maxChoices:
		c.aboveMax("n", *n, maxChoices)
		return 0, false
	}
	return *n, true
}

// tokenLimit validates an optional max tokens parameter (0 = none).
func (c *call) tokenLimit(name string, v *int) (int, bool) {
	if v == nil {
		return 0, true
	}
	if *v < 1 {
		c.belowMin(name, *v, 1)
		return 0, false
	}
	return *v, true
}

func (c *call) streamOptionsAllowed(stream bool, so *streamOptions) bool {
	if so != nil && !stream {
		c.invalid("stream_options", "invalid_value",
			"The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		return false
	}
	return true
}

func (c *call) chatCompletions() {
	var req chatRequest
	if !c.decode(&req) {
		return
	}
	if req.Model == "" {
		c.missingModel()
		return
	}
	if req.Messages == nil {
		c.missingParam("messages")
		return
	}
	msgs := *req.Messages
	if len(msgs) == 0 {
		c.invalid("messages", "empty_array", "Invalid 'messages': empty array. Expected an array with minimum "+
			"length 1, but got an empty array instead.")
		return
	}
	n, ok := c.choiceCount(req.N)
	if !ok {
		return
	}
	limitParam, limitValue := "max_tokens", req.MaxTokens
	if req.MaxCompletionTokens != nil {
		limitParam, limitValue = "max_completion_tokens", req.MaxCompletionTokens
	}
	maxTokens, ok := c.tokenLimit(limitParam, limitValue)
	if !ok || !c.streamOptionsAllowed(req.Stream, req.StreamOptions) {
		return
	}
	prompt, last := 0, ""
	for i := range msgs {
		text, ok := contentText(msgs[i].Content)
		if !ok {
			c.invalid("messages["+strconv.Itoa(i)+"].content", "invalid_type", "Invalid type for 'messages["+
				strconv.Itoa(i)+"].content': expected one of a string or array of objects, but got an object instead.")
			return
		}
		prompt += countWords(text)
		if msgs[i].Role == "user" {
			last = text
		}
	}
	ans := makeAnswer(last, maxTokens, &c.opts)
	completion := n * ans.tokens
	if !c.admit(prompt+completion, req.Model) {
		return
	}
	c.settle(prompt, completion)
	u := &usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion,
		PromptTokensDetails: zeroPromptDetails, CompletionTokensDetails: zeroCompletionDetails}
	id, created := newID("chatcmpl-", 29), time.Now().Unix()

	if !req.Stream {
		choices := make([]chatChoice, n)
		for i := range choices {
			choices[i] = chatChoice{Index: i, Logprobs: jsonNull, FinishReason: ans.finish,
				Message: chatMessageOut{Role: "assistant", Content: ans.text, Refusal: jsonNull, Annotations: emptyList}}
		}
		c.writeJSON(200, &chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: req.Model,
			Choices: choices, Usage: u, ServiceTier: serviceTier, SystemFingerprint: systemFingerprint})
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	st := c.openStream()
	c.streamChat(st, id, created, req.Model, n, ans, u, includeUsage)
	st.done()
}

// streamChat writes the chunks of a chat completion stream: a role chunk per
// choice, Chunks content chunks per choice, a finish chunk per choice and,
// when asked, a usage chunk with no choices.
func (c *call) streamChat(st *stream, id string, created int64, model string, n int, ans answer, u *usage, includeUsage bool) {
	ch := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: model,
		ServiceTier: serviceTier, SystemFingerprint: systemFingerprint, Choices: make([]chunkChoice, 1)}
	if includeUsage {
		ch.Usage = jsonNull
	}
	choice := &ch.Choices[0]
	choice.Logprobs = jsonNull
	empty := ""
	for i := 0; i < n; i++ {
		*choice = chunkChoice{Index: i, Logprobs: jsonNull,
			Delta: chunkDelta{Role: "assistant", Content: &empty, Refusal: jsonNull}}
		if !st.event("", &ch) {
			return
		}
	}
	pieces := splitPieces(ans.text, c.opts.chunks)
	for p := range pieces {
		for i := 0; i < n; i++ {
			*choice = chunkChoice{Index: i, Logprobs: jsonNull, Delta: chunkDelta{Content: &pieces[p]}}
			if !st.event("", &ch) {
				return
			}
		}
	}
	finish := ans.finish
	for i := 0; i < n; i++ {
		*choice = chunkChoice{Index: i, Logprobs: jsonNull, FinishReason: &finish}
		if !st.event("", &ch) {
			return
		}
	}
	if includeUsage {
		ch.Choices = ch.Choices[:0]
		ch.Usage = u
		st.event("", &ch)
	}
}
