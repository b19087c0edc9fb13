package sink

import "testing"

func TestUseLZ4(t *testing.T) {
	for _, c := range []struct {
		mode, addr string
		want       bool
	}{
		{"", "127.0.0.1:9000", false}, {"auto", "[::1]:9000", false}, {"", "localhost:9000", false},
		{"", "clickhouse.internal:9000", true}, {"auto", "10.0.0.7:9000", true},
		{"lz4", "127.0.0.1:9000", true}, {"none", "10.0.0.7:9000", false},
	} {
		if got := useLZ4(c.mode, c.addr); got != c.want {
			t.Errorf("useLZ4(%q, %q) = %v, want %v", c.mode, c.addr, got, c.want)
		}
	}
}
