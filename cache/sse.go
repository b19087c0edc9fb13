package cache

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The stream forms of chat completions and legacy completions, and their
// non-stream forms, as far as a cached answer needs them. Fields Sluice does
// not know are not kept: an answer that uses one (logprobs, audio) is not
// stored from a stream.

type streamChunk struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint *string         `json:"system_fingerprint,omitempty"`
	ServiceTier       *string         `json:"service_tier,omitempty"`
	Choices           []chunkChoice   `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int             `json:"index"`
	Delta        *chunkDelta     `json:"delta,omitempty"`
	Text         *string         `json:"text,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chunkDelta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	Refusal   *string         `json:"refusal,omitempty"`
	ToolCalls []toolCallDelta `json:"tool_calls,omitempty"`
	// Audio, function_call and anything else make the chunk unstorable.
	Audio        json.RawMessage `json:"audio,omitempty"`
	FunctionCall json.RawMessage `json:"function_call,omitempty"`
}

type toolCallDelta struct {
	Index    int      `json:"index"`
	ID       string   `json:"id,omitempty"`
	Type     string   `json:"type,omitempty"`
	Function funcCall `json:"function"`
}

type funcCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type completion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	Choices           []answerChoice  `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
	ServiceTier       *string         `json:"service_tier,omitempty"`
	SystemFingerprint *string         `json:"system_fingerprint,omitempty"`
}

type answerChoice struct {
	Index        int             `json:"index"`
	Message      *answerMessage  `json:"message,omitempty"`
	Text         *string         `json:"text,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type answerMessage struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"`
	Refusal   *string    `json:"refusal"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
}

type toolCall struct {
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Function funcCall `json:"function"`
}

var (
	dataPrefix = []byte("data:")
	doneData   = []byte("[DONE]")
	jsonNull   = json.RawMessage("null")
)

// ErrNotStorable means a stream cannot be turned into a stored answer: it
// did not end with [DONE], a choice has no finish_reason, or it carries
// parts Sluice does not assemble (logprobs, audio).
var ErrNotStorable = errors.New("cache: answer cannot be stored")

func isNull(r json.RawMessage) bool { return len(r) == 0 || bytes.Equal(r, jsonNull) }

// partsOf collects one choice's streamed strings. Each is built in a
// buffer: appending delta by delta to a string copied the whole string each
// time (a 400 KiB tool call in 4-byte deltas took 17 s).
type partsOf struct {
	text    bytes.Buffer
	refusal *bytes.Buffer // nil: no refusal delta
	// names and args of the tool calls, by index
	names, args []*bytes.Buffer
}

// AssembleStream turns the SSE events of a complete chat completion or
// legacy completion stream into the equivalent non-stream answer body.
func AssembleStream(events [][]byte) ([]byte, error) {
	var out completion
	var choices []*answerChoice
	var text []*partsOf
	done := false
	for _, ev := range events {
		for line := range bytes.Lines(ev) {
			line = bytes.TrimRight(line, "\r\n")
			if !bytes.HasPrefix(line, dataPrefix) {
				continue
			}
			data := bytes.TrimSpace(line[len(dataPrefix):])
			if bytes.Equal(data, doneData) {
				done = true
				continue
			}
			var ch streamChunk
			if err := json.Unmarshal(data, &ch); err != nil {
				return nil, ErrNotStorable
			}
			if ch.Object == "" && len(ch.Choices) == 0 {
				// Azure's first chunk: only prompt_filter_results, no
				// object, id or choices. Nothing of the answer.
				continue
			}
			if out.Object == "" {
				out.ID, out.Created, out.Model = ch.ID, ch.Created, ch.Model
				switch ch.Object {
				case "chat.completion.chunk":
					out.Object = "chat.completion"
				case "text_completion":
					out.Object = "text_completion"
				default:
					return nil, ErrNotStorable
				}
			}
			if ch.SystemFingerprint != nil {
				out.SystemFingerprint = ch.SystemFingerprint
			}
			if ch.ServiceTier != nil {
				out.ServiceTier = ch.ServiceTier
			}
			if !isNull(ch.Usage) {
				out.Usage = ch.Usage
			}
			for i := range ch.Choices {
				c := &ch.Choices[i]
				if !isNull(c.Logprobs) || c.Index < 0 || c.Index > 1024 {
					return nil, ErrNotStorable
				}
				for len(choices) <= c.Index {
					choices = append(choices, nil)
					text = append(text, nil)
				}
				a := choices[c.Index]
				if a == nil {
					a = &answerChoice{Index: c.Index, Logprobs: jsonNull}
					if out.Object == "chat.completion" {
						a.Message = &answerMessage{Role: "assistant"}
					}
					choices[c.Index] = a
					text[c.Index] = &partsOf{}
				}
				if c.FinishReason != nil {
					a.FinishReason = c.FinishReason
				}
				p := text[c.Index]
				if c.Text != nil {
					p.text.WriteString(*c.Text)
				}
				d := c.Delta
				if d == nil {
					continue
				}
				if a.Message == nil || len(d.Audio) > 0 || len(d.FunctionCall) > 0 {
					return nil, ErrNotStorable
				}
				m := a.Message
				if d.Role != "" {
					m.Role = d.Role
				}
				if d.Content != nil {
					p.text.WriteString(*d.Content)
					if m.Content == nil {
						m.Content = new(string)
					}
				}
				if d.Refusal != nil {
					if p.refusal == nil {
						p.refusal = &bytes.Buffer{}
					}
					p.refusal.WriteString(*d.Refusal)
				}
				for _, tc := range d.ToolCalls {
					if tc.Index < 0 || tc.Index > 1024 {
						return nil, ErrNotStorable
					}
					for len(m.ToolCalls) <= tc.Index {
						m.ToolCalls = append(m.ToolCalls, toolCall{})
						p.names = append(p.names, &bytes.Buffer{})
						p.args = append(p.args, &bytes.Buffer{})
					}
					t := &m.ToolCalls[tc.Index]
					if tc.ID != "" {
						t.ID = tc.ID
					}
					if tc.Type != "" {
						t.Type = tc.Type
					}
					p.names[tc.Index].WriteString(tc.Function.Name)
					p.args[tc.Index].WriteString(tc.Function.Arguments)
				}
			}
		}
	}
	if !done || out.Object == "" || len(choices) == 0 {
		return nil, ErrNotStorable
	}
	for i, a := range choices {
		if a == nil || a.FinishReason == nil {
			return nil, ErrNotStorable
		}
		p := text[i]
		s := p.text.String()
		if m := a.Message; m != nil {
			if m.Content != nil {
				m.Content = &s
			}
			if p.refusal != nil {
				r := p.refusal.String()
				m.Refusal = &r
			}
			for j := range m.ToolCalls {
				m.ToolCalls[j].Function.Name = p.names[j].String()
				m.ToolCalls[j].Function.Arguments = p.args[j].String()
			}
		} else {
			a.Text = &s
		}
		out.Choices = append(out.Choices, *a)
	}
	return json.Marshal(&out)
}

// RenderStream renders a stored chat completion or legacy completion body
// as the SSE stream that would have produced it: per choice a role chunk,
// the text in one chunk, each tool call, the finish chunk; then, when
// includeUsage, a usage chunk with no choices (and "usage":null on the
// others, as OpenAI sends them); then [DONE].
func RenderStream(body []byte, includeUsage bool) ([]byte, error) {
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, ErrCorrupt
	}
	chat := c.Object == "chat.completion"
	if !chat && c.Object != "text_completion" {
		return nil, ErrNotStorable
	}
	base := streamChunk{ID: c.ID, Object: "text_completion", Created: c.Created, Model: c.Model,
		SystemFingerprint: c.SystemFingerprint, ServiceTier: c.ServiceTier}
	if chat {
		base.Object = "chat.completion.chunk"
	}
	if includeUsage {
		base.Usage = jsonNull
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	emit := func(ch *streamChunk) error {
		buf.Write(dataPrefix)
		buf.WriteByte(' ')
		if err := enc.Encode(ch); err != nil { // Encode ends the line
			return err
		}
		buf.WriteByte('\n')
		return nil
	}
	empty := ""
	for i := range c.Choices {
		a := &c.Choices[i]
		ch := base
		if chat {
			m := a.Message
			if m == nil {
				return nil, ErrCorrupt
			}
			ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Delta: &chunkDelta{Role: m.Role, Content: &empty}}}
			if m.Content == nil {
				ch.Choices[0].Delta.Content = nil
			}
			if err := emit(&ch); err != nil {
				return nil, err
			}
			if m.Content != nil && *m.Content != "" {
				ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Delta: &chunkDelta{Content: m.Content}}}
				if err := emit(&ch); err != nil {
					return nil, err
				}
			}
			if m.Refusal != nil {
				ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Delta: &chunkDelta{Refusal: m.Refusal}}}
				if err := emit(&ch); err != nil {
					return nil, err
				}
			}
			for j, tc := range m.ToolCalls {
				ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Delta: &chunkDelta{ToolCalls: []toolCallDelta{
					{Index: j, ID: tc.ID, Type: tc.Type, Function: tc.Function}}}}}
				if err := emit(&ch); err != nil {
					return nil, err
				}
			}
			ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Delta: &chunkDelta{}, FinishReason: a.FinishReason}}
		} else {
			t := ""
			if a.Text != nil {
				t = *a.Text
			}
			ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Text: &t}}
			if err := emit(&ch); err != nil {
				return nil, err
			}
			ch.Choices = []chunkChoice{{Index: a.Index, Logprobs: jsonNull, Text: &empty, FinishReason: a.FinishReason}}
		}
		if err := emit(&ch); err != nil {
			return nil, err
		}
	}
	if includeUsage && !isNull(c.Usage) {
		ch := base
		ch.Choices = []chunkChoice{}
		ch.Usage = c.Usage
		if err := emit(&ch); err != nil {
			return nil, err
		}
	}
	buf.WriteString("data: [DONE]\n\n")
	return buf.Bytes(), nil
}
