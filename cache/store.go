package cache

import (
	"context"
	"errors"
	"time"
)

// Store keeps encoded entries by key. Implementations are safe for
// concurrent use.
type Store interface {
	// Get returns the value stored under k, or ErrNotFound. The caller must
	// not modify the returned slice.
	Get(ctx context.Context, k Key) ([]byte, error)
	// Set stores v under k for ttl. The store keeps no reference to v once
	// Set returns: the caller reuses it (Memory copies it into its ring,
	// Redis has sent it).
	Set(ctx context.Context, k Key, v []byte, ttl time.Duration) error
}

// ErrNotFound means a store holds nothing under a key.
var ErrNotFound = errors.New("cache: not found")
