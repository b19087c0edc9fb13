package proxy

import "bytes"

// endpoint is what a request path names.
type endpoint uint8

const (
	epChat        endpoint = iota // POST /v1/chat/completions
	epCompletions                 // POST /v1/completions
	epEmbeddings                  // POST /v1/embeddings
	epResponses                   // POST /v1/responses
	epModels                      // GET /v1/models
	epModel                       // GET /v1/models/{id}
	epPassthrough                 // any other /v1/* path, forwarded byte for byte
	epUnknown                     // outside /v1
	epCount
)

// endpointLabels are the values of the "route" metric label.
var endpointLabels = [epCount]string{
	epChat:        "chat_completions",
	epCompletions: "completions",
	epEmbeddings:  "embeddings",
	epResponses:   "responses",
	epModels:      "models",
	epModel:       "model",
	epPassthrough: "passthrough",
	epUnknown:     "unknown",
}

var (
	prefixV1     = []byte("/v1/")
	prefixModels = []byte("/v1/models/")
)

// classify maps a request path to its endpoint.
func classify(path []byte) endpoint {
	switch string(path) {
	case "/v1/chat/completions":
		return epChat
	case "/v1/completions":
		return epCompletions
	case "/v1/embeddings":
		return epEmbeddings
	case "/v1/responses":
		return epResponses
	case "/v1/models":
		return epModels
	}
	if bytes.HasPrefix(path, prefixModels) && len(path) > len(prefixModels) {
		return epModel
	}
	if bytes.HasPrefix(path, prefixV1) {
		return epPassthrough
	}
	return epUnknown
}

// parsesBody reports the endpoints whose JSON body the proxy reads and
// whose answer it may read too.
func (e endpoint) parsesBody() bool { return e <= epResponses }

// streams reports the endpoints that may answer with an SSE stream.
func (e endpoint) streams() bool { return e == epChat || e == epCompletions || e == epResponses }

// compressible reports the endpoints whose answers Sluice compresses for
// the client itself (it reads them uncompressed from the upstream).
func (e endpoint) compressible() bool { return e.parsesBody() }
