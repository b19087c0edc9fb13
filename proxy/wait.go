package proxy

import (
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/policy"
	"sluice/policy/queue"
)

// Waiting: a request over its user's budget waits for the slot its bucket
// reserved (policy.Admission.Wait); then it waits for its upstream's
// capacity in the upstream's fair queue (queue.Scheduler). Both waits end
// early when the client hangs up (the reservation is given back, no
// upstream call is made) or the server drains (503).

// waitCheck is how often a waiting request checks that its client is still
// connected (about half a microsecond per check).
const waitCheck = 50 * time.Millisecond

// waitEnd is why a wait ended.
type waitEnd uint8

const (
	waitDone     waitEnd = iota // the slot came, or the ticket is ready
	waitGone                    // the client hung up
	waitDraining                // the server is shutting down
)

// keepalive sends SSE comments to a stream client that waits in a queue,
// once every period (see serveQueuedStream).
type keepalive struct {
	w      io.Writer // each Write is one flushed chunk
	every  time.Duration
	next   time.Time
	status func() (position int, eta time.Duration)
}

// ping writes ": queued position=N eta=Xs" when one is due, and reports
// false when the client can no longer be written to.
func (k *keepalive) ping(now time.Time) bool {
	if k == nil || now.Before(k.next) {
		return true
	}
	k.next = now.Add(k.every)
	pos, eta := 0, time.Duration(0)
	if k.status != nil {
		pos, eta = k.status()
	}
	var b [64]byte
	line := append(b[:0], ": queued position="...)
	line = strconv.AppendInt(line, int64(pos), 10)
	line = append(line, " eta="...)
	line = strconv.AppendFloat(line, eta.Seconds(), 'f', 1, 64)
	line = append(line, "s\n\n"...)
	_, err := k.w.Write(line)
	return err == nil
}

// await blocks until ready is closed (or, when ready is nil, until d has
// passed), the client hangs up, or the server drains. With k it sends the
// client keep-alive comments meanwhile.
func (s *Server) await(ctx *fasthttp.RequestCtx, d time.Duration, ready <-chan struct{}, k *keepalive) waitEnd {
	raw := rawConn(ctx.Conn())
	var timeout <-chan time.Time
	if ready == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	tick := time.NewTicker(waitCheck)
	defer tick.Stop()
	for {
		select {
		case <-ready:
			return waitDone
		case <-timeout:
			return waitDone
		case <-s.drain:
			return waitDraining
		case now := <-tick.C:
			if (raw != nil && peerClosed(raw)) || !k.ping(now) {
				return waitGone
			}
		}
	}
}

// maxWait is how long the request may wait: its tier's max_wait, shortened
// (never lengthened) by X-Sluice-Max-Wait (seconds, or a Go duration such
// as "1500ms"). It answers 400 for an unreadable header.
func maxWait(ctx *fasthttp.RequestCtx, t *policy.Tier) (time.Duration, bool) {
	var limit time.Duration
	if t != nil {
		limit = t.Queue.MaxWait
	}
	h := ctx.Request.Header.Peek("X-Sluice-Max-Wait")
	if len(h) == 0 {
		return limit, true
	}
	d, ok := parseSeconds(h)
	if !ok {
		writeError(ctx, errInvalidRequest, "X-Sluice-Max-Wait", "X-Sluice-Max-Wait must be a number of seconds or a duration such as 1500ms.")
		return 0, false
	}
	return min(d, limit), true
}

// parseSeconds reads a header value in seconds ("2.5") or as a Go duration
// ("1500ms").
func parseSeconds(h []byte) (time.Duration, bool) {
	if f, err := strconv.ParseFloat(string(h), 64); err == nil && f >= 0 && f < 1e9 {
		return time.Duration(f * float64(time.Second)), true
	}
	if d, err := time.ParseDuration(string(h)); err == nil && d >= 0 {
		return d, true
	}
	return 0, false
}

// waitSlot waits for the future slot the user's buckets reserved. On a
// failure the reservation was given back.
func (s *Server) waitSlot(ctx *fasthttp.RequestCtx, x *exchange, k *keepalive) *failure {
	ad := x.adm
	s.qm.Waiting(queue.StageUser, x.tier, 1)
	s.m.userWaiting.Add(1)
	start := time.Now()
	if k != nil {
		k.status = func() (int, time.Duration) { return ad.Queued, time.Until(start.Add(ad.Wait)) }
	}
	end := s.await(ctx, ad.Wait, nil, k)
	s.qm.Waiting(queue.StageUser, x.tier, -1)
	s.m.userWaiting.Add(-1)
	s.limiter.WaitEnded(ad)
	x.queueWait += time.Since(start)
	var f *failure
	switch end {
	case waitDone:
		x.slotDone = true
		s.qm.Outcome(queue.StageUser, x.tier, "served")
		s.qm.Wait(queue.StageUser, x.tier, time.Since(start))
		return nil
	case waitGone:
		s.qm.Outcome(queue.StageUser, x.tier, "abandoned")
		x.gone = true
		f = failGone
	default:
		s.qm.Outcome(queue.StageUser, x.tier, "shutdown")
		f = failDraining
	}
	s.limiter.Cancel(ctx, ad)
	x.adm = nil
	return f
}

// claim is what a request asks of its upstream's queue.
type claim struct {
	flow     string // the user's bucket scope: the fairness unit
	weight   int64
	priority int
	tokens   int64
	deadline time.Time
}

// acquire waits for the capacity of x.up; on success x.ticket holds the
// grant. call uses it to queue again for a retry.
func (s *Server) acquire(ctx *fasthttp.RequestCtx, x *exchange, k *keepalive) *failure {
	t, f := s.enqueue(ctx, x)
	if t == nil {
		return f
	}
	x.pending = t
	return s.awaitTicket(ctx, x, k)
}

// enqueue asks the queue of x.up for capacity: granted at once (x.ticket
// set; nil, nil), queued (the ticket to wait for), or refused (the failure).
func (s *Server) enqueue(ctx *fasthttp.RequestCtx, x *exchange) (*queue.Ticket, *failure) {
	up := x.up
	t := queue.NewTicket()
	c := &x.claim
	t.Flow, t.Tier, t.Weight, t.Priority, t.Tokens, t.Deadline = c.flow, x.tier, c.weight, c.priority, c.tokens, c.deadline
	if up.sched.NeedsID() {
		t.ID = string(ctx.Response.Header.Peek("X-Request-Id"))
	}
	now, err := up.sched.Acquire(t)
	if now {
		x.ticket = t
		return nil, nil
	}
	if err != nil {
		f := rejectQueued(t, err)
		queue.Release(t)
		return nil, f
	}
	return t, nil
}

// awaitTicket waits for the queued ticket x.pending; on success x.ticket
// holds it.
func (s *Server) awaitTicket(ctx *fasthttp.RequestCtx, x *exchange, k *keepalive) *failure {
	t, sch := x.pending, x.up.sched
	x.pending = nil
	if k != nil {
		start := time.Now()
		k.status = func() (int, time.Duration) { return t.Position, max(t.ETA-time.Since(start), 0) }
	}
	end := s.await(ctx, 0, t.Ready(), k)
	switch end {
	case waitGone:
		sch.Cancel(t) // gives back the capacity when it was granted as the client left
		x.gone = true
		return failGone
	case waitDraining:
		sch.Cancel(t)
		return failDraining
	}
	x.queueWait += t.Waited
	if err := t.Err(); err != nil {
		if errors.Is(err, queue.ErrExpired) {
			sch.Book(t) // a slot for the retry, as for a rejection up front
		}
		return rejectQueued(t, err)
	}
	x.ticket = t
	return nil
}

// rejectQueued is the answer to a request the upstream's queue turned away.
func rejectQueued(t *queue.Ticket, err error) *failure {
	if errors.Is(err, queue.ErrClosed) {
		return failDraining
	}
	retry := t.ETA
	if retry <= 0 {
		retry = time.Second
	}
	f := &failure{kind: errProviderBusy, retry: retry, position: t.Position, slot: t.RetrySlot, noRetry: t.NoSlot}
	switch {
	case t.NoSlot:
		f.msg = "The provider is at capacity for more than a minute (its next free slot is in " + retry.Round(time.Second).String() +
			"). Please try again later."
	case !t.RetrySlot.IsZero():
		f.msg = "The provider is at capacity: a slot is held for your retry in " + retry.Round(time.Millisecond).String() +
			" (x-sluice-retry-slot). Please retry then."

	case errors.Is(err, queue.ErrQueueFull):
		f.msg = "The provider's queue is full. Please try again in " + retry.Round(time.Millisecond).String() + "."
	case errors.Is(err, queue.ErrExpired):
		f.msg = "The request waited its maximum wait for the provider's capacity. Please try again in " + retry.Round(time.Millisecond).String() + "."
	default:
		f.msg = "The provider is at capacity: the expected wait of " + retry.Round(time.Millisecond).String() +
			" (position " + strconv.Itoa(t.Position) + ") is longer than this request's maximum wait. Please try again later."
	}
	return f
}

// keepaliveEvery is the period of the keep-alive comments a stream request
// asks for while it waits, X-Sluice-Queue-Keepalive (seconds, or a duration
// such as "500ms"; at least 100 ms), or 0 when it asks for none.
func keepaliveEvery(ctx *fasthttp.RequestCtx) time.Duration {
	h := ctx.Request.Header.Peek("X-Sluice-Queue-Keepalive")
	if len(h) == 0 {
		return 0
	}
	d, ok := parseSeconds(h)
	if !ok || d <= 0 {
		return 0
	}
	return max(d, 100*time.Millisecond)
}
