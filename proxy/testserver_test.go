package proxy

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"sluice/config"
	"sluice/policy"
)

// newTestServer builds a Server from the sluice.yaml text cfgYAML and a
// policy of one key, "sk-client", for user u in tier default (unless
// o.Policy is set). o supplies the other options; a nil Registry is a fresh one, a nil Logger discards.
func newTestServer(tb testing.TB, cfgYAML string, o Options) *Server {
	tb.Helper()
	cfg, err := config.Parse("test.yaml", []byte(cfgYAML), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if o.Policy == nil {
		pol, err := policy.Parse("test-policies.yaml", []byte("tiers: {default: {}}\nkeys:\n  - id: k\n    user: u\n    tier: default\n    sha256: "+
			policy.HashKey("sk-client")+"\n"), nil)
		if err != nil {
			tb.Fatal(err)
		}
		o.Policy = pol
	}
	o.Config = cfg
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
