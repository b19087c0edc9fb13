package fakeai

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// completionRequest holds the fields of a legacy completion request the fake uses.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	N             *int            `json:"n"`
	MaxTokens     *int            `json:"max_tokens"`
}

type textCompletion struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []textChoice `json:"choices"`
	Usage             any          `json:"usage,omitempty"` // nil: absent; jsonNull or *usage
}

type textChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

// promptTexts reads a prompt that is a string, an array of strings, an array
// of token ids or an array of such arrays. Token ids become words so that
// their count is the token count. A missing prompt is one empty prompt.
func promptTexts(raw json.RawMessage) ([]string, bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return []string{""}, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil && len(ss) > 0 {
		return ss, true
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil && len(ids) > 0 {
		return []string{joinInts(ids)}, true
	}
	var idss [][]int
	if json.Unmarshal(raw, &idss) == nil && len(idss) > 0 {
		out := make([]string, len(idss))
		for i, ids := range idss {
			out[i] = joinInts(ids)
		}
		return out, true
	}
	return nil, false
}

func joinInts(ids []int) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(id))
	}
	return b.String()
}

func (c *call) completions() {
	var req completionRequest
	if !c.decode(&req) {
		return
	}
	if req.Model == "" {
		c.missingModel()
		return
	}
	prompts, ok := promptTexts(req.Prompt)
	if !ok {
		c.invalid("prompt", "invalid_type", "Invalid type for 'prompt': expected one of a string, an array of "+
			"strings, an array of integers or an array of arrays of integers.")
		return
	}
	n, ok := c.choiceCount(req.N)
	if !ok {
		return
	}
	maxTokens, ok := c.tokenLimit("max_tokens", req.MaxTokens)
	if !ok || !c.streamOptionsAllowed(req.Stream, req.StreamOptions) {
		return
	}
	prompt, completion := 0, 0
	answers := make([]answer, len(prompts))
	for i, p := range prompts {
		prompt += countWords(p)
		answers[i] = makeAnswer(p, maxTokens, &c.opts)
		completion += n * answers[i].tokens
	}
	if !c.admit(prompt+completion, req.Model) {
		return
	}
	c.settle(prompt, completion)
	u := &usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
	tc := textCompletion{ID: newID("cmpl-", 29), Object: "text_completion", Created: time.Now().Unix(),
		Model: req.Model, SystemFingerprint: systemFingerprint}

	if !req.Stream {
		tc.Choices = make([]textChoice, len(prompts)*n)
		for i := range tc.Choices {
			a := &answers[i/n]
			tc.Choices[i] = textChoice{Text: a.text, Index: i, Logprobs: jsonNull, FinishReason: &a.finish}
		}
		tc.Usage = u
		c.writeJSON(200, &tc)
		return
	}

	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	st := c.openStream()
	c.streamCompletion(st, &tc, answers, n, u, includeUsage)
	st.done()
}

// streamCompletion writes Chunks text chunks per choice, a finish chunk per
// choice and, when asked, a usage chunk with no choices.
func (c *call) streamCompletion(st *stream, tc *textCompletion, answers []answer, n int, u *usage, includeUsage bool) {
	if includeUsage {
		tc.Usage = jsonNull
	}
	tc.Choices = make([]textChoice, 1)
	choice := &tc.Choices[0]
	pieces := make([][]string, len(answers))
	for i := range answers {
		pieces[i] = splitPieces(answers[i].text, c.opts.chunks)
	}
	for p := 0; p < c.opts.chunks; p++ {
		for i := 0; i < len(answers)*n; i++ {
			*choice = textChoice{Text: pieces[i/n][p], Index: i, Logprobs: jsonNull}
			if !st.event("", tc) {
				return
			}
		}
	}
	for i := 0; i < len(answers)*n; i++ {
		*choice = textChoice{Index: i, Logprobs: jsonNull, FinishReason: &answers[i/n].finish}
		if !st.event("", tc) {
			return
		}
	}
	if includeUsage {
		tc.Choices = tc.Choices[:0]
		tc.Usage = u
		st.event("", tc)
	}
}
