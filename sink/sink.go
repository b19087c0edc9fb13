package sink

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Writer writes batches to one table. A Sink calls it from one goroutine.
type Writer interface {
	// Write stores recs; an error means none or only some were stored (a
	// replay may then store a row twice, which the shipped queries dedup).
	Write(ctx context.Context, recs []*Record) error
	// Close releases the writer's resources.
	Close() error
}

// Reader returns a user's recent transcripts, newest first.
type Reader interface {
	Recent(ctx context.Context, user string, since time.Time, limit int) ([]*Record, error)
}

// Options configure a Sink.
type Options struct {
	// Writer is the destination table. Required.
	Writer Writer
	// Spool keeps batches the writer could not take (down, slow, stopping)
	// and replays them in order. Nil: failed batches are retried until
	// MaxRetries, then dropped and counted.
	Spool *Spool
	// QueueSize bounds the records waiting to be batched; Enqueue drops (and
	// counts) beyond it. Default 65536.
	QueueSize int
	// QueueBytes bounds the bytes of the records waiting to be batched (as
	// Record sizes count them), so large transcripts cannot fill memory
	// before QueueSize does. Default 256 MiB.
	QueueBytes int64
	// BatchRows cuts a batch at this many rows. Default 20000.
	BatchRows int
	// BatchBytes cuts a batch at about this many bytes. Default 16 MiB.
	BatchBytes int
	// FlushInterval cuts a non-empty batch this long after its first row.
	// Default 1s.
	FlushInterval time.Duration
	// WriteTimeout bounds one batch write; a slower write goes to the spool.
	// Default 10s.
	WriteTimeout time.Duration
	// MaxContentBytes caps Request and Response (after redaction). Default
	// 65536; negative: no cap.
	MaxContentBytes int
	// Redactor scrubs records before they leave the process (to the writer
	// or the spool). Nil: no redaction.
	Redactor *Redactor
	// Registry receives the sluice_sink_* metrics; nil registers none.
	Registry prometheus.Registerer
	// Logger receives incidents. Default slog.Default().
	Logger *slog.Logger
	// MaxRetries is how often a batch is retried without a spool before it
	// is dropped. Default 3.
	MaxRetries int
}

// Defaults for Options.
const (
	DefaultQueueSize       = 65536
	DefaultQueueBytes      = 256 << 20
	DefaultBatchRows       = 20000
	DefaultBatchBytes      = 16 << 20
	DefaultFlushInterval   = time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultMaxContentBytes = 64 << 10
)

// backoff bounds between write attempts after a failure.
const (
	minBackoff = 250 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// Sink takes records without blocking and writes them in batches from
// background goroutines: a batcher (queue → batches, redaction) and a
// shipper (batches → writer, spool on failure, replay).
type Sink struct {
	opts Options
	m    *metrics
	log  *slog.Logger

	// mu guards closed and the close of in, so Enqueue never sends on a
	// closed channel.
	mu      sync.RWMutex
	closed  bool
	in      chan *Record
	batches chan []*Record
	// queued is the bytes of the records in in.
	queued atomic.Int64
	// writerDown is set from a failed write until the next one succeeds.
	writerDown atomic.Bool
	// pending maps the first record of each batch taken from the queue but
	// not yet written, spooled or dropped to its oldest record's time (Unix
	// nanoseconds), for sluice_sink_lag_seconds. At most a few batches.
	pendMu  sync.Mutex
	pending map[*Record]int64
	// base is the parent of every write; Stop cancels it at its deadline so
	// no write outlives Stop's context.
	base       context.Context
	cancelBase context.CancelFunc
	// stopCtx is the Stop deadline, set before in is closed.
	stopCtx   context.Context
	stopCtxMu sync.Mutex

	wg sync.WaitGroup
}

// New starts a Sink. Spooled batches from an earlier run are replayed as
// soon as the writer takes them.
func New(opts Options) (*Sink, error) {
	if opts.Writer == nil {
		return nil, errors.New("sink: Writer is required")
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	if opts.BatchRows <= 0 {
		opts.BatchRows = DefaultBatchRows
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = DefaultBatchBytes
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MaxContentBytes == 0 {
		opts.MaxContentBytes = DefaultMaxContentBytes
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Sink{opts: opts, log: opts.Logger,
		in:      make(chan *Record, opts.QueueSize),
		batches: make(chan []*Record, 1),
		pending: map[*Record]int64{},
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	s.m = newMetrics(opts.Registry, func() float64 { return float64(len(s.in)) }, func() float64 {
		if s.writerDown.Load() {
			return 0
		}
		return 1
	}, s.lagSeconds, s.queueFill)
	s.updateSpoolGauges()
	s.wg.Add(2)
	go s.batchLoop()
	go s.shipLoop()
	return s, nil
}

// Enqueue hands r to the sink without blocking; r must not be used by the
// caller afterwards. It reports false when r was dropped (queue full, or
// after Stop), which is counted.
func (s *Sink) Enqueue(r *Record) bool {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		s.m.dropped[DropStopped].Inc()
		return false
	}
	size := int64(r.size())
	if s.queued.Add(size) > s.opts.QueueBytes {
		s.queued.Add(-size)
		s.mu.RUnlock()
		s.m.dropped[DropQueueFull].Inc()
		return false
	}
	select {
	case s.in <- r:
		s.mu.RUnlock()
		s.m.enqueued.Inc()
		return true
	default:
		s.queued.Add(-size)
		s.mu.RUnlock()
		s.m.dropped[DropQueueFull].Inc()
		return false
	}
}

// Stop stops taking records, batches what is queued and writes it. Batches
// that cannot be written before ctx ends (or while the writer is failing)
// go to the spool. Stop closes the spool and the writer.
func (s *Sink) Stop(ctx context.Context) error {
	s.stopCtxMu.Lock()
	s.stopCtx = ctx
	s.stopCtxMu.Unlock()
	// A write in flight when the deadline passes is cancelled; its batch
	// goes to the spool.
	stopCancel := context.AfterFunc(ctx, s.cancelBase)
	defer stopCancel()
	defer s.cancelBase()
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.in)
	}
	s.mu.Unlock()
	s.wg.Wait()
	var err error
	if s.opts.Spool != nil {
		err = s.opts.Spool.Close()
		s.updateSpoolGauges()
	}
	return errors.Join(err, s.opts.Writer.Close())
}

// stopping returns the Stop context, or nil while running.
func (s *Sink) stopping() context.Context {
	s.stopCtxMu.Lock()
	defer s.stopCtxMu.Unlock()
	return s.stopCtx
}

// batchLoop cuts batches by rows, bytes and interval and hands them to the
// shipper; when the shipper is busy they go straight to the spool, so the
// queue keeps draining whatever the writer does.
func (s *Sink) batchLoop() {
	defer s.wg.Done()
	defer close(s.batches)
	y := newYielder()
	defer y.close()
	t := time.NewTicker(s.opts.FlushInterval / 4)
	defer t.Stop()
	var (
		batch []*Record
		bytes int
		first time.Time
		n     int // records taken
	)
	cut := func() {
		if len(batch) == 0 {
			return
		}
		s.hand(batch)
		batch, bytes = nil, 0
	}
	for {
		select {
		case r, ok := <-s.in:
			if !ok {
				cut()
				return
			}
			s.queued.Add(-int64(r.size()))
			s.prepare(r)
			n++
			y.every(n)
			if len(batch) == 0 {
				first = time.Now()
				batch = make([]*Record, 0, min(s.opts.BatchRows, 4096))
				s.batchStarted(r, first)
			}
			batch = append(batch, r)
			bytes += r.size()
			if len(batch) >= s.opts.BatchRows || bytes >= s.opts.BatchBytes {
				cut()
			}
		case now := <-t.C:
			if len(batch) > 0 && now.Sub(first) >= s.opts.FlushInterval {
				cut()
			}
		}
	}
}

// every gives way after every 64th record a loop handles (about 0.3 ms of
// work): a batch of records never blocks the sink's goroutines, and Go
// preempts a running goroutine only after 10 ms. With one P (a gateway
// pinned to one core) redacting and encoding 2,000 records held every other
// goroutine back for 5-21 ms (BenchmarkSinkStallOneP), and requests woken
// by the network longer (BenchmarkSinkStallOnePNet; see yielder).
func (y *yielder) every(n int) {
	if n&63 == 0 {
		y.yield()
	}
}

// prepare redacts and caps a record before it leaves the process.
func (s *Sink) prepare(r *Record) {
	s.opts.Redactor.Record(r)
	if s.opts.MaxContentBytes > 0 {
		r.Request = Truncate(r.Request, s.opts.MaxContentBytes)
		r.Response = Truncate(r.Response, s.opts.MaxContentBytes)
	}
}

// hand passes a batch to the shipper, or to the spool when the shipper is
// busy. Without a spool it waits for the shipper (the queue absorbs it).
func (s *Sink) hand(batch []*Record) {
	if s.opts.Spool == nil {
		s.batches <- batch
		return
	}
	select {
	case s.batches <- batch:
	default:
		s.spool(batch)
		s.batchDone(batch)
	}
}

// batchStarted notes a batch whose first record is r, taken from the queue
// at now: its age is counted from the record's end (when the proxy handed
// it over), or from now when it has none.
func (s *Sink) batchStarted(r *Record, now time.Time) {
	at := r.End
	if at.IsZero() || at.After(now) {
		at = now
	}
	s.pendMu.Lock()
	s.pending[r] = at.UnixNano()
	s.pendMu.Unlock()
}

// batchDone forgets a batch that was written, spooled or dropped.
func (s *Sink) batchDone(b []*Record) {
	if len(b) == 0 {
		return
	}
	s.pendMu.Lock()
	delete(s.pending, b[0])
	s.pendMu.Unlock()
}

// lagSeconds is the age of the oldest record taken from the queue and not
// yet written or spooled (0 when none waits): how far the transcripts lag
// behind the traffic. Records still in the queue are newer than those.
func (s *Sink) lagSeconds() float64 {
	s.pendMu.Lock()
	oldest := int64(0)
	for _, at := range s.pending {
		if oldest == 0 || at < oldest {
			oldest = at
		}
	}
	s.pendMu.Unlock()
	if oldest == 0 {
		return 0
	}
	return max(time.Since(time.Unix(0, oldest)).Seconds(), 0)
}

// queueFill is how full the in-memory queue is, 0 to 1: the larger of its
// records over queue_size and its bytes over queue_bytes. At 1 new records
// are dropped (queue_full).
func (s *Sink) queueFill() float64 {
	return max(float64(len(s.in))/float64(cap(s.in)), float64(s.queued.Load())/float64(s.opts.QueueBytes))
}

// spool appends a batch to the spool, counting what it costs.
func (s *Sink) spool(batch []*Record) {
	dropped, err := s.opts.Spool.Append(batch)
	if dropped > 0 {
		s.m.dropped[DropSpoolFull].Add(float64(dropped))
		s.log.Warn("transcript spool full: oldest segment dropped", "rows", dropped)
	}
	switch {
	case errors.Is(err, ErrBatchTooLarge):
		s.m.dropped[DropSpoolFull].Add(float64(len(batch)))
	case err != nil:
		s.m.dropped[DropSpoolError].Add(float64(len(batch)))
		s.log.Error("transcript spool write failed: batch dropped", "rows", len(batch), "error", err)
	default:
		s.m.spooled.Add(float64(len(batch)))
	}
	s.updateSpoolGauges()
}

func (s *Sink) updateSpoolGauges() {
	if s.opts.Spool == nil {
		return
	}
	b, n, _ := s.opts.Spool.Stats()
	s.m.spoolBytes.Set(float64(b))
	s.m.spoolSegs.Set(float64(n))
}

// shipLoop writes batches, spools what fails, and replays the spool while
// the writer is healthy and no fresh batch waits.
func (s *Sink) shipLoop() {
	defer s.wg.Done()
	var (
		retryAt time.Time
		backoff = minBackoff
	)
	fail := func() {
		s.writerDown.Store(true)
		retryAt = time.Now().Add(backoff)
		backoff = min(backoff*2, maxBackoff)
	}
	ok := func() {
		s.writerDown.Store(false)
		retryAt, backoff = time.Time{}, minBackoff
	}
	poll := time.NewTimer(time.Hour)
	defer poll.Stop()
	for {
		// Fresh batches first, without waiting.
		select {
		case b, open := <-s.batches:
			if !open {
				return
			}
			s.ship(b, &retryAt, fail, ok)
			continue
		default:
		}
		if s.opts.Spool != nil && s.stopping() == nil && !time.Now().Before(retryAt) {
			if _, _, rows := s.opts.Spool.Stats(); rows > 0 || s.spoolHasSegments() {
				s.replayOne(fail, ok)
				continue
			}
		}
		wait := time.Second
		if !retryAt.IsZero() {
			wait = max(time.Until(retryAt), time.Millisecond)
		}
		poll.Reset(wait)
		select {
		case b, open := <-s.batches:
			if !open {
				return
			}
			s.ship(b, &retryAt, fail, ok)
		case <-poll.C:
		}
	}
}

func (s *Sink) spoolHasSegments() bool {
	_, n, _ := s.opts.Spool.Stats()
	return n > 0
}

// ship writes one fresh batch, or spools it when the writer is failing,
// when the write fails, or (with no spool) retries then drops it.
func (s *Sink) ship(b []*Record, retryAt *time.Time, fail, ok func()) {
	defer s.batchDone(b)
	stop := s.stopping()
	if s.opts.Spool != nil && (time.Now().Before(*retryAt) || (stop != nil && stop.Err() != nil)) {
		s.spool(b)
		return
	}
	for attempt := 0; ; attempt++ {
		err := s.write(b)
		if err == nil {
			ok()
			return
		}
		fail()
		if s.opts.Spool != nil {
			s.spool(b)
			return
		}
		if attempt+1 >= s.opts.MaxRetries || (stop != nil && stop.Err() != nil) {
			s.m.dropped[DropWriteError].Add(float64(len(b)))
			s.log.Error("transcript batch dropped after retries", "rows", len(b), "error", err)
			return
		}
		time.Sleep(time.Until(*retryAt))
	}
}

// replayOne writes the spool's oldest batch and acknowledges it.
func (s *Sink) replayOne(fail, ok func()) {
	sp := s.opts.Spool
	recs, err := sp.Next()
	if n := sp.TakeCorrupt(); n > 0 {
		s.m.dropped[DropCorrupt].Add(float64(n))
		s.log.Error("transcript spool: corrupt frame, rest of its segment dropped", "rows", n)
	}
	if err != nil {
		s.log.Error("transcript spool read failed", "error", err)
		fail()
		return
	}
	if recs == nil {
		s.updateSpoolGauges()
		return
	}
	if err := s.write(recs); err != nil {
		fail()
		return
	}
	ok()
	sp.Ack()
	s.m.replayed.Add(float64(len(recs)))
	s.updateSpoolGauges()
}

// write sends one batch within the write timeout (and Stop's deadline).
func (s *Sink) write(b []*Record) error {
	ctx, cancel := context.WithTimeout(s.base, s.opts.WriteTimeout)
	defer cancel()
	start := time.Now()
	err := s.opts.Writer.Write(ctx, b)
	s.m.writeSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		s.m.writeErrors.Inc()
		s.log.Warn("transcript batch write failed", "rows", len(b), "error", err)
		return err
	}
	s.m.batches.Inc()
	s.m.batchRows.Observe(float64(len(b)))
	s.m.written.Add(float64(len(b)))
	return nil
}
