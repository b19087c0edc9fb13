// Package sink will hold the transcript pipeline: the record, the bounded
// batcher, the ClickHouse writer, the disk spool and the JSONL default. It is
// empty until the transcripts issue lands; the proxy records nothing yet. It
// must not import proxy, policy or cache.
package sink
