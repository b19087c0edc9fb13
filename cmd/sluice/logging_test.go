package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	log, err := newLogger(&b, defaultLogFormat, "warn")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "request_id", "r1")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("level warn logged %d lines, want 1: %q", len(lines), b.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("default format is not JSON: %v: %s", err, lines[0])
	}
	if m["msg"] != "shown" || m["level"] != "WARN" || m["request_id"] != "r1" || m["time"] == nil {
		t.Fatalf("line %v", m)
	}

	b.Reset()
	log, err = newLogger(&b, "text", "debug")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("dbg")
	if !strings.Contains(b.String(), "level=DEBUG msg=dbg") {
		t.Fatalf("text at debug: %q", b.String())
	}

	// Durations read as Go duration strings, not nanoseconds, in both formats.
	for _, format := range []string{"json", "text"} {
		b.Reset()
		log, err = newLogger(&b, format, "info")
		if err != nil {
			t.Fatal(err)
		}
		log.Info("d", "took", 1500*time.Millisecond, "group", slog.GroupValue(slog.Duration("wait", 250*time.Millisecond)))
		if !strings.Contains(b.String(), "1.5s") || !strings.Contains(b.String(), "250ms") || strings.Contains(b.String(), "1500000000") {
			t.Errorf("%s: durations not in a human unit: %q", format, b.String())
		}
	}

	for _, bad := range [][2]string{{"xml", "info"}, {"json", "loud"}} {
		if _, err := newLogger(&b, bad[0], bad[1]); err == nil {
			t.Errorf("newLogger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
