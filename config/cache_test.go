package config

import (
	"strings"
	"testing"
	"time"
)

func TestCacheConfig(t *testing.T) {
	up := "upstreams:\n  - name: o\n    base_url: http://127.0.0.1:1/v1\n"
	c, err := Parse("s.yaml", []byte(up), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if k := c.Cache; k.Store != "memory" || k.MaxBytes != 64<<20 || k.MaxEntryBytes != 1<<20 || k.TTL != time.Hour || k.CoalesceWait != 30*time.Second {
		t.Errorf("cache defaults: %+v", k)
	}
	_, err = Parse("s.yaml", []byte(up+"cache: {store: tiered}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "redis.addr") {
		t.Errorf("tiered without redis.addr: %v", err)
	}
	_, err = Parse("s.yaml", []byte(up+"cache: {store: disk}\n"), env(nil))
	if err == nil || !strings.Contains(err.Error(), "cache.store") {
		t.Errorf("unknown store: %v", err)
	}
	c, err = Parse("s.yaml", []byte(up+"redis: {addr: 127.0.0.1:6379}\ncache: {store: redis, ttl: 5m, max_bytes: 1000}\n"), env(nil))
	if err != nil || c.Cache.Store != "redis" || c.Cache.TTL != 5*time.Minute || c.Cache.MaxBytes != 1000 {
		t.Errorf("redis cache: %+v, %v", c.Cache, err)
	}
}
