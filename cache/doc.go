// Package cache will hold the response cache: canonical request keys, an
// in-memory LRU bounded in bytes, a Redis store, single-flight of identical
// in-flight requests and SSE replay of stored completions. It is empty until
// the cache issue lands; the proxy does not call it yet. It must not import
// proxy, policy or sink.
package cache
