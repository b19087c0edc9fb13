// Package policy decides who a request acts for and where it goes: the
// policies.yaml model (strict decode, validation with file and line),
// identity by hashed virtual key, and model routing. Later it holds the
// per-user buckets and the fair queue. It must not import proxy, cache or
// sink.
package policy
