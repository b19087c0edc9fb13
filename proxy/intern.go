package proxy

import (
	"sync"
	"sync/atomic"
)

// names interns names clients send (models, end users, user agents), so
// the hot path turns a name from the request into a string without
// allocating once the name has been seen. Only names worth keeping are
// added (a model that routed, a well-formed end user, a user agent's first
// 256 bytes), at most maxNames of at most maxNameLen bytes each (the names
// come from clients); others are copied per request as before.
type names struct {
	m  atomic.Pointer[map[string]string] // read without a lock; replaced whole
	mu sync.Mutex                        // serializes additions
}

const (
	maxNames   = 1024
	maxNameLen = 256
)

// get returns b as a string: the interned copy when there is one, else a
// new string (known false).
func (n *names) get(b []byte) (s string, known bool) {
	if m := n.m.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok { // no allocation: a map index by converted bytes
			return s, true
		}
	}
	return string(b), false
}

// add interns s, unless the table is full or s too long.
func (n *names) add(s string) {
	if len(s) > maxNameLen {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.m.Load()
	if old != nil {
		if _, ok := (*old)[s]; ok || len(*old) >= maxNames {
			return
		}
	}
	m := make(map[string]string, 1)
	if old != nil {
		m = make(map[string]string, len(*old)+1)
		for k, v := range *old {
			m[k] = v
		}
	}
	m[s] = s
	n.m.Store(&m)
}
