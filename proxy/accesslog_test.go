package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// The access log line carries the fields an operator needs, the reason of
// a 429, and stays within a few allocations (server.access_log only).
func TestAccessLogLine(t *testing.T) {
	var b bytes.Buffer
	s := &Server{log: slog.New(slog.NewJSONHandler(&b, nil))}
	x := &exchange{ep: epChat, status: 429, method: "POST", peer: netip.MustParseAddrPort("10.0.0.7:51234"),
		keyID: "k1", user: "u1", tier: "free", model: "gpt-4o-mini", body: []byte(`{"x":1}`), bytesOut: 321,
		limit: "tpm", limitScope: "model", cacheStatus: "miss", usage: usage{prompt: 5, completion: 7, ok: true}}
	s.accessLog([]byte("req-1"), x, 1500*time.Microsecond, false)
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, b.String())
	}
	want := map[string]any{"request_id": "req-1", "method": "POST", "client": "10.0.0.7:51234", "status": 429.0,
		"duration_ms": 1.5, "tier": "free", "bytes_in": 7.0, "bytes_out": 321.0, "prompt_tokens": 5.0,
		"completion_tokens": 7.0, "cache": "miss", "limited_by": "model", "limit": "tpm"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v in %s", k, m[k], v, b.String())
		}
	}
	x.limit, x.upStart = "", time.Now()
	if scope, _ := x.refusal(); scope != "upstream" {
		t.Errorf("an upstream's 429 reads %q", scope)
	}
	x.upStart = time.Time{}
	if scope, limit := x.refusal(); scope != "provider" || limit != "capacity" {
		t.Errorf("a provider queue's 429 reads %q %q", scope, limit)
	}
	x.status = 200
	if scope, _ := x.refusal(); scope != "" {
		t.Errorf("a 200 has a refusal %q", scope)
	}

	s.log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	allocs := testing.AllocsPerRun(200, func() { s.accessLog([]byte("req-1"), x, time.Millisecond, false) })
	t.Logf("%.0f allocations per access log line", allocs)
	if allocs > 6 && !raceEnabled {
		t.Errorf("%.0f allocations per access log line; want at most 6", allocs)
	}
}
