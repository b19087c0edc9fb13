package cache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Coalescing across replicas. A Group coalesces identical requests inside
// one process; with a shared store (Redis, or Tiered over Redis) the first
// request of a key in each replica also takes a short lock in Redis before
// it calls the provider:
//
//   - SET lock:<key> <token> NX PX LockTTL. The holder calls the provider,
//     stores the answer, then deletes the lock (only if the token is still
//     its own). While its call runs it renews the lock every LockTTL/3 (for
//     at most CoalesceWait, as long as others wait), so a long stream keeps
//     it and a replica that dies loses it within LockTTL.
//   - A replica that finds the lock held waits for the entry by polling the
//     store with a capped backoff (LockPollMin doubling to LockPollMax),
//     bounded by CoalesceWait. Each poll reads the entry, and when there is
//     none tries the lock again: a holder that failed (no entry, lock
//     released or expired) hands the call to the first waiter that gets it.
//
// Polling was chosen over pub/sub: it needs no connection held open per
// replica, loses nothing when a connection drops, works the same on one
// Redis, Sentinel or Cluster (single-key commands only), and costs at most
// LockPollMax of latency on an answer that took a provider call. Its load is
// one GET and one SET NX per waiting replica and key per poll (requests of
// one replica share its wait through the Group).

// Locker is a shared store that holds the coalescing locks. Redis and
// Tiered (over Redis) are Lockers.
type Locker interface {
	// TryLock takes the lock of k for token with a TTL of ttl; false when
	// another token holds it.
	TryLock(ctx context.Context, k Key, token string, ttl time.Duration) (bool, error)
	// ExtendLock resets the TTL of k's lock while token holds it; false when
	// it does not (expired, taken over).
	ExtendLock(ctx context.Context, k Key, token string, ttl time.Duration) (bool, error)
	// Unlock deletes k's lock if token holds it.
	Unlock(ctx context.Context, k Key, token string) error
}

// Defaults of the coalescing lock.
const (
	// DefaultLockTTL is how long a lock outlives a holder that stopped
	// renewing it (a replica that died mid-call).
	DefaultLockTTL = 5 * time.Second
	// LockPollMin and LockPollMax bound the wait between two polls of a
	// replica waiting for another replica's answer.
	LockPollMin = 5 * time.Millisecond
	LockPollMax = 50 * time.Millisecond
)

// lockKey is the key of k's lock; "lock:" holds letters that no hex entry
// key has.
func (r *Redis) lockKey(k Key) string {
	e := r.key(k)
	return r.opts.Prefix + "lock:" + e[len(r.opts.Prefix):]
}

// TryLock sets k's lock to token, unless it is held.
func (r *Redis) TryLock(ctx context.Context, k Key, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	return r.c.SetNX(ctx, r.lockKey(k), token, ttl).Result()
}

// extendScript resets the lock's TTL if the token still holds it.
var extendScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// unlockScript deletes the lock if the token still holds it.
var unlockScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

// ExtendLock resets the TTL of k's lock while token holds it.
func (r *Redis) ExtendLock(ctx context.Context, k Key, token string, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	n, err := extendScript.Run(ctx, r.c, []string{r.lockKey(k)}, token, ttl.Milliseconds()).Int()
	return n == 1, err
}

// Unlock deletes k's lock if token holds it.
func (r *Redis) Unlock(ctx context.Context, k Key, token string) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	err := unlockScript.Run(ctx, r.c, []string{r.lockKey(k)}, token).Err()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}

// TryLock passes to Back.
func (t *Tiered) TryLock(ctx context.Context, k Key, token string, ttl time.Duration) (bool, error) {
	if l, ok := t.Back.(Locker); ok {
		return l.TryLock(ctx, k, token, ttl)
	}
	return true, nil
}

// ExtendLock passes to Back.
func (t *Tiered) ExtendLock(ctx context.Context, k Key, token string, ttl time.Duration) (bool, error) {
	if l, ok := t.Back.(Locker); ok {
		return l.ExtendLock(ctx, k, token, ttl)
	}
	return true, nil
}

// Unlock passes to Back.
func (t *Tiered) Unlock(ctx context.Context, k Key, token string) error {
	if l, ok := t.Back.(Locker); ok {
		return l.Unlock(ctx, k, token)
	}
	return nil
}

// locker returns the store's coalescing locks, if it is shared.
func (c *Cache) locker() (Locker, bool) {
	switch s := c.opts.Store.(type) {
	case *Tiered:
		l, ok := s.Back.(Locker)
		return l, ok
	case Locker:
		return s, true
	}
	return nil, false
}

// sharedLock is a lock a flight's leader holds in the shared store.
type sharedLock struct {
	c     *Cache
	l     Locker
	k     Key
	token string
	// stop ends the renewal loop; done is closed when it returned.
	stop, done chan struct{}
}

// newToken returns a random lock owner token.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// lock tries to take k's shared lock. held reports that another replica
// holds it. A store that fails gives neither lock nor held: the request
// calls the provider, as it would without a shared store.
func (c *Cache) lock(l Locker, k Key) (sl *sharedLock, held bool) {
	token := newToken()
	ok, err := l.TryLock(context.Background(), k, token, c.opts.LockTTL)
	if err != nil {
		c.storeFailed(err)
		return nil, false
	}
	c.storeOK()
	if !ok {
		return nil, true
	}
	sl = &sharedLock{c: c, l: l, k: k, token: token, stop: make(chan struct{}), done: make(chan struct{})}
	go sl.renew() // ended by release, which waits for it
	return sl, false
}

// renew extends the lock every third of its TTL until release, for at most
// CoalesceWait: other replicas wait no longer than that for the answer, and
// a flight that is never finished (a bug) cannot hold the key for ever.
func (sl *sharedLock) renew() {
	defer close(sl.done)
	t := time.NewTicker(sl.c.opts.LockTTL / 3)
	defer t.Stop()
	end := time.NewTimer(sl.c.opts.CoalesceWait)
	defer end.Stop()
	for {
		select {
		case <-sl.stop:
			return
		case <-end.C:
			return
		case <-t.C:
			if ok, err := sl.l.ExtendLock(context.Background(), sl.k, sl.token, sl.c.opts.LockTTL); err == nil && !ok {
				return // lost (expired while Redis was away): another replica may call too
			}
		}
	}
}

// release stops the renewal and deletes the lock.
func (sl *sharedLock) release() {
	close(sl.stop)
	<-sl.done
	_ = sl.l.Unlock(context.Background(), sl.k, sl.token) // at worst it expires after LockTTL
}

// Remote reports a flight whose leader waits for another replica's call
// (see AwaitRemote) instead of calling the provider.
func (f *Flight) Remote() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.remote
}

// AwaitRemote waits, until ctx ends, for the answer of the replica that
// holds the lock of a remote flight's key. With the answer it finishes the
// flight (its local followers get it too) and returns it. Without one (the
// holder failed and this replica took the lock over, ctx ended, or the
// store failed) it returns nil: the flight is then an ordinary one whose
// leader calls the provider, stores the answer and finishes it.
func (c *Cache) AwaitRemote(ctx context.Context, f *Flight) *Entry {
	f.mu.Lock()
	remote := f.remote
	f.mu.Unlock()
	l, ok := c.locker()
	if !remote || !ok {
		return nil
	}
	sleep := LockPollMin
	t := time.NewTimer(sleep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.localLead(f, nil)
			return nil
		case <-t.C:
		}
		if e := c.Get(ctx, f.key); e != nil {
			f.mu.Lock()
			f.remote = false
			f.mu.Unlock()
			f.Finish(e)
			return e
		}
		sl, held := c.lock(l, f.key)
		if !held {
			c.localLead(f, sl) // taken over, or the store failed
			return nil
		}
		sleep = min(2*sleep, LockPollMax)
		t.Reset(sleep)
	}
}

// localLead turns a remote flight into one its leader calls for, holding
// sl (nil: no lock).
func (c *Cache) localLead(f *Flight, sl *sharedLock) {
	f.mu.Lock()
	f.remote, f.lock = false, sl
	f.mu.Unlock()
}
