package proxy

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/config"
	"sluice/policy"
	"sluice/policy/limit"
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

// await blocks until ready is closed (or, when ready is nil, until d has
// passed), the client hangs up, or the server drains.
func (s *Server) await(ctx *fasthttp.RequestCtx, d time.Duration, ready <-chan struct{}) waitEnd {
	var raw syscall.RawConn
	if sc, ok := ctx.Conn().(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	} else if nc, ok := ctx.Conn().(interface{ NetConn() net.Conn }); ok {
		if sc, ok := nc.NetConn().(syscall.Conn); ok {
			raw, _ = sc.SyscallConn()
		}
	}
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
		case <-tick.C:
			if raw != nil && peerClosed(raw) {
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
	var d time.Duration
	if f, err := strconv.ParseFloat(string(h), 64); err == nil && f >= 0 && f < 1e9 {
		d = time.Duration(f * float64(time.Second))
	} else if pd, err := time.ParseDuration(string(h)); err == nil && pd >= 0 {
		d = pd
	} else {
		writeError(ctx, errInvalidRequest, "X-Sluice-Max-Wait", "X-Sluice-Max-Wait must be a number of seconds or a duration such as 1500ms.")
		return 0, false
	}
	return min(d, limit), true
}

// waitSlot waits for the future slot the user's buckets reserved. On false
// the answer is written and the reservation given back.
func (s *Server) waitSlot(ctx *fasthttp.RequestCtx, x *exchange) bool {
	ad := x.adm
	s.qm.Waiting(queue.StageUser, x.tier, 1)
	start := time.Now()
	end := s.await(ctx, ad.Wait, nil)
	s.qm.Waiting(queue.StageUser, x.tier, -1)
	s.limiter.WaitEnded(ad)
	x.queueWait += time.Since(start)
	switch end {
	case waitDone:
		s.qm.Outcome(queue.StageUser, x.tier, "served")
		s.qm.Wait(queue.StageUser, x.tier, time.Since(start))
		return true
	case waitGone:
		s.qm.Outcome(queue.StageUser, x.tier, "abandoned")
		x.gone = true
		ctx.SetConnectionClose()
		writeError(ctx, errClientClosed, "", "The client closed the request while it waited.")
	default:
		s.qm.Outcome(queue.StageUser, x.tier, "shutdown")
		writeDraining(ctx)
	}
	s.limiter.Cancel(ctx, ad)
	x.adm = nil
	return false
}

// writeDraining answers a request the server will not serve because it is
// shutting down: 503 with a one-second retry hint.
func writeDraining(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	ctx.Response.Header.Set("Retry-After", "1")
	ctx.Response.Header.Set("Retry-After-Ms", "1000")
	writeError(ctx, errShuttingDown, "", "Sluice is shutting down; retry the request.")
}

// claim is what a request asks of its upstream's queue.
type claim struct {
	flow     string // the user's bucket scope: the fairness unit
	weight   int64
	priority int
	tokens   int64
	deadline time.Time
}

// acquire waits for the upstream's capacity. On false the answer is written.
func (s *Server) acquire(ctx *fasthttp.RequestCtx, x *exchange, up *upstream) bool {
	sch := up.sched
	t := queue.NewTicket()
	c := &x.claim
	t.Flow, t.Tier, t.Weight, t.Priority, t.Tokens, t.Deadline = c.flow, x.tier, c.weight, c.priority, c.tokens, c.deadline
	t.ID = string(ctx.Response.Header.Peek("X-Request-Id"))
	now, err := sch.Acquire(t)
	if now {
		x.ticket = t
		return true
	}
	if err != nil {
		s.rejectQueued(ctx, x, t, err)
		queue.Release(t)
		return false
	}
	end := s.await(ctx, 0, t.Ready())
	x.queueWait += t.Waited
	switch end {
	case waitGone:
		if !sch.Cancel(t) {
			// Granted as the client left: Cancel gave the capacity back.
		}
		x.gone = true
		ctx.SetConnectionClose()
		writeError(ctx, errClientClosed, "", "The client closed the request while it waited.")
		return false
	case waitDraining:
		sch.Cancel(t)
		writeDraining(ctx)
		return false
	}
	if err := t.Err(); err != nil {
		s.rejectQueued(ctx, x, t, err)
		return false
	}
	x.ticket = t
	return true
}

// rejectQueued answers a request the upstream's queue turned away.
func (s *Server) rejectQueued(ctx *fasthttp.RequestCtx, x *exchange, t *queue.Ticket, err error) {
	if errors.Is(err, queue.ErrClosed) {
		writeDraining(ctx)
		return
	}
	retry := t.ETA
	if errors.Is(err, queue.ErrExpired) || retry <= 0 {
		retry = time.Second
	}
	var b [20]byte
	ms := (retry + time.Millisecond - 1) / time.Millisecond
	secs := (retry + time.Second - 1) / time.Second
	ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(b[:0], int64(secs), 10))
	ctx.Response.Header.SetBytesV("Retry-After-Ms", strconv.AppendInt(b[:0], int64(ms), 10))
	ctx.Response.Header.SetBytesV("X-Sluice-Queue-Position", strconv.AppendInt(b[:0], int64(t.Position), 10))
	var msg string
	switch {
	case errors.Is(err, queue.ErrQueueFull):
		msg = "The provider's queue is full. Please try again in " + retry.Round(time.Millisecond).String() + "."
	case errors.Is(err, queue.ErrExpired):
		msg = "The request waited its maximum wait for the provider's capacity. Please try again in " + retry.Round(time.Millisecond).String() + "."
	default:
		msg = "The provider is at capacity: the expected wait of " + retry.Round(time.Millisecond).String() +
			" (position " + strconv.Itoa(t.Position) + ") is longer than this request's maximum wait. Please try again later."
	}
	writeError(ctx, errProviderBusy, "", msg)
}

// upstreamRetryAfter is how long an upstream's 429/503 asks to wait:
// retry-after-ms, else retry-after (seconds), else the sooner of
// x-ratelimit-reset-requests / -tokens (durations such as "1s", "6m0s"),
// else 0 (unknown).
func upstreamRetryAfter(h *fasthttp.ResponseHeader) time.Duration {
	if v := h.Peek("Retry-After-Ms"); len(v) > 0 {
		if ms, err := strconv.ParseFloat(string(v), 64); err == nil && ms >= 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v := h.Peek("Retry-After"); len(v) > 0 {
		if s, err := strconv.ParseFloat(string(v), 64); err == nil && s >= 0 {
			return time.Duration(s * float64(time.Second))
		}
		if t, err := time.Parse(time.RFC1123, string(v)); err == nil {
			return max(time.Until(t), 0)
		}
	}
	var best time.Duration
	for _, name := range []string{"X-Ratelimit-Reset-Requests", "X-Ratelimit-Reset-Tokens"} {
		if v := h.Peek(name); len(v) > 0 {
			if d, err := time.ParseDuration(string(bytes.TrimSpace(v))); err == nil && d > 0 && (best == 0 || d < best) {
				best = d
			}
		}
	}
	return best
}

// newBreaker builds an upstream's circuit breaker; its state changes are
// logged and exported.
func (s *Server) newBreaker(c *config.Upstream) *queue.Breaker {
	b := c.Breaker
	name := c.Name
	s.qm.Breaker(name, queue.BreakerClosed)
	return queue.NewBreaker(queue.BreakerOptions{Ratio: b.FailureRatio, MinCalls: b.MinCalls, Window: b.Window, Cooldown: b.Cooldown},
		func(state int) {
			s.qm.Breaker(name, state)
			switch state {
			case queue.BreakerOpen:
				s.log.Error("upstream breaker open: calls stop for the cooldown", "upstream", name)
			case queue.BreakerClosed:
				s.log.Info("upstream breaker closed: the upstream answers again", "upstream", name)
			}
		})
}

// newScheduler builds an upstream's fair queue from its configuration.
func newScheduler(c *config.Upstream, o *Options) *queue.Scheduler {
	budget := func(b config.Budget) queue.Budget {
		return queue.Budget{RPM: b.RPM, RPMBurst: b.RPMBurst, TPM: b.TPM, TPMBurst: b.TPMBurst, Concurrent: b.Concurrent}
	}
	keys := []queue.Key{{ID: "default", Weight: 1}}
	if len(c.Keys) > 0 {
		keys = keys[:0]
		for _, k := range c.Keys {
			keys = append(keys, queue.Key{ID: k.ID, Weight: k.Weight, Budget: budget(k.Budget)})
		}
	}
	store := o.BudgetStore
	if store == nil {
		store = limit.NewMemory(limit.MemoryOptions{})
	}
	return queue.New(queue.Options{
		Name: c.Name, Budget: budget(c.Budget), Keys: keys,
		Store: store, Fallback: o.BudgetFallback, Replicas: o.Replicas,
		LeaseTTL: o.Config.Limits.LeaseTTL, MaxQueue: c.MaxQueue,
		Metrics: o.QueueMetrics, Logger: o.Logger,
	})
}
