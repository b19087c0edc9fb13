package config

import (
	"strings"
	"testing"
	"time"

	"sluice/configs"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestExampleConfig(t *testing.T) {
	c, err := Parse("sluice.yaml", configs.Sluice, env(nil))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if c.Server.Listen != "127.0.0.1:8080" || c.Server.AdminListen != "127.0.0.1:9090" {
		t.Fatalf("listen defaults: %q %q", c.Server.Listen, c.Server.AdminListen)
	}
	u := c.Upstreams[0]
	if u.BaseURL != "https://api.openai.com/v1" || u.APIKey != "" || u.Timeouts.FirstByte != 120*time.Second {
		t.Fatalf("upstream: %+v", u)
	}
	c, err = Parse("sluice.yaml", configs.Sluice, env(map[string]string{
		"OPENAI_BASE_URL": "http://127.0.0.1:9999/v1", "OPENAI_API_KEY": "sk-up", "SLUICE_ADDR": "127.0.0.1:1234",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstreams[0].BaseURL != "http://127.0.0.1:9999/v1" || c.Upstreams[0].APIKey != "sk-up" || c.Server.Listen != "127.0.0.1:1234" {
		t.Fatalf("env not applied: %+v %+v", c.Server, c.Upstreams[0])
	}
	if c.Server.ShutdownDelay != 0 || c.Transcripts.JSONL.MaxFiles != 0 || c.Transcripts.Spool.MaxBytes != 1<<30 {
		t.Fatalf("example defaults: delay %s, max_files %d, spool %d", c.Server.ShutdownDelay, c.Transcripts.JSONL.MaxFiles, c.Transcripts.Spool.MaxBytes)
	}
	// The knobs the Kubernetes example sets through the environment.
	c, err = Parse("sluice.yaml", configs.Sluice, env(map[string]string{"SLUICE_SHUTDOWN_DELAY": "5s",
		"SLUICE_TRANSCRIPTS_FILE_BYTES": "67108864", "SLUICE_TRANSCRIPTS_MAX_FILES": "8", "SLUICE_SPOOL_MAX_BYTES": "536870912"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.ShutdownDelay != 5*time.Second || c.Transcripts.JSONL.MaxFileBytes != 64<<20 || c.Transcripts.JSONL.MaxFiles != 8 || c.Transcripts.Spool.MaxBytes != 512<<20 {
		t.Fatalf("env not applied: delay %s, jsonl %+v, spool %+v", c.Server.ShutdownDelay, c.Transcripts.JSONL, c.Transcripts.Spool)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("s.yaml", []byte("upstreams:\n  - name: az\n    type: azure\n    base_url: https://r.openai.azure.com\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Upstreams[0]
	if u.AuthHeader != "api-key" || u.APIVersion != DefaultAzureAPIVersion || u.MaxConns != DefaultMaxConns ||
		u.Timeouts.Connect != DefaultConnectTimeout || c.Server.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Fatalf("defaults not applied: %+v %+v", c.Server, u)
	}
}

func TestBadConfigs(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		_, err := Parse("s.yaml", []byte(doc), env(nil))
		if err == nil {
			t.Fatalf("expecting an error for:\n%s", doc)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q; want it to contain %q", err, want)
		}
	}
	ok := "upstreams:\n  - name: a\n    base_url: http://x/v1\n"
	f("server:\n  listn: x\n"+ok, "s.yaml:2: server.listn")
	f("upstreams: []\n", "upstreams: at least one upstream is required")
	f("upstreams:\n  - name: a\n    base_url: ftp://x\n", "s.yaml:3: upstreams[0].base_url: scheme must be http or https")
	f("upstreams:\n  - name: a\n    base_url: http://x/v1\n  - name: a\n    base_url: http://y/v1\n", "s.yaml:4: upstreams[1].name: duplicate upstream name")
	f(ok+"routes:\n  - model: '*'\n    upstream: b\n", "s.yaml:6: routes[0].upstream: unknown upstream \"b\"")
	f(ok+"routes:\n  - model: 'g*t*'\n    upstream: a\n", "routes[0].model: a wildcard may only end the pattern")
	f(ok+"routes:\n  - model: gpt\n    upstream: a\n    deployment: d\n", "routes[0].deployment: only upstreams of type \"azure\"")
	f("upstreams:\n  - name: a\n    base_url: http://x/v1\n    timeouts:\n      idle: soon\n", "s.yaml:5: upstreams[0].timeouts.idle")
	f("upstreams:\n  - name: a\n    type: anthropic\n    base_url: http://x/v1\n", "upstreams[0].type: must be")
	f(ok+"aliases:\n  a: b\n  b: c\n", "is itself an alias")
	f("server:\n  shutdown_delay: -1s\n"+ok, "server.shutdown_delay: must be at least 0")
	f("server:\n  shutdown_delay: 30s\n  shutdown_timeout: 30s\n"+ok, "server.shutdown_delay: must be at least 0 and below shutdown_timeout")
}
