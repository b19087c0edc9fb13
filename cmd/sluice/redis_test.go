package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"sluice/config"
)

// TestNewRedisClientModes: each mode gets its go-redis client, with the
// one-try policy and the call timeout; a Cluster client refreshes its slot
// map every second (a dead master is otherwise called for a minute).
func TestNewRedisClientModes(t *testing.T) {
	base := config.Redis{Timeout: 70 * time.Millisecond, Password: "pw"}
	r := base
	r.Mode, r.Addr = config.RedisSingle, "127.0.0.1:1"
	c := newRedisClient(r)
	defer func() { _ = c.Close() }()
	if o := c.(*redis.Client).Options(); o.Addr != "127.0.0.1:1" || o.MaxRetries > 0 || o.ReadTimeout != r.Timeout || o.Password != "pw" {
		t.Errorf("single: %+v", o)
	}
	r.Mode, r.Addr = config.RedisCluster, "127.0.0.1:1, 127.0.0.1:2"
	cc := newRedisClient(r)
	defer func() { _ = cc.Close() }()
	o := cc.(*redis.ClusterClient).Options()
	if len(o.Addrs) != 2 || o.Addrs[1] != "127.0.0.1:2" || o.MaxRetries > 0 || o.MaxRedirects != 3 ||
		o.ClusterStateReloadInterval != time.Second || o.ReadTimeout != r.Timeout {
		t.Errorf("cluster: addrs %q retries %d redirects %d reload %v", o.Addrs, o.MaxRetries, o.MaxRedirects, o.ClusterStateReloadInterval)
	}
	r.Mode, r.MasterName = config.RedisSentinel, "m1"
	fc := newRedisClient(r)
	defer func() { _ = fc.Close() }()
	if _, ok := fc.(*redis.Client); !ok {
		t.Errorf("sentinel: a %T, want the failover *redis.Client", fc)
	}
}
