package proxy

import (
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// failure is an error answer decided before any byte of an answer went
// out: written as an HTTP error, or, for a stream whose 200 was already
// sent while it waited, as an SSE error event.
type failure struct {
	kind  errKind
	msg   string
	retry time.Duration // > 0: retry-after and retry-after-ms
	// position is the queue position to report (x-sluice-queue-position);
	// -1 for none.
	position int
	gone     bool // the client hung up: connection closed, nobody reads
	// slot is the retry slot booked for the client (x-sluice-retry-slot,
	// Unix ms; policy/queue/slots.go); zero for none. noRetry sends
	// x-should-retry: false (no slot within a minute).
	slot    time.Time
	noRetry bool
}

// write answers ctx with f.
func (f *failure) write(ctx *fasthttp.RequestCtx) {
	if f.gone || f.kind == errShuttingDown {
		ctx.SetConnectionClose()
	}
	if f.retry > 0 {
		setRetryAfter(&ctx.Response.Header, f.retry)
	}
	if !f.slot.IsZero() {
		var b [20]byte
		ctx.Response.Header.SetBytesV("X-Sluice-Retry-Slot", strconv.AppendInt(b[:0], f.slot.UnixMilli(), 10))
	}
	if f.noRetry {
		ctx.Response.Header.Set("X-Should-Retry", "false")
	}
	if f.position >= 0 {
		var b [20]byte
		ctx.Response.Header.SetBytesV("X-Sluice-Queue-Position", strconv.AppendInt(b[:0], int64(f.position), 10))
	}
	writeError(ctx, f.kind, "", f.msg)
}

// event writes f as one SSE event, `data: {"error":{...}}`, which the
// official SDKs raise as a stream error.
func (f *failure) event(w io.Writer) {
	b := append([]byte("data: "), appendError(nil, f.kind, "", f.msg)...)
	_, _ = w.Write(append(b, "\n\n"...))
}

// Error is f's message: a failure is an error.
func (f *failure) Error() string { return f.msg }

// status is the HTTP status of f, for metrics.
func (f *failure) status() int { return statusTable[f.kind].status }

var (
	failGone     = &failure{kind: errClientClosed, msg: "The client closed the request while it waited.", position: -1, gone: true}
	failDraining = &failure{kind: errShuttingDown, msg: "Sluice is shutting down; retry the request.", retry: time.Second, position: -1}
)
