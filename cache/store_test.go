package cache

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func keyOf(i int) Key { var k Key; k[0], k[1] = byte(i), byte(i>>8); return k }

func TestMemoryBoundInBytesEvictsLRU(t *testing.T) {
	evicted := 0
	m := NewMemory(MemoryOptions{MaxBytes: 10 * (100 + entryOverhead), OnEvict: func() { evicted++ }})
	ctx := context.Background()
	val := bytes.Repeat([]byte("x"), 100)
	for i := range 10 {
		_ = m.Set(ctx, keyOf(i), val, time.Hour)
	}
	if b, n := m.Stats(); n != 10 || b != 10*(100+entryOverhead) {
		t.Fatalf("after 10 sets: %d bytes, %d entries; want %d, 10", b, n, 10*(100+entryOverhead))
	}
	// Touch key 0 so key 1 is the least recently used.
	if _, err := m.Get(ctx, keyOf(0)); err != nil {
		t.Fatal(err)
	}
	_ = m.Set(ctx, keyOf(10), val, time.Hour)
	if _, err := m.Get(ctx, keyOf(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("least recently used key 1 still there (err %v)", err)
	}
	if _, err := m.Get(ctx, keyOf(0)); err != nil {
		t.Errorf("recently used key 0 evicted: %v", err)
	}
	if evicted != 1 {
		t.Errorf("evictions = %d, want 1", evicted)
	}
	// A big value evicts as many as it needs, and the bound holds.
	_ = m.Set(ctx, keyOf(20), bytes.Repeat([]byte("y"), 450), time.Hour)
	if b, _ := m.Stats(); b > 10*(100+entryOverhead) {
		t.Errorf("bytes %d over the bound %d", b, 10*(100+entryOverhead))
	}
	// A value over the whole bound is not stored.
	_ = m.Set(ctx, keyOf(30), bytes.Repeat([]byte("z"), 5000), time.Hour)
	if _, err := m.Get(ctx, keyOf(30)); !errors.Is(err, ErrNotFound) {
		t.Errorf("a value larger than MaxBytes was stored")
	}
}

func TestMemoryTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	m := NewMemory(MemoryOptions{Now: func() time.Time { return now }})
	ctx := context.Background()
	_ = m.Set(ctx, keyOf(1), []byte("v"), time.Second)
	if _, err := m.Get(ctx, keyOf(1)); err != nil {
		t.Fatalf("fresh entry: %v", err)
	}
	now = now.Add(time.Second)
	if _, err := m.Get(ctx, keyOf(1)); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired entry served")
	}
	if _, n := m.Stats(); n != 0 {
		t.Errorf("expired entry still counted")
	}
}

func TestEntryRoundTripAndCorruption(t *testing.T) {
	e := &Entry{Created: time.UnixMilli(1700000000123), Expires: time.UnixMilli(1700000060123), Body: []byte(`{"a":1}`),
		PromptTokens: 3, CompletionTokens: 4}
	b := e.Encode()
	got, err := Decode(b)
	if err != nil || !got.Created.Equal(e.Created) || !got.Expires.Equal(e.Expires) || string(got.Body) != `{"a":1}` ||
		got.PromptTokens != 3 || got.CompletionTokens != 4 {
		t.Fatalf("Decode(Encode(e)) = %+v, %v", got, err)
	}
	bad := [][]byte{nil, b[:10], b[:len(b)-1], append(append([]byte{}, b...), 'x')}
	flipped := append([]byte{}, b...)
	flipped[len(flipped)-2] ^= 1
	bad = append(bad, flipped)
	v2 := append([]byte{}, b...)
	v2[3] = 2 // another format version
	bad = append(bad, v2)
	for i, c := range bad {
		if _, err := Decode(c); !errors.Is(err, ErrCorrupt) {
			t.Errorf("case %d: Decode = %v, want ErrCorrupt", i, err)
		}
	}
}

// failingStore fails every call, like a Redis that is down.
type failingStore struct{ calls int }

func (f *failingStore) Get(context.Context, Key) ([]byte, error) {
	f.calls++
	return nil, errors.New("dial tcp: connection refused")
}
func (f *failingStore) Set(context.Context, Key, []byte, time.Duration) error {
	f.calls++
	return errors.New("dial tcp: connection refused")
}

// rawStore holds raw values, to plant corrupt entries.
type rawStore map[Key][]byte

func (r rawStore) Get(_ context.Context, k Key) ([]byte, error) {
	if v, ok := r[k]; ok {
		return v, nil
	}
	return nil, ErrNotFound
}
func (r rawStore) Set(_ context.Context, k Key, v []byte, _ time.Duration) error {
	r[k] = bytes.Clone(v) // the caller reuses v
	return nil
}

func newTestCache(t *testing.T, s Store) *Cache {
	t.Helper()
	c, err := New(Options{Store: s, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCorruptEntryIsCountedMiss(t *testing.T) {
	rs := rawStore{}
	c := newTestCache(t, rs)
	ctx := context.Background()
	c.Put(ctx, keyOf(1), &Entry{Created: time.Now(), Expires: time.Now().Add(time.Minute), Body: []byte(`{}`)})
	if c.Get(ctx, keyOf(1)) == nil {
		t.Fatal("a good entry missed")
	}
	rs[keyOf(1)][len(rs[keyOf(1)])-1] ^= 0xff
	rs[keyOf(2)] = []byte("garbage")
	if c.Get(ctx, keyOf(1)) != nil || c.Get(ctx, keyOf(2)) != nil {
		t.Fatal("a corrupt entry was served")
	}
	if n := testutil.ToFloat64(c.m.Corrupt); n != 2 {
		t.Errorf("corrupt counter = %v, want 2", n)
	}
}

func TestStoreDownIsMiss(t *testing.T) {
	fs := &failingStore{}
	c := newTestCache(t, fs)
	ctx := context.Background()
	c.Put(ctx, keyOf(1), &Entry{Created: time.Now(), Expires: time.Now().Add(time.Minute), Body: []byte(`{}`)})
	if c.Get(ctx, keyOf(1)) != nil {
		t.Fatal("hit from a failing store")
	}
	if fs.calls != 2 || testutil.ToFloat64(c.m.StoreErrors) != 2 {
		t.Errorf("calls %d, store errors %v; want 2, 2", fs.calls, testutil.ToFloat64(c.m.StoreErrors))
	}
}

func TestTieredFillsMemoryFromBack(t *testing.T) {
	back := rawStore{}
	front := NewMemory(MemoryOptions{})
	c := newTestCache(t, &Tiered{Front: front, Back: back})
	ctx := context.Background()
	e := &Entry{Created: time.Now(), Expires: time.Now().Add(time.Minute), Body: []byte(`{"x":1}`)}
	_ = back.Set(ctx, keyOf(7), e.Encode(), time.Minute) // as if another replica stored it
	if got := c.Get(ctx, keyOf(7)); got == nil || string(got.Body) != `{"x":1}` {
		t.Fatalf("tiered miss on an entry in the back store")
	}
	if _, n := front.Stats(); n != 1 {
		t.Errorf("memory holds %d entries after a back hit, want 1", n)
	}
	delete(back, keyOf(7))
	if c.Get(ctx, keyOf(7)) == nil {
		t.Errorf("second read did not come from memory")
	}
	// Back store down: memory still answers, the rest misses.
	c2 := newTestCache(t, &Tiered{Front: front, Back: &failingStore{}})
	if c2.Get(ctx, keyOf(7)) == nil || c2.Get(ctx, keyOf(8)) != nil {
		t.Errorf("tiered with the back store down: want memory hit and a miss")
	}
}

func TestCachePutBoundsAndExpiry(t *testing.T) {
	now := time.Unix(5000, 0)
	mem := NewMemory(MemoryOptions{Now: func() time.Time { return now }})
	c, err := New(Options{Store: mem, Memory: mem, Registry: prometheus.NewRegistry(), MaxEntryBytes: 10,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Put(ctx, keyOf(1), &Entry{Created: now, Expires: now.Add(time.Minute), Body: []byte("0123456789a")})
	if c.Get(ctx, keyOf(1)) != nil || testutil.ToFloat64(c.m.TooLarge) != 1 {
		t.Errorf("an entry over MaxEntryBytes was stored")
	}
	c.Put(ctx, keyOf(2), &Entry{Created: now, Expires: now.Add(time.Minute), Body: []byte("small")})
	if e := c.Get(ctx, keyOf(2)); e == nil || string(e.Body) != "small" {
		t.Fatalf("small entry missed")
	}
	if testutil.ToFloat64(c.m.Stored) != 1 {
		t.Errorf("stores = %v, want 1", testutil.ToFloat64(c.m.Stored))
	}
	now = now.Add(time.Minute)
	if c.Get(ctx, keyOf(2)) != nil {
		t.Errorf("expired entry served")
	}
	c.Put(ctx, keyOf(3), &Entry{Created: now, Expires: now, Body: []byte("x")})
	if _, n := mem.Stats(); n != 0 {
		t.Errorf("an entry with no time left was stored (%d entries)", n)
	}
}

// TestCachePutReusesItsEncodeBuffer: Put encodes into a pooled buffer (the
// store copies what it keeps), so storing allocates nothing once warm, and
// the entries stored one after the other stay intact.
func TestCachePutReusesItsEncodeBuffer(t *testing.T) {
	mem := NewMemory(MemoryOptions{})
	c := newTestCache(t, mem)
	ctx := context.Background()
	small := &Entry{Created: time.Now(), Expires: time.Now().Add(time.Hour), Body: bytes.Repeat([]byte("a"), 600)}
	large := &Entry{Created: time.Now(), Expires: time.Now().Add(time.Hour), Body: bytes.Repeat([]byte("b"), 4000)}
	c.Put(ctx, keyOf(1), small)
	c.Put(ctx, keyOf(2), large)
	for i, want := range []*Entry{small, large} {
		if e := c.Get(ctx, keyOf(i+1)); e == nil || !bytes.Equal(e.Body, want.Body) {
			t.Errorf("entry %d changed after the next Put", i+1)
		}
	}
	if raceEnabled {
		return // the race detector drops pooled items at random
	}
	if n := testing.AllocsPerRun(100, func() { c.Put(ctx, keyOf(1), small) }); n != 0 {
		t.Errorf("Put of a 600 B entry allocated %.1f times", n)
	}
}
