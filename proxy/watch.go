package proxy

import (
	"sync"
	"time"
)

// watchInterval is how often a waiting call or a stream checks that its
// client is still connected: a call waiting for its answer has nothing to
// write that would fail, and a stream's events may be too sparse for a
// failed write to tell. A check costs about half a microsecond.
const watchInterval = 100 * time.Millisecond

// A Server's watchSet (Server.watch) checks the client sockets of all its
// watched calls and streams, every watchInterval, from one goroutine that
// runs while any is watched: a goroutine, a ticker and two channels per
// request cost more than the checks themselves.

// watched is what a watchSet checks: a relay (a stream) or a line (a call
// waiting for its answer).
type watched interface {
	// check polls the client's socket and acts when the client has gone.
	check()
	// watchSlot is where the set keeps the item's index in items.
	watchSlot() *int
}

// watchSet is the calls and streams whose clients are watched.
type watchSet struct {
	mu sync.Mutex
	// items are the watched; running reports that the goroutine that checks
	// them runs (it ends when items is empty).
	items   []watched
	running bool
}

// add starts watching w.
func (ws *watchSet) add(w watched) {
	ws.mu.Lock()
	*w.watchSlot() = len(ws.items)
	ws.items = append(ws.items, w)
	if !ws.running {
		ws.running = true
		go ws.loop()
	}
	ws.mu.Unlock()
}

// remove stops watching w, which add added. A check of w already under way
// may still run; w's own lock decides what it may do.
func (ws *watchSet) remove(w watched) {
	ws.mu.Lock()
	i, last := *w.watchSlot(), len(ws.items)-1
	ws.items[i] = ws.items[last]
	*ws.items[i].watchSlot() = i
	ws.items[last] = nil
	ws.items = ws.items[:last]
	ws.mu.Unlock()
}

// len is the number of items watched.
func (ws *watchSet) len() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.items)
}

// loop checks every watched client each watchInterval, until none is left.
func (ws *watchSet) loop() {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	var batch []watched
	for range t.C {
		ws.mu.Lock()
		if len(ws.items) == 0 {
			ws.running = false
			ws.items = nil // let a burst's backing array go
			ws.mu.Unlock()
			return
		}
		batch = append(batch[:0], ws.items...)
		ws.mu.Unlock()
		for i, w := range batch {
			w.check()
			batch[i] = nil
		}
	}
}
