package config

import (
	"regexp"
	"time"
)

// Transcripts configures the transcript sink: where records go, what they
// keep, and how they are batched.
type Transcripts struct {
	// Mode is "auto" (ClickHouse when clickhouse.addr is set, else JSONL
	// files), "clickhouse", "jsonl" or "off". Default "auto".
	Mode string `yaml:"mode"`
	// Content is "full" (request messages and response text are kept) or
	// "metadata" (both are left empty). Default "full".
	Content string `yaml:"content"`
	// MaxContentBytes caps the request and the response text each; longer
	// text is cut and ends with "…[truncated N bytes]". Default 65536.
	MaxContentBytes int `yaml:"max_content_bytes"`
	// Redact lists regular expressions scrubbed from the request, response
	// and user agent before a record leaves the process (to ClickHouse, the
	// spool or a file). When absent, built-in rules scrub API keys, AWS keys,
	// bearer tokens and PEM private keys; an empty list turns them off.
	Redact []RedactRule `yaml:"redact"`
	// QueueSize bounds the records waiting in memory; more are dropped and
	// counted (sluice_sink_dropped_total{reason="queue_full"}). Default 65536.
	QueueSize int `yaml:"queue_size"`
	// QueueBytes bounds the bytes of the records waiting in memory (request
	// and answer text included); beyond it they are dropped and counted.
	// Default 268435456 (256 MiB).
	QueueBytes int64 `yaml:"queue_bytes"`
	// BatchRows cuts a batch at this many rows. Default 20000.
	BatchRows int `yaml:"batch_rows"`
	// BatchBytes cuts a batch at about this many bytes. Default 16777216.
	BatchBytes int `yaml:"batch_bytes"`
	// FlushInterval cuts a batch this long after its first row. Default 1s.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// WriteTimeout bounds one batch write; slower batches go to the spool.
	// Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ClickHouse is the destination table.
	ClickHouse TranscriptsClickHouse `yaml:"clickhouse"`
	// Spool keeps batches on disk while ClickHouse is down or slow.
	Spool TranscriptsSpool `yaml:"spool"`
	// JSONL is the file destination (the default without ClickHouse).
	JSONL TranscriptsJSONL `yaml:"jsonl"`
}

// RedactRule replaces every match of Pattern with Replace.
type RedactRule struct {
	// Pattern is a Go (RE2) regular expression. Required.
	Pattern string `yaml:"pattern"`
	// Replace is the replacement text; $1 refers to a group. Default "".
	Replace string `yaml:"replace"`
	// Hint is text (ASCII, any case) every match contains; text without it
	// skips the expression, which keeps clean text cheap. Default "": the
	// expression always runs.
	Hint string `yaml:"hint"`
}

// TranscriptsClickHouse is the ClickHouse server and table.
type TranscriptsClickHouse struct {
	// Addr is host:port of the native protocol. Empty: no ClickHouse.
	Addr string `yaml:"addr"`
	// Database is created if missing. Default "sluice".
	Database string `yaml:"database"`
	// Table is created if missing. Default "transcripts".
	Table string `yaml:"table"`
	// Username and Password authenticate. Default user "default".
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// DialTimeout bounds a connection attempt. Default 2s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TTLDays expires rows on servers with TTL (20.x and later). Default 0:
	// keep everything.
	TTLDays int `yaml:"ttl_days"`
	// Compression of inserts on the wire: "lz4", "none", or "auto" (the
	// default): lz4 unless the server is on loopback, where it costs more
	// CPU than it saves (measured: 88k vs 105k rows/s into a local 18.16).
	Compression string `yaml:"compression"`
	// Cluster names a cluster of the servers' remote_servers: the tables
	// are created ON CLUSTER (Table_local, replicated, on every node; Table,
	// Distributed over them) and rows inserted through Table on Addr.
	// Default "": one server (docs/transcripts.md).
	Cluster string `yaml:"cluster"`
}

// TranscriptsSpool is the on-disk spool for ClickHouse outages.
type TranscriptsSpool struct {
	// Dir holds the segment files. Default "spool" (relative to the working
	// directory).
	Dir string `yaml:"dir"`
	// MaxBytes bounds the spool; when full, the oldest segment is dropped and
	// counted. Default 1073741824 (1 GiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// SegmentBytes is the size of one segment file. Default 16777216.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// NoFsync skips the fsync after each spooled batch. Default false.
	NoFsync bool `yaml:"no_fsync"`
}

// TranscriptsJSONL is the JSONL file destination.
type TranscriptsJSONL struct {
	// Dir holds "transcripts-YYYY-MM-DD.N.jsonl". Default "transcripts".
	Dir string `yaml:"dir"`
	// MaxFileBytes starts a new file when one passes it. Default 104857600.
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// MaxFiles keeps at most this many files (oldest removed). Default 0: all.
	MaxFiles int `yaml:"max_files"`
	// NoFsync skips the fsync after each batch. Default false.
	NoFsync bool `yaml:"no_fsync"`
}

// Transcript modes, after defaults (auto is resolved).
const (
	ModeOff        = "off"
	ModeJSONL      = "jsonl"
	ModeClickHouse = "clickhouse"
)

func (t *Transcripts) applyDefaults() {
	setDefault(&t.Mode, "auto")
	if t.Mode == "auto" {
		t.Mode = ModeJSONL
		if t.ClickHouse.Addr != "" {
			t.Mode = ModeClickHouse
		}
	}
	setDefault(&t.Content, "full")
	setDefault(&t.MaxContentBytes, 64<<10)
	setDefault(&t.QueueSize, 65536)
	setDefault(&t.QueueBytes, 256<<20)
	setDefault(&t.BatchRows, 20000)
	setDefault(&t.BatchBytes, 16<<20)
	setDefault(&t.FlushInterval, time.Second)
	setDefault(&t.WriteTimeout, 10*time.Second)
	setDefault(&t.ClickHouse.Database, "sluice")
	setDefault(&t.ClickHouse.Table, "transcripts")
	setDefault(&t.ClickHouse.DialTimeout, 2*time.Second)
	setDefault(&t.Spool.Dir, "spool")
	setDefault(&t.Spool.MaxBytes, 1<<30)
	setDefault(&t.Spool.SegmentBytes, 16<<20)
	setDefault(&t.JSONL.Dir, "transcripts")
	setDefault(&t.JSONL.MaxFileBytes, 100<<20)
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (t *Transcripts) validate(add func(path, format string, args ...any)) {
	switch t.Mode {
	case ModeOff, ModeJSONL:
	case ModeClickHouse:
		if t.ClickHouse.Addr == "" {
			add("transcripts.clickhouse.addr", "is required with transcripts.mode: clickhouse")
		}
	default:
		add("transcripts.mode", "must be auto, clickhouse, jsonl or off, not %q", t.Mode)
	}
	if t.Content != "full" && t.Content != "metadata" {
		add("transcripts.content", "must be full or metadata, not %q", t.Content)
	}
	for i, r := range t.Redact {
		if r.Pattern == "" {
			add("transcripts.redact", "rule %d: pattern is required", i)
		} else if _, err := regexp.Compile(r.Pattern); err != nil {
			add("transcripts.redact", "rule %d: %v", i, err)
		}
	}
	if !identRe.MatchString(t.ClickHouse.Database) {
		add("transcripts.clickhouse.database", "must be a plain identifier, not %q", t.ClickHouse.Database)
	}
	if !identRe.MatchString(t.ClickHouse.Table) {
		add("transcripts.clickhouse.table", "must be a plain identifier, not %q", t.ClickHouse.Table)
	}
	if t.ClickHouse.Cluster != "" && !identRe.MatchString(t.ClickHouse.Cluster) {
		add("transcripts.clickhouse.cluster", "must be a plain identifier, not %q", t.ClickHouse.Cluster)
	}
	if t.QueueSize < 0 || t.QueueBytes < 0 || t.BatchRows < 0 || t.BatchBytes < 0 || t.MaxContentBytes < 0 || t.Spool.MaxBytes < 0 ||
		t.Spool.SegmentBytes < 0 || t.JSONL.MaxFileBytes < 0 || t.JSONL.MaxFiles < 0 || t.ClickHouse.TTLDays < 0 ||
		(t.ClickHouse.Compression != "" && t.ClickHouse.Compression != "auto" && t.ClickHouse.Compression != "lz4" && t.ClickHouse.Compression != "none") {
		add("transcripts", "sizes and counts must not be negative")
	}
	if t.FlushInterval < 0 || t.WriteTimeout < 0 || t.ClickHouse.DialTimeout < 0 {
		add("transcripts", "durations must not be negative")
	}
}
