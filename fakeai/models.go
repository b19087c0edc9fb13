package fakeai

import (
	"net/http"
	"strings"
)

// modelObject is an entry of GET /v1/models.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"` // Unix seconds
	OwnedBy string `json:"owned_by"`
}

// knownModels lists the models GET /v1/models returns. Any id beginning with
// one of knownPrefixes is also known to GET /v1/models/{id}.
var knownModels = []modelObject{
	{ID: "gpt-4o-mini", Object: "model", Created: 1721172741, OwnedBy: "system"},
	{ID: "gpt-4o", Object: "model", Created: 1715367049, OwnedBy: "system"},
	{ID: "gpt-4.1", Object: "model", Created: 1744316542, OwnedBy: "system"},
	{ID: "gpt-4.1-mini", Object: "model", Created: 1744318173, OwnedBy: "system"},
	{ID: "gpt-4.1-nano", Object: "model", Created: 1744321707, OwnedBy: "system"},
	{ID: "gpt-4-turbo", Object: "model", Created: 1712361441, OwnedBy: "system"},
	{ID: "gpt-3.5-turbo", Object: "model", Created: 1677610602, OwnedBy: "openai"},
	{ID: "gpt-3.5-turbo-instruct", Object: "model", Created: 1692901427, OwnedBy: "system"},
	{ID: "o1", Object: "model", Created: 1734375816, OwnedBy: "system"},
	{ID: "o3-mini", Object: "model", Created: 1737146383, OwnedBy: "system"},
	{ID: "o4-mini", Object: "model", Created: 1744225351, OwnedBy: "system"},
	{ID: "text-embedding-3-small", Object: "model", Created: 1705948997, OwnedBy: "system"},
	{ID: "text-embedding-3-large", Object: "model", Created: 1705953180, OwnedBy: "system"},
	{ID: "text-embedding-ada-002", Object: "model", Created: 1671217299, OwnedBy: "openai-internal"},
	{ID: "tts-1", Object: "model", Created: 1681940951, OwnedBy: "openai-internal"},
	{ID: "gpt-4o-mini-tts", Object: "model", Created: 1742403959, OwnedBy: "system"},
	{ID: "whisper-1", Object: "model", Created: 1677532384, OwnedBy: "openai-internal"},
}

var knownPrefixes = []string{"gpt-", "text-", "o", "tts-", "whisper-", "dall-e-"}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}

func (c *call) listModels() {
	data := append(append([]modelObject(nil), knownModels...), c.s.fineTunedModels()...)
	c.writeJSON(http.StatusOK, modelList{Object: "list", Data: data})
}

func (c *call) getModel(id string) {
	for _, m := range append(c.s.fineTunedModels(), knownModels...) {
		if m.ID == id {
			c.writeJSON(http.StatusOK, m)
			return
		}
	}
	for _, p := range knownPrefixes {
		if strings.HasPrefix(id, p) {
			c.writeJSON(http.StatusOK, modelObject{ID: id, Object: "model", Created: 1700000000, OwnedBy: "system"})
			return
		}
	}
	c.fail(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model",
		"The model '"+id+"' does not exist")
}
