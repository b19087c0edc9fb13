package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sharedMem is a shared store for tests without Redis: a Memory with the
// coalescing locks, honouring their TTLs.
type sharedMem struct {
	*Memory
	mu    sync.Mutex
	locks map[Key]heldLock
}

type heldLock struct {
	token   string
	expires time.Time
}

func newSharedMem() *sharedMem {
	return &sharedMem{Memory: NewMemory(MemoryOptions{MaxBytes: 1 << 20}), locks: map[Key]heldLock{}}
}

func (s *sharedMem) TryLock(_ context.Context, k Key, token string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.locks[k]; ok && time.Now().Before(l.expires) {
		return false, nil
	}
	s.locks[k] = heldLock{token, time.Now().Add(ttl)}
	return true, nil
}

func (s *sharedMem) ExtendLock(_ context.Context, k Key, token string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.locks[k]; ok && l.token == token && time.Now().Before(l.expires) {
		s.locks[k] = heldLock{token, time.Now().Add(ttl)}
		return true, nil
	}
	return false, nil
}

func (s *sharedMem) Unlock(_ context.Context, k Key, token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.locks[k]; ok && l.token == token {
		delete(s.locks, k)
	}
	return nil
}

// replicas returns n caches over one shared store, each with its own
// memory tier, as n Sluice replicas sharing Redis.
func replicas(t *testing.T, shared Store, n int, lockTTL time.Duration) []*Cache {
	t.Helper()
	cs := make([]*Cache, n)
	for i := range cs {
		c, err := New(Options{Store: &Tiered{Front: NewMemory(MemoryOptions{MaxBytes: 1 << 20}), Back: shared},
			Registry: prometheus.NewRegistry(), CoalesceWait: 5 * time.Second, LockTTL: lockTTL})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		cs[i] = c
	}
	return cs
}

// lead plays a request on replica c: a hit, a follower, a remote waiter
// or a leader that calls (calls counts those) and stores answer.
func lead(c *Cache, k Key, calls *atomic.Int32, answer string, call time.Duration) (string, error) {
	if e := c.Get(context.Background(), k); e != nil {
		return string(e.Body), nil
	}
	f, leader := c.Join(k, false)
	if !leader {
		e, err := f.Wait(context.Background())
		if e == nil {
			return "", err
		}
		return string(e.Body), err
	}
	if f.Remote() {
		ctx, cancel := context.WithTimeout(context.Background(), c.CoalesceWait())
		e := c.AwaitRemote(ctx, f)
		cancel()
		if e != nil {
			return string(e.Body), nil
		}
	}
	calls.Add(1)
	time.Sleep(call)
	e := &Entry{Created: c.Now(), Expires: c.Now().Add(time.Minute), Body: []byte(answer)}
	if answer == "" {
		f.Finish(nil) // the call failed
		return "", nil
	}
	c.Put(context.Background(), k, e)
	f.Finish(e)
	return answer, nil
}

func TestCoalesceAcrossReplicasOneCall(t *testing.T) {
	testCoalesceAcrossReplicas(t, newSharedMem())
}

func TestCoalesceAcrossReplicasRedis(t *testing.T) {
	rc, prefix := testRedis(t)
	testCoalesceAcrossReplicas(t, NewRedis(rc, RedisOptions{Prefix: prefix, Timeout: time.Second}))
}

func testCoalesceAcrossReplicas(t *testing.T, shared Store) {
	cs := replicas(t, shared, 3, time.Second)
	k := keyOf(7)
	var calls atomic.Int32
	var wg sync.WaitGroup
	const n = 90
	got := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			var err error
			got[i], err = lead(cs[i%3], k, &calls, "answer", 200*time.Millisecond)
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d provider calls over 3 replicas, want 1", calls.Load())
	}
	for i, g := range got {
		if g != "answer" {
			t.Fatalf("request %d got %q", i, g)
		}
	}
	// The lock is released: a later miss of the key leads at once.
	cs[0].Purge(context.Background(), k)
	cs[1].Purge(context.Background(), k)
	f, leader := cs[2].Join(k, false)
	if !leader || f.Remote() {
		t.Fatalf("after the call the key is still locked (leader %v, remote %v)", leader, f.Remote())
	}
	f.Finish(nil)
}

func TestCoalesceAcrossReplicasHolderFails(t *testing.T) {
	cs := replicas(t, newSharedMem(), 2, time.Second)
	k := keyOf(8)
	fa, _ := cs[0].Join(k, false)
	fb, _ := cs[1].Join(k, false)
	if fa.Remote() || !fb.Remote() {
		t.Fatalf("remote: a %v, b %v; want the second replica to wait", fa.Remote(), fb.Remote())
	}
	done := make(chan *Entry)
	go func() { done <- cs[1].AwaitRemote(context.Background(), fb) }()
	time.Sleep(30 * time.Millisecond)
	fa.Finish(nil) // the holder's call failed: nothing stored, lock released
	select {
	case e := <-done:
		if e != nil {
			t.Fatalf("waiter got %q from a failed call", e.Body)
		}
	case <-time.After(time.Second):
		t.Fatal("waiter still waits after the holder failed")
	}
	if fb.Remote() {
		t.Fatal("the waiter did not take the call over")
	}
	// It holds the lock now: a third request waits for it.
	fc, _ := cs[0].Join(k, false)
	if !fc.Remote() {
		t.Fatal("the waiter that took over does not hold the lock")
	}
	fb.Finish(nil)
	fc.Finish(nil)
}

func TestCoalesceAcrossReplicasHolderDies(t *testing.T) {
	shared := newSharedMem()
	cs := replicas(t, shared, 1, 150*time.Millisecond)
	k := keyOf(9)
	// A replica took the lock and died: nobody renews or releases it.
	if ok, _ := shared.TryLock(context.Background(), k, "dead", 150*time.Millisecond); !ok {
		t.Fatal("lock not taken")
	}
	f, _ := cs[0].Join(k, false)
	if !f.Remote() {
		t.Fatal("the lock of a dead replica was not seen")
	}
	began := time.Now()
	if e := cs[0].AwaitRemote(context.Background(), f); e != nil {
		t.Fatalf("got %q from a dead replica", e.Body)
	}
	if d := time.Since(began); d > time.Second {
		t.Fatalf("took over after %v, want about the lock's TTL (150ms)", d)
	}
	if f.Remote() {
		t.Fatal("not taken over")
	}
	f.Finish(nil)
}

func TestCoalesceLockRenewedDuringLongCall(t *testing.T) {
	shared := newSharedMem()
	cs := replicas(t, shared, 2, 90*time.Millisecond)
	k := keyOf(10)
	fa, _ := cs[0].Join(k, false)
	time.Sleep(300 * time.Millisecond) // a call longer than the lock's TTL
	fb, _ := cs[1].Join(k, false)
	if !fb.Remote() {
		t.Fatal("the lock expired while its holder's call ran")
	}
	fa.Finish(nil)
	fb.Finish(nil)
}

func TestCoalesceWaitBoundsRemoteWait(t *testing.T) {
	cs := replicas(t, newSharedMem(), 2, time.Second)
	k := keyOf(11)
	fa, _ := cs[0].Join(k, false)
	defer fa.Finish(nil)
	fb, _ := cs[1].Join(k, false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	if e := cs[1].AwaitRemote(ctx, fb); e != nil {
		t.Fatal("entry from nowhere")
	}
	if d := time.Since(began); d < 90*time.Millisecond || d > time.Second {
		t.Fatalf("waited %v, want the 100ms bound", d)
	}
	if fb.Remote() {
		t.Fatal("after the wait the request must call on its own")
	}
	fb.Finish(nil)
}

// failingLocks is a shared store whose lock calls fail, counting them.
type failingLocks struct {
	*sharedMem
	tries atomic.Int32
}

func (f *failingLocks) Get(ctx context.Context, k Key) ([]byte, error) {
	return nil, context.DeadlineExceeded
}

func (f *failingLocks) TryLock(context.Context, Key, string, time.Duration) (bool, error) {
	f.tries.Add(1)
	return false, context.DeadlineExceeded
}

func TestCoalesceStoreDownCallsWithoutLock(t *testing.T) {
	shared := &failingLocks{sharedMem: newSharedMem()}
	c, err := New(Options{Store: shared, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	k := keyOf(12)
	f, leader := c.Join(k, false) // the first lock call fails: lead, no lock
	if !leader || f.Remote() {
		t.Fatalf("leader %v remote %v; want a leader that calls", leader, f.Remote())
	}
	f.Finish(nil)
	if c.Get(context.Background(), k) != nil {
		t.Fatal("a failing store answered")
	}
	f, _ = c.Join(k, false) // the store is known down: no lock call
	if f.Remote() {
		t.Fatal("a request waits for a lock while the store is down")
	}
	f.Finish(nil)
	if n := shared.tries.Load(); n != 1 {
		t.Fatalf("%d lock calls, want 1 (none while the store is known down)", n)
	}
}
