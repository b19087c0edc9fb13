package config

import (
	"strings"
	"testing"

	"sluice/configs"
)

func TestTranscriptsModes(t *testing.T) {
	c, err := Parse("sluice.yaml", configs.Sluice, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Transcripts.Mode != ModeJSONL || c.Transcripts.JSONL.Dir != "transcripts" || c.Transcripts.Content != "full" {
		t.Fatalf("example without ClickHouse: %+v", c.Transcripts)
	}
	c, err = Parse("sluice.yaml", configs.Sluice, env(map[string]string{"SLUICE_CLICKHOUSE_ADDR": "127.0.0.1:9000", "SLUICE_ADMIN_TOKEN": "t"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Transcripts.Mode != ModeClickHouse || c.Transcripts.ClickHouse.Database != "sluice" || c.Server.AdminToken != "t" {
		t.Fatalf("example with ClickHouse: %+v", c.Transcripts)
	}
	if c.Transcripts.Redact != nil {
		t.Fatalf("absent redact list should stay nil (built-in rules): %v", c.Transcripts.Redact)
	}
}

func TestTranscriptsInvalid(t *testing.T) {
	f := func(yaml, want string) {
		t.Helper()
		_, err := Parse("s.yaml", []byte("upstreams:\n  - name: a\n    base_url: http://x/v1\n"+yaml), env(nil))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: got %v, want an error with %q", yaml, err, want)
		}
	}
	f("transcripts:\n  mode: kafka\n", "transcripts.mode")
	f("transcripts:\n  mode: clickhouse\n", "transcripts.clickhouse.addr")
	f("transcripts:\n  content: everything\n", "transcripts.content")
	f("transcripts:\n  redact:\n    - pattern: '('\n", "transcripts.redact")
	f("transcripts:\n  clickhouse:\n    table: 'x; DROP'\n", "transcripts.clickhouse.table")
	f("transcripts:\n  clickhouse:\n    cluster: 'a b'\n", "transcripts.clickhouse.cluster")
	f("transcripts:\n  queue_bytes: -1\n", "must not be negative")
	f("transcripts:\n  colour: blue\n", "colour")
}
