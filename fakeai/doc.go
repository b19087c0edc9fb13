// Package fakeai is a fake OpenAI API server for tests, demos and benchmarks.
//
// It is the only stand-in for the provider where there is no internet, so it
// answers with the shapes, headers and errors of the real API:
//
//	POST /v1/chat/completions   chat.completion / chat.completion.chunk (SSE)
//	POST /v1/completions        text_completion (legacy), stream too
//	POST /v1/embeddings         float arrays or base64 little-endian float32
//	GET  /v1/models             list; GET /v1/models/{id}: model or 404 model_not_found
//	POST /v1/responses          response object, or the response.* SSE event sequence
//	POST /v1/files              multipart upload; echoes exact byte length and "sha256"
//	POST /v1/audio/speech       4096 deterministic binary bytes (see [SpeechBytes])
//
// Anything else is a 404 with code "unknown_url".
//
// # Answers
//
// Answers are derived from the request so that tests can tell them apart: the
// assistant says "echo: " followed by the text of the last user message (chat),
// the prompt (legacy completions) or the last user input (responses). Tokens are
// counted as whitespace-separated words: prompt tokens are the words of all
// message texts, completion tokens the words of the answer (times n choices).
// max_tokens, max_completion_tokens and max_output_tokens truncate the answer to
// that many words and set finish_reason "length" (status "incomplete" for
// responses). Any model name is accepted by the inference endpoints.
//
// # Streams
//
// Stream headers (text/event-stream; charset=utf-8) are flushed at once; every
// event is one flushed write. A chat stream sends, per choice, a role chunk
// (delta {"role":"assistant","content":""}), Chunks content chunks whose
// contents concatenate to the answer, and a finish chunk (delta {},
// finish_reason set); with stream_options.include_usage every chunk carries
// "usage":null and one last chunk has "choices":[] and the usage; then
// "data: [DONE]". Legacy completions stream the same way without the role chunk.
// A Responses stream sends named events (event: response.created, ...) with
// matching "type" and "sequence_number" fields and no [DONE]. X-Fake-Cut-After
// and X-Fake-Hang-After count every event written, the role chunk and an
// X-Fake-Malformed-SSE event included; a
// stream asked to cut or hang never ends cleanly even if it has fewer events.
//
// # Fault injection
//
// Per request, through headers (a gateway forwards them unchanged):
//
//	X-Fake-Status: 429|500|502|503|4xx|5xx  answer that status with an OpenAI-shaped error
//	X-Fake-Retry-After-Ms: N                 retry-after-ms (and retry-after, rounded up) on 429/503
//	X-Fake-Hang: 1                           never answer; return when the client goes away
//	X-Fake-Hang-After: N                     stream N events, then stall until the client goes away
//	X-Fake-Cut-After: N                      stream N events, then drop the connection (no [DONE]);
//	                                         non-stream: send N body bytes, then drop the connection
//	X-Fake-Latency: 200ms                    overrides [Config.Latency]
//	X-Fake-Chunks: N                         overrides [Config.Chunks]
//	X-Fake-Chunk-Interval: 50ms              overrides [Config.ChunkInterval]
//	X-Fake-Chunk-Size: N                     each content delta is N bytes of filler text
//	X-Fake-Trickle: 10ms                     after the headers, send the body (or each stream
//	                                         event) one flushed byte at a time, this pause apart
//	X-Fake-Malformed-SSE: json|nodata|garbage  after a stream's first event, send one bad event
//	                                         (a data line of cut JSON; event:/id: lines and no
//	                                         data; lines that are no SSE field), then go on to [DONE]
//	X-Fake-Body: html|text                   answer X-Fake-Status's status (200 without it) with
//	                                         an nginx-style HTML page or a line of plain text,
//	                                         not JSON, stream requests included
//
// Server-wide faults are set with [Server.SetFault] and [Server.SetFaultCount].
// A malformed X-Fake-* header is answered with a 400 so that test mistakes show.
//
// Cutting a connection panics with [net/http.ErrAbortHandler], as net/http
// expects; call ServeHTTP through an [net/http.Server] (see [Start]), not
// directly with an httptest.ResponseRecorder, when using X-Fake-Cut-After.
//
// # Rate limits
//
// [Config.RPM] and [Config.TPM] are enforced with token buckets that refill
// continuously (capacity one minute's worth), like the real API. Inference and
// upload endpoints (POST) spend from them; GET /v1/models does not. Beyond the
// limit the answer is a 429 with exact retry-after, retry-after-ms and
// x-ratelimit-* headers.
package fakeai
