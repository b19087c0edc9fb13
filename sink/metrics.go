package sink

import "github.com/prometheus/client_golang/prometheus"

// Reasons a record is dropped, the values of sluice_sink_dropped_total's
// "reason" label.
const (
	// DropQueueFull: the in-memory queue was full when the proxy enqueued.
	DropQueueFull = "queue_full"
	// DropStopped: the record came after Stop.
	DropStopped = "stopped"
	// DropSpoolFull: the spool was full; its oldest segment was dropped.
	DropSpoolFull = "spool_full"
	// DropSpoolError: the spool could not write the batch (disk error).
	DropSpoolError = "spool_error"
	// DropCorrupt: a spooled frame failed its checksum; its rows are lost.
	DropCorrupt = "corrupt"
	// DropWriteError: no spool is configured and the writer kept failing.
	DropWriteError = "write_error"
)

var dropReasons = []string{DropQueueFull, DropStopped, DropSpoolFull, DropSpoolError, DropCorrupt, DropWriteError}

// metrics are the sink's collectors, resolved at start.
type metrics struct {
	enqueued     prometheus.Counter
	written      prometheus.Counter
	batches      prometheus.Counter
	batchRows    prometheus.Histogram
	writeSeconds prometheus.Histogram
	writeErrors  prometheus.Counter
	spooled      prometheus.Counter
	replayed     prometheus.Counter
	spoolBytes   prometheus.Gauge
	spoolSegs    prometheus.Gauge
	queueLen     prometheus.GaugeFunc
	dropped      map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, queueLen, writerUp, lag, fill func() float64) *metrics {
	m := &metrics{
		enqueued: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_sink_enqueued_total",
			Help: "Transcript records the proxy handed to the sink."}),
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_sink_written_total",
			Help: "Transcript rows written to the destination (ClickHouse or JSONL), replays included."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_sink_batches_total",
			Help: "Batches written to the destination, replays included."}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_sink_batch_rows",
			Help:    "Rows per batch written to the destination.",
			Buckets: []float64{1, 10, 100, 1000, 5000, 10000, 20000, 50000, 100000}}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_sink_write_duration_seconds",
			Help:    "Time to write one batch to the destination, failures included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_sink_clickhouse_errors_total",
			Help: "Batch writes that failed (ClickHouse connection, timeout or server error; or the JSONL file); the batch went to the spool or was retried."}),
		spooled: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_sink_spooled_total",
			Help: "Transcript rows written to the disk spool because the destination was down, slow or stopping."}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_sink_replayed_total",
			Help: "Spooled rows replayed to the destination."}),
		spoolBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_sink_spool_bytes",
			Help: "Bytes in the disk spool not yet replayed."}),
		spoolSegs: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_sink_spool_segments",
			Help: "Segment files in the disk spool."}),
		dropped: map[string]prometheus.Counter{},
	}
	m.queueLen = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_sink_queue_length",
		Help: "Records waiting in the sink's in-memory queue."}, queueLen)
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_sink_dropped_total",
		Help: "Transcript rows lost, by reason (queue_full, stopped, spool_full, spool_error, corrupt, write_error)."},
		[]string{"reason"})
	for _, r := range dropReasons {
		m.dropped[r] = dropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.enqueued, m.written, m.batches, m.batchRows, m.writeSeconds, m.writeErrors,
			m.spooled, m.replayed, m.spoolBytes, m.spoolSegs, m.queueLen, dropped,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_sink_writer_up",
				Help: "1 while the transcript destination (ClickHouse or JSONL) takes batches; 0 from a failed write until the next one succeeds."},
				writerUp),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_sink_lag_seconds",
				Help: "Age of the oldest transcript record taken from the queue and not yet written or spooled (since its exchange ended); 0 when none waits."},
				lag),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_sink_queue_fill_ratio",
				Help: "How full the in-memory transcript queue is, 0 to 1: the larger of records/queue_size and bytes/queue_bytes; at 1 new records are dropped (queue_full)."},
				fill))
	}
	return m
}
