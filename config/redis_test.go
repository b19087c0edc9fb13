package config

import (
	"strings"
	"testing"
)

func TestRedisModes(t *testing.T) {
	up := "upstreams:\n  - name: o\n    base_url: http://127.0.0.1:1/v1\nlimits: {store: redis}\n"
	c, err := Parse("s.yaml", []byte(up+"redis: {addr: 127.0.0.1:6379}\n"), env(nil))
	if err != nil || c.Redis.Mode != RedisSingle || len(c.Redis.Addrs()) != 1 {
		t.Fatalf("single default: %+v, %v", c.Redis, err)
	}
	c, err = Parse("s.yaml", []byte(up+"redis: {mode: cluster, addr: '127.0.0.1:7000, 127.0.0.1:7001,127.0.0.1:7002'}\n"), env(nil))
	if err != nil || c.Redis.Mode != RedisCluster || strings.Join(c.Redis.Addrs(), " ") != "127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002" {
		t.Fatalf("cluster: %+v %q, %v", c.Redis, c.Redis.Addrs(), err)
	}
	c, err = Parse("s.yaml", []byte(up+"redis: {mode: sentinel, master_name: m1, addr: '127.0.0.1:26379,127.0.0.1:26380'}\n"), env(nil))
	if err != nil || c.Redis.MasterName != "m1" {
		t.Fatalf("sentinel: %+v, %v", c.Redis, err)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"redis: {mode: ring, addr: 127.0.0.1:1}", "redis.mode: must be single, cluster or sentinel"},
		{"redis: {addr: '127.0.0.1:1,127.0.0.1:2'}", "mode: single takes one"},
		{"redis: {mode: sentinel, addr: 127.0.0.1:1}", "redis.master_name: is required with mode: sentinel"},
		{"redis: {mode: cluster, db: 2, addr: 127.0.0.1:1}", "redis.db: must be 0 with mode: cluster"},
		{"redis: {addr: localhost}", `"localhost" is not host:port`},
		{"redis: {addr: 127.0.0.1:1, prefix: 'a{b}:'}", "redis.prefix: must not hold {"},
		{"redis: {mode: cluster}", "redis.addr: is required with limits.store: redis"},
		{"redis: {addr: 127.0.0.1:1}\ncache: {store: redis, redis: {mode: sentinel, addr: 127.0.0.1:2}}", "cache.redis.master_name"},
	} {
		_, err := Parse("s.yaml", []byte(up+bad.yaml+"\n"), env(nil))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: got %v, want %q", bad.yaml, err, bad.want)
		}
	}
}

func TestCacheRedisOverrides(t *testing.T) {
	up := "upstreams:\n  - name: o\n    base_url: http://127.0.0.1:1/v1\nlimits: {store: redis}\n"
	c, err := Parse("s.yaml", []byte(up+"redis: {mode: cluster, addr: '127.0.0.1:7000', password: pw, timeout: 50ms}\n"+
		"cache: {store: redis, redis: {addr: '127.0.0.1:6380', mode: single, prefix: 'c:'}}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	cr := c.CacheRedis()
	if cr.Addr != "127.0.0.1:6380" || cr.Mode != RedisSingle || cr.Password != "pw" || cr.Prefix != "c:" || cr.Timeout != c.Redis.Timeout {
		t.Errorf("cache redis: %+v", cr)
	}
	if c.Redis.Addr != "127.0.0.1:7000" || c.Redis.Mode != RedisCluster {
		t.Errorf("limiter redis changed: %+v", c.Redis)
	}
	// Without cache.redis the cache shares the block; a cache.redis block
	// without an address takes the top-level address and mode.
	c, err = Parse("s.yaml", []byte(up+"redis: {mode: cluster, addr: '127.0.0.1:7000'}\ncache: {store: tiered, redis: {prefix: 'x:'}}\n"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cr := c.CacheRedis(); cr.Addr != "127.0.0.1:7000" || cr.Mode != RedisCluster || cr.Prefix != "x:" {
		t.Errorf("inherited: %+v", cr)
	}
	// The cache alone may use its own Redis: the top-level block is then
	// not required.
	if _, err := Parse("s.yaml", []byte("upstreams:\n  - name: o\n    base_url: http://127.0.0.1:1/v1\ncache: {store: redis, redis: {addr: '127.0.0.1:6380'}}\n"), env(nil)); err != nil {
		t.Errorf("cache-only redis: %v", err)
	}
}
