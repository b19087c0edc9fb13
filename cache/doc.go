// Package cache is the response cache: canonical request keys, an in-memory
// store bounded in bytes (a ring outside the Go heap that evicts about as an
// LRU does), a Redis store, single-flight of identical
// in-flight requests and SSE replay of stored completions. It must not
// import proxy, policy or sink.
package cache
