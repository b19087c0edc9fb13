package cache

import (
	"bytes"
	"context"
	"sync"
)

// Flight is one upstream call that identical requests share. The leader
// (the request that started it) appends the stream's events as they arrive
// and finally calls Finish; followers read the events from the start
// (Reader) or wait for the finished entry (Wait).
type Flight struct {
	g   *Group
	key Key
	// mu protects everything below.
	mu sync.Mutex
	// events are copies of the stream's events, in order.
	events [][]byte
	// changed is closed whenever events grow or the flight ends; nil until
	// a follower waits (most flights have none: no channel is made).
	changed chan struct{}
	done    bool
	// complete reports that the leader's call ended normally (a stream read
	// to its end), even when its answer could not be stored.
	complete bool
	// entry is the finished answer; nil when the call failed or its answer
	// could not be stored.
	entry *Entry
	// streamed reports that the leader relays a stream (followers may tee).
	streamed bool
	// followers counts requests that joined.
	followers int
	// remote reports a leader that waits for another replica's call
	// (lock.go) instead of calling the provider.
	remote bool
	// lock is the shared lock the leader holds while it calls; nil without
	// a shared store. End releases it.
	lock *sharedLock
}

// Group tracks the flights in progress, one per key.
type Group struct {
	// mu protects flights.
	mu      sync.Mutex
	flights map[Key]*Flight
}

// NewGroup returns an empty Group.
func NewGroup() *Group { return &Group{flights: make(map[Key]*Flight)} }

// Join returns the flight in progress for k, or starts one (leader true).
// The leader must call Finish exactly once.
func (g *Group) Join(k Key, streamed bool) (f *Flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f = g.flights[k]; f != nil {
		f.mu.Lock()
		f.followers++
		f.mu.Unlock()
		return f, false
	}
	f = &Flight{g: g, key: k, streamed: streamed}
	g.flights[k] = f
	return f, true
}

// NewFlight returns a flight no other request can join, for a request that
// refreshes an entry: it records its events and is finished like any other.
func NewFlight(streamed bool) *Flight {
	return &Flight{streamed: streamed}
}

// Len returns the number of flights in progress.
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.flights)
}

// Streamed reports whether the leader relays a stream.
func (f *Flight) Streamed() bool { return f.streamed }

// Followers returns how many requests joined so far.
func (f *Flight) Followers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.followers
}

// Event appends a copy of one stream event for the followers.
func (f *Flight) Event(ev []byte) {
	c := make([]byte, len(ev))
	copy(c, ev)
	f.mu.Lock()
	f.events = append(f.events, c)
	f.wake()
	f.mu.Unlock()
}

// wake wakes the followers waiting for a change (f.mu held).
func (f *Flight) wake() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// waitCh returns the channel closed at the next change (f.mu held).
func (f *Flight) waitCh() chan struct{} {
	if f.changed == nil {
		f.changed = make(chan struct{})
	}
	return f.changed
}

// Events returns the events appended so far; the caller must not modify them.
func (f *Flight) Events() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events
}

// Finish ends the flight with its answer (nil: failed or not storable) and
// wakes every follower. Requests that arrive later start a new flight, so
// the leader stores the entry before calling Finish. e.Body may be a buffer
// the leader reuses once Finish returns: the followers, if any, get a copy.
func (f *Flight) Finish(e *Entry) { f.End(e != nil, e) }

// End is Finish for a call that ended normally (complete) but whose answer
// may not be storable (e nil): followers of the stream end cleanly, while
// requests waiting for an entry call on their own.
func (f *Flight) End(complete bool, e *Entry) {
	if f.g != nil {
		f.g.mu.Lock()
		if f.g.flights[f.key] == f {
			delete(f.g.flights, f.key)
		}
		f.g.mu.Unlock()
	}
	// Out of the group, the flight can gain no follower: without one, the
	// entry is read by nobody and its body is not copied.
	f.mu.Lock()
	if e != nil && f.followers > 0 {
		e.Body = bytes.Clone(e.Body)
	}
	f.done, f.complete, f.entry = true, complete, e
	sl := f.lock
	f.lock = nil
	f.wake()
	f.mu.Unlock()
	if sl != nil {
		sl.release() // after the entry was stored: waiting replicas find it
	}
}

// Complete reports that the flight ended normally (see End).
func (f *Flight) Complete() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.complete
}

// Wait waits for the flight to end and returns its entry (nil when it
// failed), or ctx's error.
func (f *Flight) Wait(ctx context.Context) (*Entry, error) {
	for {
		f.mu.Lock()
		done, e := f.done, f.entry
		var ch chan struct{}
		if !done {
			ch = f.waitCh()
		}
		f.mu.Unlock()
		if done {
			return e, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Next returns event i of the stream once it exists. At the end of the
// flight it returns ok false and the flight's entry (nil: the stream failed).
// It waits at most until ctx ends, returning ctx's error.
func (f *Flight) Next(ctx context.Context, i int) (ev []byte, ok bool, e *Entry, err error) {
	for {
		f.mu.Lock()
		n, done := len(f.events), f.done
		var ch chan struct{}
		if i < n {
			ev = f.events[i]
		} else if !done {
			ch = f.waitCh()
		}
		e = f.entry
		f.mu.Unlock()
		if i < n {
			return ev, true, nil, nil
		}
		if done {
			return nil, false, e, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, nil, ctx.Err()
		}
	}
}
