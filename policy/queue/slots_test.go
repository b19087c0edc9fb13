package queue

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/policy/limit"
)

func newSlotScheduler(t *testing.T, b Budget) (*Scheduler, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	s := New(Options{Name: "up", Budget: b, Store: limit.NewMemory(limit.MemoryOptions{SweepInterval: -1}), Metrics: m})
	t.Cleanup(s.Close)
	return s, m
}

func slotCount(m *Metrics, outcome string) float64 {
	return testutil.ToFloat64(m.slots.WithLabelValues("up", outcome))
}

// reject acquires for flow with no wait allowed and expects a rejection.
func reject(t *testing.T, s *Scheduler, flow string) *Ticket {
	t.Helper()
	tk := NewTicket()
	tk.Flow, tk.Tier, tk.ID, tk.Deadline = flow, "test", flow, time.Now()
	ok, err := s.Acquire(tk)
	if ok || !errors.Is(err, ErrWouldExceed) {
		t.Fatalf("%s: granted=%v err=%v, want ErrWouldExceed", flow, ok, err)
	}
	return tk
}

// TestRetrySlotIsAPromise: at one grant per 100 ms, two users rejected in
// turn are booked slots one grant apart; a user who queued meanwhile with
// a longer max wait does not take the first slot: the booked user's retry,
// on time and unable to wait, claims it and is granted before them.
func TestRetrySlotIsAPromise(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		s, m := newSlotScheduler(t, Budget{RPM: 600, RPMBurst: 1})
		retrySlotIsAPromise(t, s, m)
	})
	// The same with the budget and the book of slots in Redis: the
	// owner's own claim goes through the book.
	t.Run("redis", func(t *testing.T) {
		store := redisStore(t)
		m := NewMetrics(prometheus.NewRegistry())
		s := New(Options{Name: "up", Budget: Budget{RPM: 600, RPMBurst: 1}, Store: store, Slots: store, Metrics: m})
		t.Cleanup(s.Close)
		retrySlotIsAPromise(t, s, m)
	})
}

func retrySlotIsAPromise(t *testing.T, s *Scheduler, m *Metrics) {
	first, err := take(s, "first", 1, 0, 0, "1")
	if err != nil {
		t.Fatal(err)
	}
	s.Done(first, -1)
	b := reject(t, s, "booked")
	c := reject(t, s, "second")
	if b.RetrySlot.IsZero() || c.RetrySlot.IsZero() || slotCount(m, SlotBooked) != 2 {
		t.Fatalf("slots %v and %v, %v booked; want two", b.RetrySlot, c.RetrySlot, slotCount(m, SlotBooked))
	}
	if gap := c.RetrySlot.Sub(b.RetrySlot); gap < 80*time.Millisecond {
		t.Fatalf("the second slot is %v after the first, want a grant (100 ms) later", gap)
	}
	// A newcomer that may wait queues now, behind both slots.
	retryBeatsNewcomer(t, s, m, "booked", b.RetrySlot, 0)
}

// retryBeatsNewcomer queues a newcomer that may wait 3 s on s; then, at
// slot+late, flow's retry, which may not wait, must claim its slot, be
// granted before the newcomer, and be counted claimed on m.
func retryBeatsNewcomer(t *testing.T, s *Scheduler, m *Metrics, flow string, slot time.Time, late time.Duration) {
	t.Helper()
	order := make(chan string, 2)
	go func() {
		tk, err := take(s, "newcomer", 1, 0, 3*time.Second, "n")
		if err == nil {
			order <- "newcomer"
			s.Done(tk, -1)
		}
	}()
	time.Sleep(time.Until(slot.Add(late)))
	tk, err := take(s, flow, 1, 0, 0, "retry")
	if err != nil || !tk.Claimed {
		t.Fatalf("the retry at its slot: err %v, claimed %v", err, tk.Claimed)
	}
	order <- flow
	s.Done(tk, -1)
	if got := <-order; got != flow {
		t.Fatalf("%s was granted first, want the booked retry", got)
	}
	<-order
	if slotCount(m, SlotClaimed) != 1 {
		t.Fatalf("%v claimed, want 1", slotCount(m, SlotClaimed))
	}
}

// TestRetrySlotExpires: a slot nobody claims is released after its
// tolerance (counted), and newcomers' estimates stop counting it.
func TestRetrySlotExpires(t *testing.T) {
	s, m := newSlotScheduler(t, Budget{RPM: 600, RPMBurst: 1})
	first, _ := take(s, "first", 1, 0, 0, "1")
	s.Done(first, -1)
	b := reject(t, s, "gone")
	time.Sleep(time.Until(b.RetrySlot.Add(tolerance(b.ETA) + 10*time.Millisecond)))
	s.mu.Lock()
	s.sweep(time.Now())
	n := len(s.bookings)
	s.mu.Unlock()
	if n != 0 || slotCount(m, SlotExpired) != 1 {
		t.Fatalf("%d slots left, %v expired; want 0 and 1", n, slotCount(m, SlotExpired))
	}
	// Late, the retry is a newcomer: granted as the budget allows.
	if tk, err := take(s, "gone", 1, 0, time.Second, "late"); err != nil || tk.Claimed {
		t.Fatalf("late retry: err %v claimed %v", err, tk.Claimed)
	}
}

// TestNoSlotPastAMinute: at one grant a minute, the first rejected user
// is booked the slot a minute away; the next one's wait (behind that slot)
// is over MaxSlotWait: nothing is booked and the rejection is NoSlot.
func TestNoSlotPastAMinute(t *testing.T) {
	s, m := newSlotScheduler(t, Budget{RPM: 1, RPMBurst: 1})
	first, _ := take(s, "first", 1, 0, 0, "1")
	s.Done(first, -1)
	if b := reject(t, s, "booked"); b.RetrySlot.IsZero() || b.NoSlot {
		t.Fatalf("a wait of %v: slot %v, NoSlot %v; want a slot", b.ETA, b.RetrySlot, b.NoSlot)
	}
	tk := reject(t, s, "late")
	if !tk.NoSlot || !tk.RetrySlot.IsZero() || tk.ETA <= 0 || slotCount(m, SlotRefused) != 1 {
		t.Fatalf("NoSlot %v, slot %v, ETA %v, refused %v", tk.NoSlot, tk.RetrySlot, tk.ETA, slotCount(m, SlotRefused))
	}
}

// TestLeastServedFirst: of two users who start waiting, the one granted
// less over the last minutes is served first, whichever came first.
func TestLeastServedFirst(t *testing.T) {
	s, _ := newSlotScheduler(t, Budget{RPM: 600, RPMBurst: 1})
	s.mu.Lock()
	now := time.Now()
	for range 3 {
		s.record("regular", now)
	}
	s.mu.Unlock()
	hold, _ := take(s, "hold", 1, 0, 0, "h") // takes the burst: the next two wait
	s.Done(hold, -1)
	order := make(chan string, 3)
	start := func(flow string) {
		tk := NewTicket()
		tk.Flow, tk.Tier, tk.Deadline = flow, "test", time.Now().Add(2*time.Second)
		if ok, err := s.Acquire(tk); ok || err != nil {
			t.Errorf("%s: granted=%v err=%v, want queued", flow, ok, err)
			return
		}
		go func() { <-tk.Ready(); order <- flow; s.Done(tk, -1) }()
	}
	start("blocker") // the front of the ring, being served
	start("regular")
	start("newcomer")
	got := []string{<-order, <-order, <-order}
	if got[1] != "newcomer" || got[2] != "regular" {
		t.Fatalf("granted in order %v, want the newcomer before the regular", got)
	}
}

// TestSlotsDelayNoWaiter: slots booked while a request waits are placed
// after it, so it is served within the wait it was told, however many
// users are rejected meanwhile (a slot booked at the budget's next opening
// would take the openings it waits for, one by one, past its max wait).
func TestSlotsDelayNoWaiter(t *testing.T) {
	s, m := newSlotScheduler(t, Budget{RPM: 600, RPMBurst: 1})
	first, _ := take(s, "first", 1, 0, 0, "1")
	s.Done(first, -1)
	w := NewTicket()
	w.Flow, w.Tier, w.Deadline = "waiter", "test", time.Now().Add(250*time.Millisecond)
	if ok, err := s.Acquire(w); ok || err != nil {
		t.Fatalf("waiter: granted=%v err=%v, want queued", ok, err)
	}
	told := w.ETA
	var last time.Time
	for i := range 5 {
		b := reject(t, s, fmt.Sprint("rejected-", i))
		if b.RetrySlot.IsZero() || !b.RetrySlot.After(time.Now().Add(told)) {
			t.Fatalf("rejection %d: slot %v, want one after the waiter's %v", i, b.RetrySlot, told)
		}
		if !last.IsZero() && b.RetrySlot.Sub(last) < 90*time.Millisecond {
			t.Fatalf("rejection %d: slot %v after the one before, want a grant (100 ms) apart", i, b.RetrySlot.Sub(last))
		}
		last = b.RetrySlot
	}
	<-w.Ready()
	if err := w.Err(); err != nil {
		t.Fatalf("the waiter, told %v: %v after %v", told, err, w.Waited)
	}
	s.Done(w, -1)
	if slotCount(m, SlotBooked) != 5 {
		t.Fatalf("%v booked, want 5", slotCount(m, SlotBooked))
	}
}

// TestRetrySlotWithConcurrency: with a concurrency budget too, the slot's
// reservation holds a concurrency slot, which the claim takes over with
// the rules, so Done settles and releases as for any grant.
func TestRetrySlotWithConcurrency(t *testing.T) {
	s, m := newSlotScheduler(t, Budget{RPM: 600, RPMBurst: 1, Concurrent: 2})
	first, err := take(s, "first", 1, 0, 0, "1")
	if err != nil {
		t.Fatal(err)
	}
	b := reject(t, s, "booked")
	b.ID = "b"
	time.Sleep(time.Until(b.RetrySlot))
	tk, err := take(s, "booked", 1, 0, 0, "b2")
	if err != nil || !tk.Claimed || len(tk.req.Rules) != 1 || len(tk.req.Leases) != 1 {
		t.Fatalf("claim: err %v claimed %v rules %d leases %d", err, tk.Claimed, len(tk.req.Rules), len(tk.req.Leases))
	}
	if got := s.inFlight.Load(); got != 2 {
		t.Fatalf("%d in flight, want 2", got)
	}
	s.Done(tk, -1)
	s.Done(first, -1)
	if got := s.inFlight.Load(); got != 0 || slotCount(m, SlotClaimed) != 1 {
		t.Fatalf("%d in flight after Done, %v claimed", got, slotCount(m, SlotClaimed))
	}
}

// TestRetrySlotAcrossReplicas: two replicas share a budget (one grant a
// second) and a book of slots in Redis. A user rejected on one is booked a slot there; the
// retry, which a load balancer sends to the other, claims it there (ahead
// of a newcomer waiting on that replica), once; the owner neither counts
// it expired nor gives its reservation back.
func TestRetrySlotAcrossReplicas(t *testing.T) {
	store := redisStore(t)
	replica := func(name string) (*Scheduler, *Metrics) {
		m := NewMetrics(prometheus.NewRegistry())
		s := New(Options{Name: "up", Budget: Budget{RPM: 60, RPMBurst: 1}, Store: store, Slots: store, Replica: name, Metrics: m})
		t.Cleanup(s.Close)
		return s, m
	}
	a, ma := replica("a")
	b, mb := replica("b")
	first, err := take(a, "first", 1, 0, 0, "1")
	if err != nil {
		t.Fatal(err)
	}
	a.Done(first, -1)
	booked := reject(t, a, "user")
	if booked.RetrySlot.IsZero() || slotCount(ma, SlotBooked) != 1 {
		t.Fatalf("slot %v, %v booked on a; want one", booked.RetrySlot, slotCount(ma, SlotBooked))
	}
	if again := reject(t, b, "user"); !again.RetrySlot.Equal(booked.RetrySlot) {
		t.Fatalf("rejected again on b: slot %v, want the one booked on a (%v)", again.RetrySlot, booked.RetrySlot)
	}
	retryBeatsNewcomer(t, b, mb, "user", booked.RetrySlot, 20*time.Millisecond)
	// Past the slot's tolerance, a sweeps it: nothing to expire.
	time.Sleep(time.Until(booked.RetrySlot.Add(tolerance(booked.ETA) + 50*time.Millisecond)))
	a.mu.Lock()
	a.sweep(time.Now())
	left := len(a.bookings)
	a.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // the book's answer to a's drop
	if left != 0 || slotCount(ma, SlotExpired) != 0 || slotCount(ma, SlotClaimed) != 0 {
		t.Fatalf("on a: %d slots left, %v expired, %v claimed; want 0, 0, 0", left, slotCount(ma, SlotExpired), slotCount(ma, SlotClaimed))
	}
}

// redisStore is a Redis store under a prefix of its own, or skips the
// test without SLUICE_TEST_REDIS_ADDR (scripts/test.sh sets it).
func redisStore(t *testing.T) *limit.Redis {
	t.Helper()
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if testing.Short() || addr == "" {
		t.Skip("needs Redis (SLUICE_TEST_REDIS_ADDR, set by scripts/test.sh); skipped with -short")
	}
	rc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rc.Close() })
	return limit.NewRedis(rc, limit.RedisOptions{Prefix: fmt.Sprintf("sluice-test:slots:%d:", time.Now().UnixNano())})
}
