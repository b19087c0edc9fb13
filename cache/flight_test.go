package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/internal/testkit"
)

func TestSingleFlightOneLeaderAllFollowersGetTheAnswer(t *testing.T) {
	g := NewGroup()
	k := keyOf(1)
	const n = 50
	var leaders atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]string, n)
	var joined sync.WaitGroup
	joined.Add(n)
	for i := range n {
		wg.Go(func() {
			<-start
			f, leader := g.Join(k, false)
			joined.Done()
			if leader {
				leaders.Add(1)
				joined.Wait() // everyone joins before the answer
				f.Finish(&Entry{Body: []byte("answer")})
				results[i] = "answer"
				return
			}
			e, err := f.Wait(context.Background())
			if err != nil || e == nil {
				t.Errorf("follower %d: %v, %v", i, e, err)
				return
			}
			results[i] = string(e.Body)
		})
	}
	close(start)
	wg.Wait()
	if leaders.Load() != 1 {
		t.Fatalf("%d leaders, want 1", leaders.Load())
	}
	for i, r := range results {
		if r != "answer" {
			t.Errorf("request %d got %q", i, r)
		}
	}
	if g.Len() != 0 {
		t.Errorf("%d flights left after Finish", g.Len())
	}
	// After Finish a new request leads a new flight.
	if _, leader := g.Join(k, false); !leader {
		t.Errorf("a request after Finish joined the old flight")
	}
}

func TestFlightTeeFromStartAndBoundedWait(t *testing.T) {
	g := NewGroup()
	f, _ := g.Join(keyOf(2), true)
	f.Event([]byte("data: 1\n\n"))
	f2, leader := g.Join(keyOf(2), true)
	if leader || f2 != f {
		t.Fatal("second request did not join")
	}
	got := make(chan []string)
	go func() {
		var evs []string
		for i := 0; ; i++ {
			ev, ok, _, err := f.Next(context.Background(), i)
			if err != nil || !ok {
				break
			}
			evs = append(evs, string(ev))
		}
		got <- evs
	}()
	buf := []byte("data: 2\n\n")
	f.Event(buf)
	buf[6] = 'X' // the flight keeps its own copy
	f.Finish(nil)
	evs := <-got
	if len(evs) != 2 || evs[0] != "data: 1\n\n" || evs[1] != "data: 2\n\n" {
		t.Errorf("follower saw %q, want both events from the start", evs)
	}
	// A wait is bounded by its context.
	f3, _ := g.Join(keyOf(3), false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := f3.Wait(ctx); err == nil {
		t.Errorf("Wait on an unfinished flight returned without error")
	}
	if _, _, _, err := f3.Next(ctx, 0); err == nil {
		t.Errorf("Next on a silent flight returned without error")
	}
}

// TestFlightFinishCopiesTheBodyOnlyForFollowers: a leader may finish with a
// body it reuses at once; followers get the answer as it was, and a flight
// nobody followed copies nothing and makes no channel.
func TestFlightFinishCopiesTheBodyOnlyForFollowers(t *testing.T) {
	g := NewGroup()
	buf := []byte("answer one")
	f, _ := g.Join(keyOf(1), false)
	follower, leader := g.Join(keyOf(1), false)
	if leader || follower != f {
		t.Fatal("the second request did not follow")
	}
	got := make(chan *Entry)
	go func() {
		e, _ := follower.Wait(context.Background())
		got <- e
	}()
	testkit.Eventually(t, 5*time.Second, "the follower to wait", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.followers > 0 && f.changed != nil
	})
	f.Finish(&Entry{Body: buf})
	copy(buf, "ANSWER TWO") // the leader's buffer, reused
	if e := <-got; e == nil || string(e.Body) != "answer one" {
		t.Errorf("follower got %v, want the answer as finished", e)
	}

	alone, _ := g.Join(keyOf(2), false)
	e := &Entry{Body: buf}
	allocs := testing.AllocsPerRun(1, func() { alone.Finish(e) })
	if &e.Body[0] != &buf[0] {
		t.Error("a flight without followers copied the body")
	}
	if allocs != 0 {
		t.Errorf("finishing a flight without followers allocated %.0f times", allocs)
	}
	if _, leader := g.Join(keyOf(2), false); !leader {
		t.Error("a finished flight still takes followers")
	}
}
