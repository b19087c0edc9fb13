package cache

import (
	"context"
	"sync"
	"time"
)

// entryOverhead is the bytes counted per memory entry besides its value: the
// map slot, list node and key.
const entryOverhead = 128

// MemoryOptions configure a Memory store.
type MemoryOptions struct {
	// MaxBytes bounds the values and per-entry overhead held; the least
	// recently used entries are evicted beyond it. Default 64 MiB.
	MaxBytes int64
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// OnEvict is called (with the store's lock held) for each entry evicted
	// to make room; nil: nothing is called.
	OnEvict func()
}

// DefaultMaxBytes is a Memory store's bound when MaxBytes is 0.
const DefaultMaxBytes = 64 << 20

// Memory is an LRU store bounded in bytes, for one process.
type Memory struct {
	opts MemoryOptions
	// mu protects everything below.
	mu    sync.Mutex
	items map[Key]*lruNode
	// head is the most recently used node, tail the least; both nil when
	// empty.
	head, tail *lruNode
	bytes      int64
}

type lruNode struct {
	key        Key
	val        []byte
	expires    time.Time
	prev, next *lruNode
}

// NewMemory returns an empty Memory store.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Memory{opts: o, items: make(map[Key]*lruNode)}
}

// Get returns the value under k unless it expired.
func (m *Memory) Get(_ context.Context, k Key) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.items[k]
	if n == nil {
		return nil, ErrNotFound
	}
	if !m.opts.Now().Before(n.expires) {
		m.remove(n)
		return nil, ErrNotFound
	}
	m.unlink(n)
	m.pushFront(n)
	return n.val, nil
}

// Set stores v under k for ttl, evicting the least recently used entries
// beyond MaxBytes. A value larger than MaxBytes is not stored.
func (m *Memory) Set(_ context.Context, k Key, v []byte, ttl time.Duration) error {
	size := int64(len(v)) + entryOverhead
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.items[k]; old != nil {
		m.remove(old)
	}
	if size > m.opts.MaxBytes || ttl <= 0 {
		return nil
	}
	for m.bytes+size > m.opts.MaxBytes && m.tail != nil {
		m.remove(m.tail)
		if m.opts.OnEvict != nil {
			m.opts.OnEvict()
		}
	}
	n := &lruNode{key: k, val: v, expires: m.opts.Now().Add(ttl)}
	m.items[k] = n
	m.pushFront(n)
	m.bytes += size
	return nil
}

// Stats returns the bytes held (values plus overhead) and the entry count.
func (m *Memory) Stats() (bytes int64, entries int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes, len(m.items)
}

func (m *Memory) remove(n *lruNode) {
	m.unlink(n)
	delete(m.items, n.key)
	m.bytes -= int64(len(n.val)) + entryOverhead
}

func (m *Memory) unlink(n *lruNode) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		m.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		m.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

func (m *Memory) pushFront(n *lruNode) {
	n.next = m.head
	if m.head != nil {
		m.head.prev = n
	}
	m.head = n
	if m.tail == nil {
		m.tail = n
	}
}
