package sink

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"sluice/internal/testkit"
)

func batchOf(from, n int) []*Record {
	out := make([]*Record, n)
	for i := range out {
		out[i] = rec(from + i)
	}
	return out
}

// drain replays the whole spool, acknowledging each batch.
func drain(t *testing.T, sp *Spool) []string {
	t.Helper()
	var ids []string
	for {
		recs, err := sp.Next()
		if err != nil {
			t.Fatal(err)
		}
		if recs == nil {
			return ids
		}
		for _, r := range recs {
			ids = append(ids, r.RequestID)
		}
		sp.Ack()
	}
}

func TestSpoolFIFOAcrossSegmentsAndReopen(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(SpoolOptions{Dir: dir, SegmentBytes: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 10; b++ {
		if _, err := sp.Append(batchOf(b*10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	_, segs, rows := sp.Stats()
	if segs < 3 || rows != 100 {
		t.Fatalf("stats: %d segments, %d rows; want several segments and 100 rows", segs, rows)
	}
	_ = sp.Close()
	sp, err = OpenSpool(SpoolOptions{Dir: dir, SegmentBytes: 2 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ids := drain(t, sp)
	wantIDs(t, ids, 100)
	for i := 1; i < len(ids); i++ {
		if ids[i] < ids[i-1] {
			t.Fatalf("out of order at %d: %s after %s", i, ids[i], ids[i-1])
		}
	}
	if b, n, _ := sp.Stats(); b != 0 || n != 0 {
		t.Fatalf("after replay: %d bytes in %d segments", b, n)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.spool")); len(left) != 0 {
		t.Fatalf("segment files left: %v", left)
	}
}

func TestSpoolUnackedBatchIsReplayedAgain(t *testing.T) {
	sp, err := OpenSpool(SpoolOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sp.Append(batchOf(0, 3))
	first, _ := sp.Next()
	again, _ := sp.Next() // no Ack: the write failed
	if len(first) != 3 || len(again) != 3 || again[0].RequestID != first[0].RequestID {
		t.Fatalf("unacknowledged batch not returned again: %v then %v", first, again)
	}
}

func TestSpoolCorruptFrameDropsRestOfSegmentAndCounts(t *testing.T) {
	dir := t.TempDir()
	sp, err := OpenSpool(SpoolOptions{Dir: dir, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 3; b++ {
		_, _ = sp.Append(batchOf(b*10, 10))
	}
	_ = sp.Close()
	seg := filepath.Join(dir, "seg-00000000000000000001.spool")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// Flip one byte in the second frame's payload.
	frame1 := frameHeader + int(uint32(data[0])|uint32(data[1])<<8|uint32(data[2])<<16|uint32(data[3])<<24)
	data[frame1+frameHeader+5] ^= 0xff
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err = OpenSpool(SpoolOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = sp.Append(batchOf(100, 5)) // a later, healthy segment
	ids := drain(t, sp)
	if len(ids) != 15 || ids[0] != "r000000" || ids[10] != "r000100" {
		t.Fatalf("replayed %v; want the first frame and the later segment", ids)
	}
	if got := sp.TakeCorrupt(); got != 20 {
		t.Fatalf("corrupt rows %d, want 20 (frames 2 and 3)", got)
	}
}

func TestSpoolTornTailIsCorruptNotFatal(t *testing.T) {
	dir := t.TempDir()
	sp, _ := OpenSpool(SpoolOptions{Dir: dir})
	_, _ = sp.Append(batchOf(0, 4))
	_, _ = sp.Append(batchOf(4, 4))
	_ = sp.Close()
	seg := filepath.Join(dir, "seg-00000000000000000001.spool")
	st, _ := os.Stat(seg)
	if err := os.Truncate(seg, st.Size()-7); err != nil { // a crash mid-write
		t.Fatal(err)
	}
	sp, err := OpenSpool(SpoolOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ids := drain(t, sp)
	if len(ids) != 4 {
		t.Fatalf("replayed %d rows from a torn segment, want the 4 intact ones", len(ids))
	}
	if sp.TakeCorrupt() == 0 {
		t.Fatal("torn tail not counted")
	}
}

func TestSpoolFullDropsOldestSegmentAndCounts(t *testing.T) {
	dir := t.TempDir()
	one, _ := encodeFrame(batchOf(0, 10))
	frame := int64(len(one))
	// Room for about 5 frames, one frame per segment.
	sp, err := OpenSpool(SpoolOptions{Dir: dir, MaxBytes: 5*frame + frame/2, SegmentBytes: frame})
	if err != nil {
		t.Fatal(err)
	}
	var dropped int64
	for b := 0; b < 8; b++ {
		n, err := sp.Append(batchOf(b*10, 10))
		if err != nil {
			t.Fatal(err)
		}
		dropped += n
	}
	if dropped != 30 {
		t.Fatalf("dropped %d rows, want 30 (the 3 oldest batches)", dropped)
	}
	bytes, _, rows := sp.Stats()
	if bytes > 5*frame+frame/2 || rows != 50 {
		t.Fatalf("spool holds %d bytes and %d rows; want within the bound and 50 rows", bytes, rows)
	}
	ids := drain(t, sp)
	if len(ids) != 50 || ids[0] != "r000030" {
		t.Fatalf("replay starts at %v; the oldest batches should be gone", ids[:1])
	}
	if _, err := sp.Append(batchOf(0, 1000)); err != ErrBatchTooLarge {
		t.Fatalf("a batch larger than the spool: %v, want ErrBatchTooLarge", err)
	}
}

func TestSinkCountsSpoolFullDrops(t *testing.T) {
	w := &fakeWriter{}
	w.setFail(func() bool { return true })
	one, _ := encodeFrame(batchOf(0, 5))
	sp, _ := OpenSpool(SpoolOptions{Dir: t.TempDir(), MaxBytes: int64(len(one)) * 3, SegmentBytes: 1})
	s := newTestSink(t, Options{Writer: w, Spool: sp, BatchRows: 5})
	for i := 0; i < 50; i++ {
		s.Enqueue(rec(i))
	}
	testkit.Eventually(t, 5*time.Second, "drops counted", func() bool {
		return counter(s.m.dropped[DropSpoolFull])+counter(s.m.spooled) >= 50 && counter(s.m.dropped[DropSpoolFull]) > 0
	})
}
