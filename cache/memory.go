package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"runtime"
	"sync"
	"time"
)

// A Memory store keeps its entries as records in one ring buffer outside the
// Go heap (an anonymous mapping on Linux; see ring_linux.go), found through a
// map from key to position that holds no pointers. The garbage collector
// neither scans the entries nor counts them toward its target, so a full
// 64 MiB cache costs about 64 MiB of RSS, not twice that, and no GC work.
//
// A record is a header of entryOverhead bytes (key, expiry in Unix
// nanoseconds, value length) then the value. Records are written at the
// head and evicted from the tail, oldest first. A hit on a record in the
// older half of the ring writes it again at the head, so entries in use
// survive as they would in an LRU.

// entryOverhead is the bytes a record takes besides its value: its header.
// The index adds about 60 bytes per entry on the Go heap, not counted.
const entryOverhead = keyEnd + 8 + 4

const (
	keyEnd     = sha256.Size
	expiresEnd = keyEnd + 8
)

// skipMark in a header's length field marks the end of the ring's used
// part: the next record starts at the ring's beginning.
const skipMark = ^uint32(0)

// MemoryOptions configure a Memory store.
type MemoryOptions struct {
	// MaxBytes bounds the values and their headers held: the ring's size.
	// Default 64 MiB.
	MaxBytes int64
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// OnEvict is called (with the store's lock held) for each live entry
	// evicted to make room; nil: nothing is called.
	OnEvict func()
}

// DefaultMaxBytes is a Memory store's bound when MaxBytes is 0.
const DefaultMaxBytes = 64 << 20

// Memory is a store for one process, bounded in bytes, evicting the least
// recently used entries first (approximately: see above).
type Memory struct {
	opts MemoryOptions
	// mu protects everything below.
	mu   sync.Mutex
	ring []byte
	// index maps a key to its record's position. Positions count bytes
	// written since the start and never wrap; a record is at pos%len(ring).
	index map[Key]uint64
	// head is where the next record goes; tail is the oldest record still
	// in the ring (live, deleted or superseded). head-tail <= len(ring).
	head, tail uint64
	// bytes is the size of the live records.
	bytes int64
}

// NewMemory returns an empty Memory store. Its ring is mapped at once but
// takes memory only as it fills.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Memory{opts: o, ring: newRing(int(o.MaxBytes)), index: make(map[Key]uint64)}
	runtime.AddCleanup(m, freeRing, m.ring)
	return m
}

// Get returns a copy of the value under k unless it expired.
func (m *Memory) Get(_ context.Context, k Key) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	pos, ok := m.index[k]
	if !ok {
		return nil, ErrNotFound
	}
	rec := m.record(pos)
	expires := int64(binary.LittleEndian.Uint64(rec[keyEnd:]))
	if m.opts.Now().UnixNano() >= expires {
		m.drop(k, rec)
		return nil, ErrNotFound
	}
	v := make([]byte, len(rec)-entryOverhead)
	copy(v, rec[entryOverhead:])
	if m.head-pos > uint64(len(m.ring))/2 {
		// In the older half: write it again at the head, so it is not
		// the next to go.
		m.drop(k, rec)
		m.put(k, v, expires)
	}
	return v, nil
}

// Set stores a copy of v under k for ttl, evicting the oldest entries to
// make room. A value larger than MaxBytes (or 4 GiB) is not stored.
func (m *Memory) Set(_ context.Context, k Key, v []byte, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pos, ok := m.index[k]; ok {
		m.drop(k, m.record(pos))
	}
	if ttl <= 0 || entryOverhead+len(v) > len(m.ring) || uint64(len(v)) >= uint64(skipMark) {
		return nil
	}
	m.put(k, v, m.opts.Now().Add(ttl).UnixNano())
	return nil
}

// Delete removes the entry under k.
func (m *Memory) Delete(_ context.Context, k Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pos, ok := m.index[k]; ok {
		m.drop(k, m.record(pos))
	}
	return nil
}

// Stats returns the bytes held (values plus headers) and the entry count.
func (m *Memory) Stats() (bytes int64, entries int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes, len(m.index)
}

// record returns the record at pos: header and value.
func (m *Memory) record(pos uint64) []byte {
	off := int(pos % uint64(len(m.ring)))
	n := int(binary.LittleEndian.Uint32(m.ring[off+expiresEnd:]))
	return m.ring[off : off+entryOverhead+n]
}

// drop forgets k, whose record is rec; its bytes are reused when the tail
// passes them.
func (m *Memory) drop(k Key, rec []byte) {
	delete(m.index, k)
	m.bytes -= int64(len(rec))
}

// put writes a record of k and v at the head, evicting from the tail to make
// room. The record fits in the ring (the caller checked).
func (m *Memory) put(k Key, v []byte, expires int64) {
	size := uint64(entryOverhead + len(v))
	capacity := uint64(len(m.ring))
	start := m.head
	if off := start % capacity; capacity-off < size {
		start += capacity - off // no room before the end: start over
	}
	for start+size-m.tail > capacity {
		if m.tail == m.head {
			m.tail = start // all evicted: the skipped end is not a record
			break
		}
		m.evictTail()
	}
	if start != m.head {
		if off := m.head % capacity; capacity-off >= entryOverhead {
			binary.LittleEndian.PutUint32(m.ring[off+expiresEnd:], skipMark)
		}
	}
	off := start % capacity
	rec := m.ring[off : off+size]
	copy(rec, k[:])
	binary.LittleEndian.PutUint64(rec[keyEnd:], uint64(expires))
	binary.LittleEndian.PutUint32(rec[expiresEnd:], uint32(len(v)))
	copy(rec[entryOverhead:], v)
	m.index[k] = start
	m.head = start + size
	m.bytes += int64(size)
}

// evictTail moves the tail past its record, forgetting the record's key if
// the index still points at it.
func (m *Memory) evictTail() {
	capacity := uint64(len(m.ring))
	off := m.tail % capacity
	if capacity-off < entryOverhead || binary.LittleEndian.Uint32(m.ring[off+expiresEnd:]) == skipMark {
		m.tail += capacity - off
		return
	}
	rec := m.record(m.tail)
	k := Key(rec[:keyEnd])
	if pos, ok := m.index[k]; ok && pos == m.tail {
		m.drop(k, rec)
		if m.opts.OnEvict != nil {
			m.opts.OnEvict()
		}
	}
	m.tail += uint64(len(rec))
}
