package proxy

import (
	"sluice/policy"
	"sluice/policy/queue"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// exchange is the state of one request, kept on the handler's stack and
// copied into a relay when the answer is streamed.
type exchange struct {
	// idBuf holds Sluice's request id (also the answer's X-Request-Id
	// until an upstream's own replaces it); id is it as a string, made on
	// first use (requestID).
	idBuf   [reqIDLen]byte
	id      string
	start   time.Time
	ep      endpoint
	up      *upstream
	upStart time.Time
	// upFirst is when the upstream's answer began (headers received; the
	// whole body too unless it is relayed as a stream).
	upFirst time.Time
	// upEnd is when the upstream call ended: answer read, or failed.
	upEnd time.Time
	keyID string
	user  string
	// team and tier are the principal's, for transcripts; empty before
	// identity.
	team, tier string
	// modelAsked is the model the client named, before aliases.
	modelAsked string
	model      string
	status     int
	// queueWait is how long the request waited for its budgets or the
	// provider's capacity before it was forwarded.
	queueWait time.Duration
	// retries counts upstream calls repeated after a 429/5xx or failover.
	retries int
	// cacheStatus is "", "hit", "miss", "bypass" or "coalesced".
	cacheStatus string
	// usage is what the upstream's answer reported (metrics); zero for
	// answers from the cache.
	usage usage
	// adm is the request's admission, settled when the exchange finishes;
	// nil without limits.
	adm *policy.Admission
	// promptEst is the prompt's token estimate.
	promptEst int64
	// stripUsage reports that Sluice asked for the stream's usage chunk on
	// the client's behalf, so the relay removes it.
	stripUsage bool
	// claim is what the request asks of its upstream's queue; ticket is
	// its grant, ended by finish.
	claim  claim
	ticket *queue.Ticket
	// gone reports a client that hung up before the answer began.
	gone bool
	// route is the request's route (fallbacks included).
	route policy.Route
	// cache is the cache call a leading request stores its answer through;
	// nil otherwise (proxy/cache.go).
	cache *cacheCall
	// cacheFree reports an answer from the cache (hit or coalesced) whose
	// tokens the tier does not count: admitted and settled at 0 tokens.
	cacheFree bool
	// tr collects the transcript (transcript.go); nil when off.
	tr *txState
	// bodyUsage is the buffered answer's usage once scanned (bodyScanned),
	// so the cache, the transcript and the limits share one scan.
	bodyUsage   usage
	bodyScanned bool
	// line is the upstream connection an answer's body is still read from,
	// given back by releaseLine once that body is closed; nil otherwise.
	line *line
	// client is the client's socket, for checks that it is still there;
	// looked up once (clientSocket), nil when it has none to poll.
	client       syscall.RawConn
	clientLooked bool
	// project is the key's provider project (OpenAI-Project), "" for the
	// upstream's.
	project string
	// decoding is the content coding ("gzip", "br", …) the relay decodes a
	// streamed answer from: the upstream compressed it although asked for
	// identity (answerenc.go). "" for most answers.
	decoding string
}

// clientSocket is the client's socket, or nil when there is none to poll
// (an in-memory connection).
func (x *exchange) clientSocket(ctx *fasthttp.RequestCtx) syscall.RawConn {
	if !x.clientLooked {
		x.client, x.clientLooked = rawConn(ctx.Conn()), true
	}
	return x.client
}

// releaseLine gives the upstream connection of an answer whose body stream
// was closed back to its pool; reusable reports that the body was read to
// its end (otherwise the connection is closed).
func (x *exchange) releaseLine(reusable bool) {
	if x.line != nil {
		x.up.conns.put(x.line, reusable)
		x.line = nil
	}
}

// answerUsage returns the usage of the buffered answer body, scanning it
// once per exchange.
func (x *exchange) answerUsage(body []byte) usage {
	if !x.bodyScanned {
		x.bodyUsage, x.bodyScanned = findUsage(body), true
	}
	return x.bodyUsage
}

// requestID returns the exchange's request id as a string; the limiter and
// the transcript share one copy.
func (x *exchange) requestID() string {
	if x.id == "" {
		x.id = string(x.idBuf[:])
	}
	return x.id
}
