package fakeai

import (
	"encoding/json"
	"time"
)

// responsesRequest holds the fields of a Responses API request the fake uses.
type responsesRequest struct {
	Model           string          `json:"model"`
	Input           json.RawMessage `json:"input"`
	Instructions    json.RawMessage `json:"instructions"`
	Stream          bool            `json:"stream"`
	MaxOutputTokens *int            `json:"max_output_tokens"`
	User            *string         `json:"user"`
}

// inputItem is an element of an array-valued input.
type inputItem struct {
	Type    string          `json:"type"`
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type responseObject struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"`
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"`
	Background         bool               `json:"background"`
	Error              json.RawMessage    `json:"error"`
	IncompleteDetails  *incompleteDetails `json:"incomplete_details"`
	Instructions       json.RawMessage    `json:"instructions"`
	MaxOutputTokens    *int               `json:"max_output_tokens"`
	Model              string             `json:"model"`
	Output             []outputItem       `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	PreviousResponseID json.RawMessage    `json:"previous_response_id"`
	Reasoning          reasoningConfig    `json:"reasoning"`
	ServiceTier        string             `json:"service_tier"`
	Store              bool               `json:"store"`
	Temperature        float64            `json:"temperature"`
	Text               textConfig         `json:"text"`
	ToolChoice         string             `json:"tool_choice"`
	Tools              []struct{}         `json:"tools"`
	TopP               float64            `json:"top_p"`
	Truncation         string             `json:"truncation"`
	Usage              *responseUsage     `json:"usage"`
	User               *string            `json:"user"`
	Metadata           struct{}           `json:"metadata"`
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

type reasoningConfig struct {
	Effort  json.RawMessage `json:"effort"`
	Summary json.RawMessage `json:"summary"`
}

type textConfig struct {
	Format struct {
		Type string `json:"type"`
	} `json:"format"`
}

type outputItem struct {
	ID      string       `json:"id"`
	Type    string       `json:"type"`
	Status  string       `json:"status"`
	Content []outputText `json:"content"`
	Role    string       `json:"role"`
}

type outputText struct {
	Type        string     `json:"type"`
	Annotations []struct{} `json:"annotations"`
	Logprobs    []struct{} `json:"logprobs"`
	Text        string     `json:"text"`
}

type responseUsage struct {
	InputTokens         int                 `json:"input_tokens"`
	InputTokensDetails  inputTokensDetails  `json:"input_tokens_details"`
	OutputTokens        int                 `json:"output_tokens"`
	OutputTokensDetails outputTokensDetails `json:"output_tokens_details"`
	TotalTokens         int                 `json:"total_tokens"`
}

type inputTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

type outputTokensDetails struct {
	ReasoningTokens int `json:"reasoning_tokens"`
}

// Stream events of the Responses API.
type responseEvent struct {
	Type           string          `json:"type"`
	SequenceNumber int             `json:"sequence_number"`
	Response       *responseObject `json:"response"`
}

type outputItemEvent struct {
	Type           string      `json:"type"`
	SequenceNumber int         `json:"sequence_number"`
	OutputIndex    int         `json:"output_index"`
	Item           *outputItem `json:"item"`
}

type contentPartEvent struct {
	Type           string      `json:"type"`
	SequenceNumber int         `json:"sequence_number"`
	ItemID         string      `json:"item_id"`
	OutputIndex    int         `json:"output_index"`
	ContentIndex   int         `json:"content_index"`
	Part           *outputText `json:"part"`
}

type textDeltaEvent struct {
	Type           string     `json:"type"`
	SequenceNumber int        `json:"sequence_number"`
	ItemID         string     `json:"item_id"`
	OutputIndex    int        `json:"output_index"`
	ContentIndex   int        `json:"content_index"`
	Delta          string     `json:"delta"`
	Logprobs       []struct{} `json:"logprobs"`
}

type textDoneEvent struct {
	Type           string     `json:"type"`
	SequenceNumber int        `json:"sequence_number"`
	ItemID         string     `json:"item_id"`
	OutputIndex    int        `json:"output_index"`
	ContentIndex   int        `json:"content_index"`
	Text           string     `json:"text"`
	Logprobs       []struct{} `json:"logprobs"`
}

// responseInput returns the input's token count and the text of its last
// user message. input is a string or an array of messages whose content is a
// string or an array of input_text parts.
func responseInput(raw json.RawMessage) (tokens int, last string, ok bool) {
	raw = trimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, "", true
	}
	if raw[0] == '"' {
		if json.Unmarshal(raw, &last) != nil {
			return 0, "", false
		}
		return countWords(last), last, true
	}
	var items []inputItem
	if json.Unmarshal(raw, &items) != nil {
		return 0, "", false
	}
	for _, it := range items {
		if it.Type != "" && it.Type != "message" {
			continue
		}
		text, ok := contentText(it.Content)
		if !ok {
			return 0, "", false
		}
		tokens += countWords(text)
		if it.Role == "user" {
			last = text
		}
	}
	return tokens, last, true
}

func (c *call) responses() {
	var req responsesRequest
	if !c.decode(&req) {
		return
	}
	if req.Model == "" {
		c.missingModel()
		return
	}
	inTokens, last, ok := responseInput(req.Input)
	if !ok {
		c.invalid("input", "invalid_type", "Invalid type for 'input': expected one of a string or array of input items.")
		return
	}
	if len(req.Instructions) > 0 && req.Instructions[0] == '"' {
		var s string
		if json.Unmarshal(req.Instructions, &s) == nil {
			inTokens += countWords(s)
		}
	}
	maxTokens, ok := c.tokenLimit("max_output_tokens", req.MaxOutputTokens)
	if !ok {
		return
	}
	ans := makeAnswer(last, maxTokens, &c.opts)
	if !c.admit(inTokens+ans.tokens, req.Model) {
		return
	}
	c.settle(inTokens, ans.tokens)

	resp := &responseObject{
		ID: newID("resp_", 48), Object: "response", CreatedAt: time.Now().Unix(), Status: "completed",
		Error: jsonNull, Instructions: orNull(req.Instructions), MaxOutputTokens: req.MaxOutputTokens,
		Model: req.Model, Output: []outputItem{}, ParallelToolCalls: true, PreviousResponseID: jsonNull,
		Reasoning: reasoningConfig{Effort: jsonNull, Summary: jsonNull}, ServiceTier: serviceTier, Store: true,
		Temperature: 1, ToolChoice: "auto", Tools: emptyList, TopP: 1, Truncation: "disabled", User: req.User,
	}
	resp.Text.Format.Type = "text"
	final := "response.completed"
	var incomplete *incompleteDetails
	if ans.finish == "length" {
		final, incomplete = "response.incomplete", &incompleteDetails{Reason: "max_output_tokens"}
	}
	item := outputItem{ID: newID("msg_", 48), Type: "message", Role: "assistant", Status: "completed",
		Content: []outputText{{Type: "output_text", Annotations: emptyList, Logprobs: emptyList, Text: ans.text}}}
	usage := &responseUsage{InputTokens: inTokens, OutputTokens: ans.tokens, TotalTokens: inTokens + ans.tokens}
	complete := func() {
		resp.Status, resp.IncompleteDetails, resp.Output, resp.Usage = "completed", nil, []outputItem{item}, usage
		if incomplete != nil {
			resp.Status, resp.IncompleteDetails, resp.Output[0].Status = "incomplete", incomplete, "incomplete"
		}
	}

	if !req.Stream {
		complete()
		c.writeJSON(200, resp)
		return
	}
	st := c.openStream()
	c.streamResponse(st, resp, item, ans, final, complete)
	st.finish()
}

// streamResponse writes the Responses API event sequence: created,
// in_progress, output_item.added, content_part.added, Chunks
// output_text.delta, output_text.done, content_part.done, output_item.done
// and completed (or incomplete).
func (c *call) streamResponse(st *stream, resp *responseObject, item outputItem, ans answer, final string, complete func()) {
	seq := 0
	emit := func(name string, v any) bool {
		ok := st.event(name, v)
		seq++
		return ok
	}
	resp.Status = "in_progress"
	if !emit("response.created", &responseEvent{Type: "response.created", SequenceNumber: seq, Response: resp}) ||
		!emit("response.in_progress", &responseEvent{Type: "response.in_progress", SequenceNumber: seq, Response: resp}) {
		return
	}
	started := outputItem{ID: item.ID, Type: item.Type, Role: item.Role, Status: "in_progress", Content: []outputText{}}
	if !emit("response.output_item.added", &outputItemEvent{Type: "response.output_item.added", SequenceNumber: seq, Item: &started}) {
		return
	}
	part := outputText{Type: "output_text", Annotations: emptyList, Logprobs: emptyList}
	if !emit("response.content_part.added", &contentPartEvent{Type: "response.content_part.added", SequenceNumber: seq,
		ItemID: item.ID, Part: &part}) {
		return
	}
	delta := textDeltaEvent{Type: "response.output_text.delta", ItemID: item.ID, Logprobs: emptyList}
	for _, p := range splitPieces(ans.text, c.opts.chunks) {
		delta.SequenceNumber, delta.Delta = seq, p
		if !emit(delta.Type, &delta) {
			return
		}
	}
	if !emit("response.output_text.done", &textDoneEvent{Type: "response.output_text.done", SequenceNumber: seq,
		ItemID: item.ID, Text: ans.text, Logprobs: emptyList}) {
		return
	}
	part.Text = ans.text
	if !emit("response.content_part.done", &contentPartEvent{Type: "response.content_part.done", SequenceNumber: seq,
		ItemID: item.ID, Part: &part}) {
		return
	}
	complete()
	done := resp.Output[0]
	if !emit("response.output_item.done", &outputItemEvent{Type: "response.output_item.done", SequenceNumber: seq, Item: &done}) {
		return
	}
	emit(final, &responseEvent{Type: final, SequenceNumber: seq, Response: resp})
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(trimSpace(raw)) == 0 {
		return jsonNull
	}
	return raw
}
