package limit

import (
	"context"
	"testing"
	"time"
)

// TestRedisSlotBook: slots are booked one span apart after the last one
// (or at earliest), refused past latest, one per flow (a second booking
// returns the first), claimed once whichever replica asks and only in the
// window, marked reserved only while still booked, and dropped only when
// unclaimed.
func TestRedisSlotBook(t *testing.T) {
	c := newRedisClient(t)
	s := newRedisStore(t, c)
	ctx := context.Background()
	now := time.Now().UnixMicro()
	const span, tol = 100_000, 1_000_000 // 100 ms a grant; 1 s least tolerance
	book := "up:{openai}"
	a, out, err := s.BookSlot(ctx, book, "{t}u:alice", now+500_000, span, now+60_000_000, tol, now, "r1")
	if err != nil || out != SlotNew || a.At != now+500_000 || a.Until != a.At+tol || a.Owner != "r1" || a.Reserved {
		t.Fatalf("first slot %+v outcome %d err %v", a, out, err)
	}
	b, out, err := s.BookSlot(ctx, book, "{t}u:bob", now+100_000, span, now+60_000_000, tol, now, "r2")
	if err != nil || out != SlotNew || b.At != a.At+span {
		t.Fatalf("second slot %+v outcome %d err %v; want one span after the first", b, out, err)
	}
	if again, out, _ := s.BookSlot(ctx, book, "{t}u:alice", now, span, now+60_000_000, tol, now, "r2"); out != SlotExisting || again != a {
		t.Fatalf("alice again: %+v outcome %d; want her first slot", again, out)
	}
	if late, out, _ := s.BookSlot(ctx, book, "{t}u:carol", now, span, b.At, tol, now, "r1"); out != SlotTooLate || late.At != b.At+span {
		t.Fatalf("past latest: %+v outcome %d; want too late at %d", late, out, b.At+span)
	}
	// Too early to claim; then in the window, once.
	if _, ok, _ := s.ClaimSlot(ctx, book, "{t}u:alice", a.At-200_000, 100_000); ok {
		t.Fatal("claimed 200 ms before the slot with 100 ms allowed")
	}
	if ok, _ := s.MarkSlot(ctx, book, "{t}u:alice", a.At, 2, 300); !ok {
		t.Fatal("the owner could not mark its reservation")
	}
	got, ok, err := s.ClaimSlot(ctx, book, "{t}u:alice", a.At+10_000, 100_000)
	if err != nil || !ok || !got.Reserved || got.Key != 2 || got.Tokens != 300 || got.At != a.At {
		t.Fatalf("claim: %+v ok %v err %v", got, ok, err)
	}
	if _, ok, _ := s.ClaimSlot(ctx, book, "{t}u:alice", a.At+10_000, 100_000); ok {
		t.Fatal("claimed twice")
	}
	if ok, _ := s.DropSlot(ctx, book, "{t}u:alice", a.At); ok {
		t.Fatal("dropped a claimed slot")
	}
	if ok, _ := s.MarkSlot(ctx, book, "{t}u:alice", a.At, 0, 1); ok {
		t.Fatal("marked a claimed slot")
	}
	// Past its window, bob's slot is not claimable; its owner drops it.
	if _, ok, _ := s.ClaimSlot(ctx, book, "{t}u:bob", b.Until+1, 100_000); ok {
		t.Fatal("claimed after the window")
	}
	if ok, _ := s.DropSlot(ctx, book, "{t}u:bob", b.At); !ok {
		t.Fatal("could not drop an unclaimed slot")
	}
}
