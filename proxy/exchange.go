package proxy

import (
	"net/netip"
	"sluice/policy"
	"sluice/policy/queue"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// exchange is the state of one request, kept on the handler's stack and
// copied into the body stream (relay, tee, queued stream) that finishes a
// streamed answer. Its fields are grouped by the step that writes them;
// later steps only read them.
type exchange struct {
	// handle: the request's id, start and endpoint. idBuf holds Sluice's
	// request id (also the answer's X-Request-Id until an upstream's own
	// replaces it); id is it as a string, made on first use (requestID).
	idBuf [reqIDLen]byte
	id    string
	start time.Time
	ep    endpoint
	// tr collects the transcript (transcript.go); nil when off.
	tr *txState

	// identify: the key, its provider project (OpenAI-Project, "" for the
	// upstream's), and the principal (principal refines user and tier for
	// an end user). team and tier are for transcripts and metrics.
	keyID      string
	project    string
	user       string
	team, tier string
	showCost   bool

	// owned: the exchange's part in owned mode (owners.go): the owner, and
	// what its answer is read for (ids to record, a list to filter).
	own ownCall

	// read: the body to send (rewritten by route, cacheStart and admit when
	// they change it) and the client's stream flag (on endpoints that
	// stream).
	body   []byte
	stream bool

	// route: the model the client named (before aliases), the model it
	// resolved to, the route (with fallbacks) and the deployment of its
	// primary upstream; pick and call change deployment with the upstream.
	modelAsked string
	model      string
	route      policy.Route
	deployment string
	// route: the model's price (priced false: the table has none).
	price  policy.Price
	priced bool

	// claimFor and admit: what the request asks of its upstream's queue,
	// the admission of the user's buckets (settled by finish; nil without
	// limits), the prompt's token estimate, and stripUsage: Sluice asked
	// for the stream's usage chunk on the client's behalf, so the relay
	// removes it.
	claim      claim
	adm        *policy.Admission
	promptEst  int64
	stripUsage bool

	// cacheStart: the cache call a leading request stores its answer through
	// (nil otherwise), the cache status ("", "hit", "miss", "bypass",
	// "coalesced"; cacheServe may turn a follower into a miss), and
	// cacheFree: an answer from the cache whose tokens the tier does not
	// count (admitted and settled at 0 tokens).
	cache       *cacheCall
	cacheStatus string
	cacheFree   bool

	// reach: slotDone once the user's reserved slot came (waitSlot); up the
	// upstream picked (call changes it on failover); pending its queue's
	// ticket while the request waits, ticket the grant (ended by finish);
	// queueWait how long the request waited for its budgets and the
	// provider's capacity before it was forwarded.
	slotDone  bool
	up        *upstream
	pending   *queue.Ticket
	ticket    *queue.Ticket
	queueWait time.Duration

	// call: the upstream call's times (upFirst: its answer began, headers
	// received, or the whole body unless it is relayed; upEnd: the answer
	// was read, or the call failed), retries (calls repeated after a
	// 429/5xx or failover), line (the connection a streamed answer's body
	// is still read from, given back by releaseLine) and decoding (the
	// content coding the relay decodes a streamed answer from when the
	// upstream compressed it although asked for identity; answerenc.go).
	upStart, upFirst, upEnd time.Time
	retries                 int
	line                    *line
	decoding                string

	// the client: gone reports a client that hung up before the answer
	// began (set by the waits, the call and handle); client is its socket
	// for those checks, looked up once (clientSocket), nil when it has none
	// to poll.
	gone         bool
	client       syscall.RawConn
	clientLooked bool

	// the answer: its status, and usage: what the upstream reported
	// (metrics; zero for answers from the cache). bodyUsage is a buffered
	// answer's usage once scanned (bodyScanned), so the cache, the
	// transcript and the limits share one scan.
	status int
	usage  usage
	// cutUsage estimates what a stream the upstream cut before its usage
	// chunk used (the prompt's estimate, the relayed text's): for its cost
	// only, never for the token metrics.
	cutUsage    usage
	bodyUsage   usage
	bodyScanned bool
	// cost is the answer's cost in USD at the policy's prices, once known
	// (costed): 0 for cache hits, errors and unpriced models.
	cost   float64
	costed bool

	// the access log (server.access_log only): the method and the client's
	// address, taken at arrival; bytesOut is the answer's bytes as sent;
	// limit and limitScope say which limit a 429 of admission hit.
	method            string
	peer              netip.AddrPort
	bytesOut          int64
	limit, limitScope string
}

// answerCost sets x.cost from x.usage, once: what the provider bills for
// the answer it sent (a hit or a coalesced answer cost nothing).
func (x *exchange) answerCost() float64 {
	if !x.costed {
		x.costed = true
		u := x.usage
		if !u.ok {
			u = x.cutUsage
		}
		if u.ok && x.priced && x.cacheStatus != cacheHit && x.cacheStatus != cacheCoalesced {
			x.cost = x.price.Cost(policy.Usage{Prompt: u.prompt, CachedPrompt: u.cached, Completion: u.completion})
		}
	}
	return x.cost
}

// slotAhead reports a request whose user's slot is still in the future.
func (x *exchange) slotAhead() bool { return x.adm != nil && x.adm.Wait > 0 && !x.slotDone }

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
