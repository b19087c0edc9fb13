// Package sink is the transcript pipeline: the record, the bounded queue and
// batcher, one writer per table (ClickHouse over the native protocol, or
// rotating JSONL files), the disk spool that keeps batches through a
// ClickHouse outage, redaction and the metrics. The proxy hands it owned
// copies with a non-blocking Enqueue; nothing here ever waits on a request.
//
// It must not import proxy, policy or cache.
package sink
