// Package limit is Sluice's leaky-bucket engine: one GCRA (generic cell rate
// algorithm, the leaky bucket as a meter) written once as pure integer math
// in gcra.go, and two stores that apply it — Memory, a sharded in-process
// store (the embedded default), and Redis, which runs a line-for-line
// transliteration of the same math in Lua on the Redis server's clock so
// that gateway replicas share their buckets. parity_test.go feeds identical
// sequences (hand-written and fuzzed) to both and requires identical
// Decisions.
//
// A request draws from several buckets at once (Rules: requests/min,
// tokens/min, tokens/day, …) and may hold concurrency slots (Leases); a
// Store checks all of them and takes all of them or none, atomically. A
// request that is over budget but whose slot comes within its MaxWait
// reserves that future slot (the bucket is the queue) and is told how long
// to wait; Cancel gives the slot back. Denials carry an exact RetryAfter.
//
// All times and durations are int64 microseconds. The package knows nothing
// about users, HTTP or YAML: the caller builds the keys and rates.
package limit
