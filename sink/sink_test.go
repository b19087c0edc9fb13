package sink

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"sluice/internal/testkit"
)

func TestBatchesCutByRows(t *testing.T) {
	w := &fakeWriter{}
	s := newTestSink(t, Options{Writer: w, BatchRows: 10, FlushInterval: time.Hour})
	for i := 0; i < 35; i++ {
		if !s.Enqueue(rec(i)) {
			t.Fatalf("enqueue %d dropped", i)
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := w.sizes(), []int{10, 10, 10, 5}; !reflect.DeepEqual(got, want) {
		t.Fatalf("batch sizes %v, want %v", got, want)
	}
	wantIDs(t, w.rows(), 35)
	if got := counter(s.m.enqueued); got != 35 {
		t.Fatalf("enqueued metric %v, want 35", got)
	}
	if got := counter(s.m.written); got != 35 {
		t.Fatalf("written metric %v, want 35", got)
	}
	if got := counter(s.m.batches); got != 4 {
		t.Fatalf("batches metric %v, want 4", got)
	}
}

func TestBatchesCutByBytes(t *testing.T) {
	w := &fakeWriter{}
	// Each record is a little over 1 KiB; 3 KiB cuts every 3 records.
	s := newTestSink(t, Options{Writer: w, BatchRows: 1000, BatchBytes: 3 << 10, FlushInterval: time.Hour})
	for i := 0; i < 9; i++ {
		r := rec(i)
		r.Response = strings.Repeat("x", 1<<10)
		s.Enqueue(r)
	}
	_ = s.Stop(context.Background())
	if got, want := w.sizes(), []int{3, 3, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("batch sizes %v, want %v", got, want)
	}
}

func TestBatchesCutByInterval(t *testing.T) {
	w := &fakeWriter{}
	s := newTestSink(t, Options{Writer: w, BatchRows: 1000, FlushInterval: 40 * time.Millisecond})
	for i := 0; i < 3; i++ {
		s.Enqueue(rec(i))
	}
	// Written by the interval, long before Stop.
	testkit.Eventually(t, 2*time.Second, "the interval flush", func() bool { return len(w.rows()) == 3 })
}

func TestEnqueueNeverBlocksAndCountsDrops(t *testing.T) {
	w := &fakeWriter{block: make(chan struct{})}
	s := newTestSink(t, Options{Writer: w, QueueSize: 8, BatchRows: 2, FlushInterval: time.Hour, WriteTimeout: time.Hour})
	start := time.Now()
	accepted := 0
	for i := 0; i < 1000; i++ {
		if s.Enqueue(rec(i)) {
			accepted++
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("1000 enqueues took %v with a stuck writer", d)
	}
	dropped := counter(s.m.dropped[DropQueueFull])
	if dropped == 0 || int(dropped)+accepted != 1000 {
		t.Fatalf("dropped %v + accepted %d != 1000", dropped, accepted)
	}
	close(w.block)
}

func TestEnqueueAfterStopIsCounted(t *testing.T) {
	w := &fakeWriter{}
	s := newTestSink(t, Options{Writer: w})
	_ = s.Stop(context.Background())
	if s.Enqueue(rec(1)) {
		t.Fatal("enqueue after Stop accepted")
	}
	if got := counter(s.m.dropped[DropStopped]); got != 1 {
		t.Fatalf("dropped{stopped} = %v, want 1", got)
	}
}

func TestRedactionAndCapBeforeWrite(t *testing.T) {
	w := &fakeWriter{}
	red, err := NewRedactor(DefaultRedactRules)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSink(t, Options{Writer: w, Redactor: red, MaxContentBytes: 40})
	r := rec(0)
	r.Request = `my key is sk-proj-abcdefghijklmnopqrstuv thanks`
	r.Response = strings.Repeat("é", 100)
	s.Enqueue(r)
	_ = s.Stop(context.Background())
	got := w.batches[0][0]
	if strings.Contains(got.Request, "sk-proj") || !strings.Contains(got.Request, "[REDACTED:api_key]") {
		t.Fatalf("request not redacted: %q", got.Request)
	}
	if !strings.HasPrefix(got.Response, strings.Repeat("é", 20)+TruncationMarker+"160 bytes]") {
		t.Fatalf("response not capped at a rune boundary with a marker: %q", got.Response)
	}
}

func TestFailedBatchesSpoolAndReplayInOrder(t *testing.T) {
	w := &fakeWriter{}
	down := true
	w.setFail(func() bool { return down })
	sp, err := OpenSpool(SpoolOptions{Dir: t.TempDir(), SegmentBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSink(t, Options{Writer: w, Spool: sp, BatchRows: 10, FlushInterval: 20 * time.Millisecond})
	for i := 0; i < 100; i++ {
		s.Enqueue(rec(i))
	}
	testkit.Eventually(t, 5*time.Second, "all rows spooled", func() bool { return counter(s.m.spooled) == 100 })
	if counter(s.m.writeErrors) == 0 {
		t.Fatal("no write error counted")
	}
	if counter(s.m.spoolBytes) == 0 || counter(s.m.spoolSegs) == 0 {
		t.Fatal("spool gauges are zero while the spool holds rows")
	}
	if s.writerDown.Load() != true {
		t.Fatal("sluice_sink_writer_up reads 1 while the writer fails")
	}
	w.setFail(func() bool { return false })
	testkit.Eventually(t, 10*time.Second, "the spool replayed", func() bool { return len(w.rows()) == 100 })
	testkit.Eventually(t, 5*time.Second, "sluice_sink_writer_up back to 1", func() bool { return !s.writerDown.Load() })
	wantIDs(t, w.rows(), 100)
	// The replay counts a batch once its write has returned, just after the
	// writer holds its rows.
	testkit.Eventually(t, 2*time.Second, "sluice_sink_replayed_total at 100", func() bool { return counter(s.m.replayed) == 100 })
	testkit.Eventually(t, 2*time.Second, "the spool gauges at zero", func() bool {
		return counter(s.m.spoolBytes) == 0 && counter(s.m.spoolSegs) == 0
	})
}

func TestStopSpoolsWhenDownAndNextStartReplays(t *testing.T) {
	dir := t.TempDir()
	w := &fakeWriter{}
	w.setFail(func() bool { return true })
	sp, err := OpenSpool(SpoolOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSink(t, Options{Writer: w, Spool: sp, BatchRows: 7, FlushInterval: time.Hour, WriteTimeout: 50 * time.Millisecond})
	for i := 0; i < 50; i++ {
		s.Enqueue(rec(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Stop took %v, past its deadline", d)
	}
	if got := counter(s.m.spooled); got != 50 {
		t.Fatalf("spooled %v rows at stop, want 50", got)
	}

	// The next process: ClickHouse is back.
	w2 := &fakeWriter{}
	sp2, err := OpenSpool(SpoolOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, rows := sp2.Stats(); rows != 50 {
		t.Fatalf("reopened spool counts %d rows, want 50", rows)
	}
	s2 := newTestSink(t, Options{Writer: w2, Spool: sp2})
	testkit.Eventually(t, 5*time.Second, "replay at start", func() bool { return len(w2.rows()) == 50 })
	wantIDs(t, w2.rows(), 50)
	_ = s2.Stop(context.Background())
	if _, n, _ := sp2.Stats(); n != 0 {
		t.Fatalf("%d segments left after replay", n)
	}
}

func TestSlowWriterSpoolsInsteadOfBackingUp(t *testing.T) {
	// A frozen destination: writes hang until their timeout. The queue must
	// keep draining (to the spool), so nothing is dropped.
	w := &fakeWriter{block: make(chan struct{})}
	sp, err := OpenSpool(SpoolOptions{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	// 2 records per ms for about a second; a batcher that waited for the
	// writer would hold 300 ms x 2/ms = 600 records, more than the queue.
	s := newTestSink(t, Options{Writer: w, Spool: sp, QueueSize: 256, BatchRows: 16, FlushInterval: 10 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond})
	for i := 0; i < 2000; i++ {
		if !s.Enqueue(rec(i)) {
			t.Fatalf("record %d dropped: the queue backed up behind a slow writer", i)
		}
		if i%2 == 1 {
			time.Sleep(time.Millisecond)
		}
	}
	close(w.block) // thawed
	testkit.Eventually(t, 15*time.Second, "every row written", func() bool { return len(w.rows()) == 2000 })
	wantIDs(t, w.rows(), 2000)
}

func TestNoSpoolRetriesThenDropsAndCounts(t *testing.T) {
	w := &fakeWriter{}
	w.setFail(func() bool { return true })
	s := newTestSink(t, Options{Writer: w, BatchRows: 5, MaxRetries: 2})
	for i := 0; i < 5; i++ {
		s.Enqueue(rec(i))
	}
	testkit.Eventually(t, 5*time.Second, "the drop", func() bool { return counter(s.m.dropped[DropWriteError]) == 5 })
	if w.calls != 2 {
		t.Fatalf("writer called %d times, want 2", w.calls)
	}
}

func TestQueueBytesBound(t *testing.T) {
	w := &fakeWriter{block: make(chan struct{})}
	s := newTestSink(t, Options{Writer: w, QueueSize: 1000, QueueBytes: 10 << 10, BatchRows: 1, FlushInterval: time.Hour, WriteTimeout: time.Hour})
	big := func(i int) *Record {
		r := rec(i)
		r.Request = strings.Repeat("x", 2<<10)
		return r
	}
	accepted := 0
	for i := 0; i < 50; i++ {
		if s.Enqueue(big(i)) {
			accepted++
		}
	}
	// A stuck writer holds one batch and the hand-off one more; the queue
	// itself holds at most 10 KiB of 2.3 KiB records.
	if accepted > 8 || counter(s.m.dropped[DropQueueFull]) == 0 {
		t.Fatalf("accepted %d records of 2 KiB with a 10 KiB queue", accepted)
	}
	close(w.block)
}

func TestStopCancelsAWriteInFlightAtItsDeadline(t *testing.T) {
	w := &fakeWriter{block: make(chan struct{})} // a frozen destination
	sp, err := OpenSpool(SpoolOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestSink(t, Options{Writer: w, Spool: sp, BatchRows: 5, WriteTimeout: time.Hour})
	for i := 0; i < 5; i++ {
		s.Enqueue(rec(i))
	}
	testkit.Eventually(t, 2*time.Second, "the write to start", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.calls > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = s.Stop(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Stop took %v with a 200ms deadline", d)
	}
	if got := counter(s.m.spooled); got != 5 {
		t.Fatalf("spooled %v rows, want the 5 of the cancelled write", got)
	}
}
