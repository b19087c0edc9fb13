package policy

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"sluice/policy/limit"
)

const collisionPolicy = `
tiers:
  free:
    rpm: 100
    models:
      "gpt-4o*": {rpm: 1}
keys:
  - id: app
    sha256: 0000000000000000000000000000000000000000000000000000000000000002
    trusted: true
    tier: free
`

// TestEndUserNamesCannotCollide: an end user named "frank:m:gpt-4o*" had
// the bucket keys of frank's per-model budget ("k:app:u:frank:m:gpt-4o*:rpm"),
// so one could spend the other's. The names are escaped in the keys; the
// same holds in the memory and the Redis store.
func TestEndUserNamesCannotCollide(t *testing.T) {
	stores := map[string]limit.Store{"memory": limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})}
	if addr := os.Getenv("SLUICE_TEST_REDIS_ADDR"); addr != "" && !testing.Short() {
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = c.Close() })
		stores["redis"] = limit.NewRedis(c, limit.RedisOptions{Prefix: fmt.Sprintf("collide-%d:", time.Now().UnixNano())})
	}
	for name, store := range stores {
		t.Run(name, func(t *testing.T) {
			p, err := Parse("p.yaml", []byte(collisionPolicy), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			var app *Key
			for _, k := range p.keys {
				app = k
			}
			l := NewLimiter(LimiterOptions{Store: store, Shared: name == "redis", Registry: prometheus.NewRegistry()})
			defer l.Close()
			ctx := context.Background()
			admit := func(user, model string, i int) Outcome {
				pl := p.Plan(p.Principal(app, user), app, model)
				a := l.Admit(ctx, p, &Ask{Plan: pl, RequestID: fmt.Sprint(name, i)})
				o := a.Outcome
				l.Finish(ctx, a, -1, 0)
				return o
			}
			// The impostor spends two requests of its own rpm; frank's
			// gpt-4o budget (1 a minute) must be untouched.
			for i := range 2 {
				if o := admit("frank:m:gpt-4o*", "o3", i); o != Admitted {
					t.Fatalf("impostor request %d: %v", i, o)
				}
			}
			if o := admit("frank", "gpt-4o", 2); o != Admitted {
				t.Fatalf("frank's first gpt-4o request: %v; the impostor drew from frank's per-model bucket", o)
			}
		})
	}
}
