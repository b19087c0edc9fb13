package cache

import (
	"context"
	"time"
)

// Tiered is a Memory store in front of a shared store: reads try memory
// first, and a shared hit is copied into memory for the rest of its TTL;
// writes go to both.
type Tiered struct {
	// Front is the local store.
	Front *Memory
	// Back is the shared store.
	Back Store
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Get tries Front, then Back.
func (t *Tiered) Get(ctx context.Context, k Key) ([]byte, error) {
	if v, err := t.Front.Get(ctx, k); err == nil {
		return v, nil
	}
	v, err := t.Back.Get(ctx, k)
	if err != nil {
		return nil, err
	}
	// Copy into memory for the entry's remaining life; an unreadable entry
	// is left for the caller to count.
	if e, derr := Decode(v); derr == nil {
		now := time.Now
		if t.Now != nil {
			now = t.Now
		}
		if ttl := e.Expires.Sub(now()); ttl > 0 {
			_ = t.Front.Set(ctx, k, v, ttl)
		}
	}
	return v, nil
}

// Set writes to Front and Back; the Back error, if any, is returned.
func (t *Tiered) Set(ctx context.Context, k Key, v []byte, ttl time.Duration) error {
	_ = t.Front.Set(ctx, k, v, ttl)
	return t.Back.Set(ctx, k, v, ttl)
}
