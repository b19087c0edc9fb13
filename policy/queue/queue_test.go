package queue

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"sluice/internal/testkit"
	"sluice/policy/limit"
)

func newTestScheduler(t *testing.T, b Budget, keys ...Key) *Scheduler {
	t.Helper()
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	s := New(Options{Name: t.Name(), Budget: b, Keys: keys, Store: mem})
	t.Cleanup(s.Close)
	return s
}

// take acquires and waits; it returns the error and the ticket.
func take(s *Scheduler, flow string, weight int64, prio int, maxWait time.Duration, id string) (*Ticket, error) {
	t := NewTicket()
	t.Flow, t.Weight, t.Priority, t.ID, t.Tier = flow, weight, prio, id, "test"
	t.Deadline = time.Now().Add(maxWait)
	now, err := s.Acquire(t)
	if err != nil || now {
		return t, err
	}
	<-t.Ready()
	return t, t.Err()
}

func TestFastPathGrantsAtOnce(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 600, RPMBurst: 3})
	for i := range 3 {
		tk := NewTicket()
		tk.Flow, tk.ID, tk.Deadline = "a", fmt.Sprint(i), time.Now()
		ok, err := s.Acquire(tk)
		if !ok || err != nil {
			t.Fatalf("request %d: granted=%v err=%v, want immediate grant within the burst", i, ok, err)
		}
		s.Done(tk, -1)
	}
	// The fourth needs 100 ms; with no wait allowed it is rejected up front.
	tk := NewTicket()
	tk.Flow, tk.ID, tk.Deadline = "a", "4", time.Now()
	ok, err := s.Acquire(tk)
	if ok || !errors.Is(err, ErrWouldExceed) {
		t.Fatalf("granted=%v err=%v, want ErrWouldExceed", ok, err)
	}
	if tk.ETA < 50*time.Millisecond || tk.ETA > 200*time.Millisecond {
		t.Fatalf("ETA %v, want about one slot (100ms)", tk.ETA)
	}
}

func TestQueuedRequestWaitsForItsSlot(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 600, RPMBurst: 1}) // one per 100 ms
	a, err := take(s, "a", 1, 0, time.Second, "1")
	if err != nil {
		t.Fatal(err)
	}
	s.Done(a, -1)
	start := time.Now()
	b, err := take(s, "a", 1, 0, time.Second, "2")
	if err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	if waited < 80*time.Millisecond || waited > 300*time.Millisecond {
		t.Fatalf("second request waited %v, want about 100ms", waited)
	}
	if b.Waited < 80*time.Millisecond {
		t.Fatalf("ticket reports Waited %v", b.Waited)
	}
	s.Done(b, -1)
}

// TestFairnessEqualUsers: 10 users, each with 4 requests always
// outstanding (a closed loop), share a saturated budget for 400 ms; their
// served counts must be near equal.
func TestFairnessEqualUsers(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 60000, RPMBurst: 1}) // 1 ms slots
	const users, workers = 10, 4
	var mu sync.Mutex
	served := map[string]int{}
	stop := time.Now().Add(400 * time.Millisecond)
	var wg sync.WaitGroup
	for u := range users {
		for w := range workers {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					tk, err := take(s, fmt.Sprint("u", u), 1, 0, time.Second, fmt.Sprint(u, "-", w, "-", i))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					served[tk.Flow]++
					mu.Unlock()
					s.Done(tk, -1)
				}
			})
		}
	}
	wg.Wait()
	var sum, sq float64
	for u := range users {
		x := float64(served[fmt.Sprint("u", u)])
		sum += x
		sq += x * x
	}
	jain := sum * sum / (users * sq)
	t.Logf("served per user %v, Jain %.3f", served, jain)
	if sum < 100 || jain < 0.95 {
		t.Fatalf("Jain's index %.3f < 0.95 or too few served (served %v)", jain, served)
	}
}

func TestHeavyUserDoesNotDelayLightUsers(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 6000, RPMBurst: 1}) // 10 ms slots
	var mu sync.Mutex
	var heavySeq []uint64
	var wg sync.WaitGroup
	// The heavy user queues 100 requests (a second of work).
	for i := range 100 {
		wg.Go(func() {
			if tk, err := take(s, "heavy", 1, 0, 10*time.Second, fmt.Sprint("h", i)); err == nil {
				mu.Lock()
				heavySeq = append(heavySeq, tk.Seq)
				mu.Unlock()
				s.Done(tk, -1)
			}
		})
	}
	if !testkit.PollEvery(10*time.Second, time.Millisecond, func() bool { return s.Waiting() >= 90 }) { // the queue moves every few ms: poll as often
		t.Fatalf("timed out waiting for %s", "90 heavy requests queued")
	}
	// Nine light users send a request every 270 ms each, staggered by 30 ms
	// (together a sixth of the budget).
	type wait struct{ from, to uint64 } // grant numbers around the wait
	var waits []wait
	var took []time.Duration
	for u := range 9 {
		wg.Go(func() {
			time.Sleep(time.Duration(u) * 30 * time.Millisecond)
			for i := range 3 {
				start := time.Now()
				tk, err := take(s, fmt.Sprint("light", u), 1, 0, 10*time.Second, fmt.Sprint("l", u, i))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				waits = append(waits, wait{tk.Seq - tk.Slots, tk.Seq})
				took = append(took, time.Since(start))
				mu.Unlock()
				s.Done(tk, -1)
				time.Sleep(270*time.Millisecond - time.Since(start))
			}
		})
	}
	wg.Wait()
	// Counted in grants, not wall time (a busy machine stretches slots):
	// while a light request waits, the heavy user is served at most once
	// or twice (the grant in progress, and its turn in the round), however
	// many requests it has queued.
	worst := 0
	for _, w := range waits {
		n := 0
		for _, h := range heavySeq {
			if h > w.from && h < w.to {
				n++
			}
		}
		worst = max(worst, n)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("light waits p50 %v max %v (slot 10ms, heavy queue 100); most heavy grants during one light wait: %d",
		took[len(took)/2], took[len(took)-1], worst)
	if worst > 2 {
		t.Fatalf("a light request waited through %d of the heavy user's grants, want at most 2", worst)
	}
}

// TestWeightsShareByTier queues 200 requests of weight 1 and 200 of weight
// 3 behind one held slot, then lets them through one at a time: counted in
// grants, not wall time, the first 200 go 3 to 1.
func TestWeightsShareByTier(t *testing.T) {
	s := newTestScheduler(t, Budget{Concurrent: 1})
	blocker, err := take(s, "blocker", 1, 0, time.Second, "blocker")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	for _, w := range []int64{1, 3} {
		for i := range 200 {
			wg.Go(func() {
				tk, err := take(s, fmt.Sprint("w", w), w, 0, 30*time.Second, fmt.Sprint(w, "-", i))
				if err != nil {
					t.Errorf("request of weight %d: %v", w, err)
					return
				}
				mu.Lock()
				order = append(order, tk.Flow)
				mu.Unlock()
				s.Done(tk, -1)
			})
		}
	}
	if !testkit.PollEvery(10*time.Second, time.Millisecond, func() bool { return s.Waiting() >= 400 }) { // the queue moves every few ms: poll as often
		t.Fatalf("timed out waiting for %s", "400 requests queued")
	}
	s.Done(blocker, -1)
	wg.Wait()
	served := map[string]int{}
	for _, f := range order[:200] {
		served[f]++
	}
	ratio := float64(served["w3"]) / float64(max(served["w1"], 1))
	t.Logf("first 200 grants %v ratio %.2f", served, ratio)
	if ratio < 2.5 || ratio > 3.5 {
		t.Fatalf("weight 3 vs 1 served ratio %.2f in the first 200 grants, want 3", ratio)
	}
}

func TestPriorityLevelGoesFirst(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 6000, RPMBurst: 1}) // 10 ms slots
	hold, _ := take(s, "x", 1, 0, time.Second, "hold")       // uses the burst
	defer s.Done(hold, -1)
	var order []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			if tk, err := take(s, "low", 1, 0, time.Second, fmt.Sprint("lo", i)); err == nil {
				mu.Lock()
				order = append(order, "low")
				mu.Unlock()
				s.Done(tk, -1)
			}
		})
	}
	if !testkit.PollEvery(5*time.Second, time.Millisecond, func() bool { return s.Waiting() >= 3 }) { // the queue moves every few ms: poll as often
		t.Fatalf("timed out waiting for %s", "3 requests queued")
	}
	wg.Go(func() {
		if tk, err := take(s, "high", 1, 5, time.Second, "hi"); err == nil {
			mu.Lock()
			order = append(order, "high")
			mu.Unlock()
			s.Done(tk, -1)
		}
	})
	wg.Wait()
	// The first low request may already be in service; the high one must
	// come no later than second.
	if len(order) != 4 || (order[0] != "high" && order[1] != "high") {
		t.Fatalf("grant order %v, want the priority request first or second", order)
	}
}

func TestCancelWaitingTakesNoCapacity(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 600, RPMBurst: 1})
	first, _ := take(s, "a", 1, 0, time.Second, "first")
	var tickets []*Ticket
	for i := range 100 {
		tk := NewTicket()
		tk.Flow, tk.ID, tk.Deadline = fmt.Sprint("u", i), fmt.Sprint(i), time.Now().Add(time.Minute)
		if ok, err := s.Acquire(tk); ok || err != nil {
			t.Fatalf("ticket %d: granted=%v err=%v, want queued", i, ok, err)
		}
		tickets = append(tickets, tk)
	}
	for _, tk := range tickets {
		if !s.Cancel(tk) {
			t.Fatal("a queued ticket was granted before its cancel (100 ms slots)")
		}
	}
	if n := s.Waiting(); n != 0 {
		t.Fatalf("%d still waiting after cancels", n)
	}
	s.Done(first, -1)
	// No slot leaked: after one slot, the next request is granted.
	time.Sleep(110 * time.Millisecond)
	tk, err := take(s, "b", 1, 0, 0, "after")
	if err != nil {
		t.Fatalf("after cancels: %v", err)
	}
	s.Done(tk, -1)
}

func TestExpireAndClose(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 60, RPMBurst: 1}) // 1 s slots
	first, _ := take(s, "a", 1, 0, time.Second, "first")
	defer s.Done(first, -1)
	tk := NewTicket()
	tk.Flow, tk.ID, tk.Deadline = "b", "b", time.Now().Add(1500*time.Millisecond)
	if ok, err := s.Acquire(tk); ok || err != nil {
		t.Fatalf("granted=%v err=%v, want queued", ok, err)
	}
	// Another flow's request lengthens nothing for b, but a 10 ms deadline
	// on a saturated budget is rejected up front.
	tk2 := NewTicket()
	tk2.Flow, tk2.ID, tk2.Deadline = "c", "c", time.Now().Add(10*time.Millisecond)
	if _, err := s.Acquire(tk2); !errors.Is(err, ErrWouldExceed) {
		t.Fatalf("err %v, want ErrWouldExceed", err)
	}
	tk3 := NewTicket()
	tk3.Flow, tk3.ID, tk3.Deadline = "d", "d", time.Now().Add(time.Minute)
	if _, err := s.Acquire(tk3); err != nil {
		t.Fatal(err)
	}
	s.Close()
	<-tk3.Ready()
	if !errors.Is(tk3.Err(), ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", tk3.Err())
	}
}

func TestExpiredWhileWaiting(t *testing.T) {
	s := newTestScheduler(t, Budget{Concurrent: 1})
	first, _ := take(s, "a", 1, 0, time.Second, "first")
	tk := NewTicket()
	tk.Flow, tk.ID, tk.Deadline = "b", "b", time.Now().Add(120*time.Millisecond)
	if ok, err := s.Acquire(tk); ok || err != nil {
		t.Fatalf("granted=%v err=%v, want queued", ok, err)
	}
	<-tk.Ready()
	if !errors.Is(tk.Err(), ErrExpired) {
		t.Fatalf("err %v, want ErrExpired", tk.Err())
	}
	s.Done(first, -1)
}

func TestConcurrencyReleaseWakesQueue(t *testing.T) {
	s := newTestScheduler(t, Budget{Concurrent: 2})
	a, _ := take(s, "a", 1, 0, time.Second, "a")
	b, _ := take(s, "b", 1, 0, time.Second, "b")
	tk := NewTicket()
	tk.Flow, tk.ID, tk.Deadline = "c", "c", time.Now().Add(5*time.Second)
	if ok, _ := s.Acquire(tk); ok {
		t.Fatal("a third call was granted with 2 concurrent allowed")
	}
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	s.Done(a, -1)
	<-tk.Ready()
	if err := tk.Err(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Millisecond {
		t.Fatalf("granted %v after a local release, want at once", d)
	}
	s.Done(b, -1)
	s.Done(tk, -1)
}

func TestThrottleHalvesAndRecovers(t *testing.T) {
	s := newTestScheduler(t, Budget{RPM: 60000, RPMBurst: 1})
	s.Throttled(0, 50*time.Millisecond)
	if f := s.Factor(); f != 0.5 {
		t.Fatalf("factor %v after a 429, want 0.5", f)
	}
	s.Throttled(0, 50*time.Millisecond) // same storm: no second cut
	if f := s.Factor(); f != 0.5 {
		t.Fatalf("factor %v after a second 429 in the window, want 0.5", f)
	}
	start := time.Now()
	tk, err := take(s, "a", 1, 0, time.Second, "a")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("granted after %v, want the 50ms pause honoured", d)
	}
	s.Done(tk, -1)
	for range 10 {
		s.Succeeded()
	}
	if f := s.Factor(); math.Abs(f-1) > 1e-9 {
		t.Fatalf("factor %v after 10 successes, want 1", f)
	}
}

func TestKeyPoolSpreadsAndFailsOver(t *testing.T) {
	s := newTestScheduler(t, Budget{},
		Key{ID: "k1", Weight: 1, Budget: Budget{RPM: 60, RPMBurst: 2}},
		Key{ID: "k2", Weight: 1, Budget: Budget{RPM: 60, RPMBurst: 2}})
	used := map[int]int{}
	for i := range 4 {
		tk := NewTicket()
		tk.Flow, tk.ID, tk.Deadline = "a", fmt.Sprint(i), time.Now()
		ok, err := s.Acquire(tk)
		if !ok || err != nil {
			t.Fatalf("request %d: granted=%v err=%v; two keys of burst 2 should take 4", i, ok, err)
		}
		used[tk.Key]++
		s.Done(tk, -1)
	}
	if used[0] != 2 || used[1] != 2 {
		t.Fatalf("keys used %v, want 2 each", used)
	}
}

func TestKeyRestsAfter429(t *testing.T) {
	s := newTestScheduler(t, Budget{}, Key{ID: "k1", Weight: 1}, Key{ID: "k2", Weight: 1})
	s.Throttled(0, time.Minute)
	if f := s.Factor(); f != 1 {
		t.Fatalf("one key of two throttled cut the drain factor to %v", f)
	}
	for i := range 4 {
		tk := NewTicket()
		tk.Flow, tk.ID, tk.Deadline = "a", fmt.Sprint(i), time.Now()
		ok, err := s.Acquire(tk)
		if !ok || err != nil || tk.Key != 1 {
			t.Fatalf("request %d: granted=%v err=%v key=%d, want key 1 while key 0 rests", i, ok, err, tk.Key)
		}
		s.Done(tk, -1)
	}
}

func TestTokenBudgetSettles(t *testing.T) {
	s := newTestScheduler(t, Budget{TPM: 6000, TPMBurst: 1000})
	tk := NewTicket()
	tk.Flow, tk.ID, tk.Tokens, tk.Deadline = "a", "1", 1000, time.Now()
	if ok, err := s.Acquire(tk); !ok || err != nil {
		t.Fatalf("granted=%v err=%v", ok, err)
	}
	s.Done(tk, 100) // 900 tokens refunded
	tk = NewTicket()
	tk.Flow, tk.ID, tk.Tokens, tk.Deadline = "a", "2", 800, time.Now()
	if ok, err := s.Acquire(tk); !ok || err != nil {
		t.Fatalf("after a refund of 900: granted=%v err=%v", ok, err)
	}
	s.Done(tk, -1)
}

// BenchmarkAcquireFastPath: a grant with nobody waiting (rpm and tpm budget
// in memory), then Done.
func BenchmarkAcquireFastPath(b *testing.B) {
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	s := New(Options{Name: "bench", Budget: Budget{RPM: 1 << 40, TPM: 1 << 40}, Store: mem})
	defer s.Close()
	deadline := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		t := NewTicket()
		t.Flow, t.Tokens, t.Deadline = "u", 100, deadline
		if ok, err := s.Acquire(t); !ok || err != nil {
			b.Fatal(ok, err)
		}
		s.Done(t, 80)
	}
}

// BenchmarkAcquireFastPathConcurrent is the fast path with a concurrency
// budget too: Done frees a slot, which wakes the dispatcher only when a
// ticket waits for it.
func BenchmarkAcquireFastPathConcurrent(b *testing.B) {
	mem := limit.NewMemory(limit.MemoryOptions{SweepInterval: -1})
	s := New(Options{Name: "bench", Budget: Budget{RPM: 1 << 40, TPM: 1 << 40, Concurrent: 1 << 20}, Store: mem})
	defer s.Close()
	deadline := time.Now().Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		t := NewTicket()
		t.Flow, t.Tokens, t.Deadline, t.ID = "u", 100, deadline, "req"
		if ok, err := s.Acquire(t); !ok || err != nil {
			b.Fatal(ok, err)
		}
		s.Done(t, 80)
	}
}
