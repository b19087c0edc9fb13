package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/config"
	"sluice/sink"
)

// newSink builds the transcript sink sluice.yaml describes: ClickHouse with
// a disk spool, or JSONL files; nil when transcripts are off. The reader
// serves /admin/transcripts from the same destination.
func newSink(cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (*sink.Sink, sink.Reader, error) {
	t := &cfg.Transcripts
	if t.Mode == config.ModeOff {
		return nil, nil, nil
	}
	rules := sink.DefaultRedactRules
	if t.Redact != nil {
		rules = make([]sink.RedactRule, len(t.Redact))
		for i, r := range t.Redact {
			rules[i] = sink.RedactRule{Pattern: r.Pattern, Replace: r.Replace, Hint: r.Hint}
		}
	}
	red, err := sink.NewRedactor(rules)
	if err != nil {
		return nil, nil, err
	}
	opts := sink.Options{
		QueueSize: t.QueueSize, QueueBytes: t.QueueBytes, BatchRows: t.BatchRows, BatchBytes: t.BatchBytes,
		FlushInterval: t.FlushInterval, WriteTimeout: t.WriteTimeout, MaxContentBytes: t.MaxContentBytes,
		Redactor: red, Registry: reg, Logger: log.With("component", "sink"),
	}
	var reader sink.Reader
	switch t.Mode {
	case config.ModeClickHouse:
		ch, err := sink.NewClickHouse(sink.ClickHouseOptions{
			Addr: t.ClickHouse.Addr, Database: t.ClickHouse.Database, Table: t.ClickHouse.Table,
			Username: t.ClickHouse.Username, Password: t.ClickHouse.Password,
			DialTimeout: t.ClickHouse.DialTimeout, TTLDays: t.ClickHouse.TTLDays, Compression: t.ClickHouse.Compression,
			Cluster: t.ClickHouse.Cluster,
		})
		if err != nil {
			return nil, nil, err
		}
		sp, err := sink.OpenSpool(sink.SpoolOptions{Dir: t.Spool.Dir, MaxBytes: t.Spool.MaxBytes,
			SegmentBytes: t.Spool.SegmentBytes, NoSync: t.Spool.NoFsync})
		if err != nil {
			_ = ch.Close()
			return nil, nil, err
		}
		if b, n, rows := sp.Stats(); n > 0 {
			log.Info("transcript spool found: replaying", "segments", n, "bytes", b, "rows", rows)
		}
		opts.Writer, opts.Spool, reader = ch, sp, ch
		log.Info("transcripts to clickhouse", "addr", t.ClickHouse.Addr, "table", ch.Table(), "spool", t.Spool.Dir)
	case config.ModeJSONL:
		j, err := sink.NewJSONL(sink.JSONLOptions{Dir: t.JSONL.Dir, MaxFileBytes: t.JSONL.MaxFileBytes,
			MaxFiles: t.JSONL.MaxFiles, NoSync: t.JSONL.NoFsync})
		if err != nil {
			return nil, nil, err
		}
		opts.Writer, reader = j, j
		log.Info("transcripts to jsonl files", "dir", t.JSONL.Dir)
	default:
		return nil, nil, fmt.Errorf("transcripts.mode %q", t.Mode)
	}
	s, err := sink.New(opts)
	if err != nil {
		return nil, nil, err
	}
	return s, reader, nil
}

// stopSink flushes the sink within d; what cannot be written by then is
// spooled.
func stopSink(s *sink.Sink, d time.Duration, log *slog.Logger) {
	if s == nil {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		log.Warn("transcript sink stopped with an error", "error", err)
	}
	log.Info("transcript sink flushed", "took", time.Since(start))
}
