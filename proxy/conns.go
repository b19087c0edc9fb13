package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// An upstream's connections are lines. A line holds at most one connection,
// and a call holds its line from sending the request until the answer's
// body is read or closed. fasthttp writes the request and parses the
// answer; the line decides which connection they go over. Since a call
// knows its connection, it can:
//   - look at a pooled connection before reusing it, and dial instead when
//     it is older than idle_conn_timeout or the upstream closed it (Node's
//     http server and uvicorn close idle connections after 5 s);
//   - send a request again on a new connection when its reused connection
//     ended before any byte of the answer, and only then;
//   - close the connection when its client leaves, which is the only way to
//     stop an HTTP/1.1 call before the upstream answers.
//
// fasthttp's HostClient hands out pooled connections anonymously and
// retries on its own, so none of the three can be done through it.

// lines is an upstream's pool of lines, at most max of them, at most
// perFlow of them held by one user at a time.
type lines struct {
	mu sync.Mutex
	// idle are the free lines, the most recently used last: after a burst,
	// the lines least used sit idle long enough to be closed.
	idle []*line
	// all are the lines made so far, for the connection gauge.
	all []*line
	// held counts the lines each user (its bucket scope, the queue's flow)
	// holds; a user at perFlow waits for one of its own to come back.
	held map[string]int
	// waiters are the calls waiting for a line, oldest first.
	waiters []lineWaiter
	// janitor reports that the goroutine closing idle connections runs.
	janitor bool

	// watch is the server's set of watched clients.
	watch *watchSet
	// max caps the lines (upstreams[].max_conns), perFlow one user's share
	// of them (upstreams[].max_conns_per_user); wait is how long a call
	// waits for a free one (upstreams[].max_conn_wait); idleTimeout is how
	// long a connection may sit unused before it is closed, not reused
	// (upstreams[].idle_conn_timeout).
	max, perFlow int
	wait         time.Duration
	idleTimeout  time.Duration
	// addr is the upstream's "host:port"; dial opens a raw connection to it
	// (directly or through the egress proxy) and tlsConfig, when not nil, is
	// the TLS client run over it, its handshake bounded by connect.
	addr      string
	dial      func(addr string) (net.Conn, error)
	tlsConfig *tls.Config
	connect   time.Duration
	// firstByte, idleRead and total are the upstream's timeouts
	// (timedConn).
	firstByte, idleRead, total time.Duration
}

// lineWaiter is a call waiting for a line: ch has room for the one line
// it is handed; flow is its user.
type lineWaiter struct {
	ch   chan *line
	flow string
}

// errUserConns fails a call whose user held its share of the upstream's
// connections (max_conns_per_user) for all of max_conn_wait: the user's
// own load, not the upstream's failure.
var errUserConns = errors.New("the user holds its share of the upstream's connections")

// get takes a line for a call of user flow: a free one, a new one while
// fewer than max exist, or the next one given back within wait (while flow
// holds perFlow lines, only once one of its own comes back);
// errUserConns or fasthttp.ErrNoFreeConns when none came.
func (p *lines) get(flow string) (*line, error) {
	p.mu.Lock()
	if p.held[flow] < p.perFlow {
		if l := p.takeLocked(flow); l != nil {
			p.mu.Unlock()
			return l, nil
		}
	}
	if p.wait <= 0 {
		p.mu.Unlock()
		return nil, fasthttp.ErrNoFreeConns
	}
	ch := make(chan *line, 1)
	p.waiters = append(p.waiters, lineWaiter{ch: ch, flow: flow})
	p.mu.Unlock()
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case l := <-ch:
		return l, nil
	case <-t.C:
	}
	p.mu.Lock()
	for i, w := range p.waiters {
		if w.ch == ch {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			capped := p.held[flow] >= p.perFlow
			p.mu.Unlock()
			if capped {
				return nil, errUserConns
			}
			return nil, fasthttp.ErrNoFreeConns
		}
	}
	p.mu.Unlock()
	return <-ch, nil // handed a line just as the wait ran out
}

// takeLocked takes a free or new line for flow, nil when max are busy.
// p.mu is held.
func (p *lines) takeLocked(flow string) *line {
	var l *line
	if n := len(p.idle); n > 0 {
		l = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
	} else if len(p.all) < p.max {
		l = &line{p: p}
		l.body.l = l
		p.all = append(p.all, l)
	} else {
		return nil
	}
	p.hold(l, flow)
	return l
}

// hold counts l as flow's. p.mu is held.
func (p *lines) hold(l *line, flow string) {
	if p.held == nil {
		p.held = make(map[string]int)
	}
	l.flow = flow
	p.held[flow]++
}

// put gives a line back: to the oldest waiting call whose user may hold
// one more, else to the free ones. Its connection is closed first unless
// reusable (the answer was read to its end and neither side asked to
// close).
func (p *lines) put(l *line, reusable bool) {
	if l.nc != nil && (!reusable || !l.keep || l.br.Buffered() > 0) {
		l.close()
	}
	l.used = time.Now()
	p.mu.Lock()
	if n := p.held[l.flow] - 1; n > 0 {
		p.held[l.flow] = n
	} else {
		delete(p.held, l.flow)
	}
	for i, w := range p.waiters {
		if p.held[w.flow] < p.perFlow {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.hold(l, w.flow)
			p.mu.Unlock()
			w.ch <- l
			return
		}
	}
	l.flow = ""
	p.idle = append(p.idle, l)
	if l.nc != nil && !p.janitor {
		p.janitor = true
		go p.closeIdle()
	}
	p.mu.Unlock()
}

// closeIdle closes the connections idle for idleTimeout, checking every
// half of it, until no idle line has one. It only gives sockets back: a
// call never reuses an older connection anyway (staleness).
func (p *lines) closeIdle() {
	every := max(p.idleTimeout/2, 10*time.Millisecond)
	var expired []net.Conn
	for {
		time.Sleep(every)
		now := time.Now()
		open := false
		p.mu.Lock()
		for _, l := range p.idle {
			if l.nc != nil && now.Sub(l.used) >= p.idleTimeout {
				expired = append(expired, l.detach())
			}
			open = open || l.nc != nil
		}
		if !open {
			p.janitor = false
		}
		p.mu.Unlock()
		// Closed outside the lock: a TLS close writes its alert.
		for i, c := range expired {
			_ = c.Close()
			expired[i] = nil
		}
		expired = expired[:0]
		if !open {
			return
		}
	}
}

// open counts the lines with an open connection, busy or idle.
func (p *lines) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.all {
		if l.conn.Load() != nil {
			n++
		}
	}
	return n
}

// bufWriters are the buffers requests are written through, one a call.
var bufWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// line is one upstream connection slot; see lines. Its connection fields
// belong to the call holding the line, or to p.mu while the line is idle.
type line struct {
	p *lines
	// nc is what requests are written to and answers read from: tc, or a
	// TLS client over it; nil when the line has no connection. br reads
	// from it; keep reports that the last answer allows its reuse.
	nc   net.Conn
	tc   *timedConn
	br   *bufio.Reader
	keep bool
	// sock polls tc's socket for the upstream's close (nil: cannot).
	sock *socketCheck
	// gotByte reports that the last failed call had received at least one
	// byte of its answer.
	gotByte bool
	// used is when the line's last call ended; flow is the user holding
	// it ("" while free).
	used time.Time
	flow string
	// conn is tc for the watcher and the gauge: set when a connection is
	// made, cleared when it is closed.
	conn atomic.Pointer[timedConn]
	// body is the answer's body stream as the relay reads it (stream).
	body lineBody
	// gone is set when the client of the call in progress left: the call's
	// connection is closed and no request goes out on it.
	gone atomic.Bool

	// mu guards the watch: client is the socket of the call's client while
	// the call waits for its answer (nil otherwise, or once it left), cache
	// the cache call whose followers still want the answer when that client
	// leaves; watching reports that the line is in its server's watch set.
	mu       sync.Mutex
	watching bool
	client   syscall.RawConn
	cache    *cacheCall
	watchIdx int
}

// errClientLeft fails the request of a call whose client left before it
// went out.
var errClientLeft = errors.New("the client left before the request was sent")

// roundTrip sends req on the line's connection, dialing one when it has
// none, and reads the answer into resp: its head, and its body unless
// resp.StreamBody (then resp.BodyStream() reads it, and stream wraps it).
// A failed call's connection is closed; gotByte tells whether its answer
// had begun.
func (l *line) roundTrip(req *fasthttp.Request, resp *fasthttp.Response) error {
	stream := resp.StreamBody
	resp.Reset()
	resp.StreamBody = stream
	if l.nc == nil {
		if err := l.connect(); err != nil {
			return err
		}
	}
	l.gotByte = false
	// The path goes out as setURI built it: the client's path was checked
	// (cleanPath) and is not to be rewritten here.
	req.URI().DisablePathNormalizing = true
	bw := bufWriters.Get().(*bufio.Writer)
	bw.Reset(l.nc)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	bufWriters.Put(bw)
	if err == nil {
		if req.Header.IsHead() {
			resp.SkipBody = true
		}
		err = resp.ReadLimitBody(l.br, 0)
	}
	if err != nil {
		l.gotByte = l.tc.gotByte
		l.close()
		return err
	}
	// A body with neither a length nor chunks ends when the upstream closes.
	l.keep = !req.ConnectionClose() && !resp.ConnectionClose() && resp.Header.ContentLength() != -2
	return nil
}

// connect opens the line's connection: dial, then the TLS handshake.
func (l *line) connect() error {
	p := l.p
	raw, err := p.dial(p.addr)
	if err != nil {
		return &dialError{err: err}
	}
	tc := &timedConn{Conn: raw, firstByte: p.firstByte, idle: p.idleRead, total: p.total, line: l}
	sock := newSocketCheck(raw)
	var nc net.Conn = tc
	if p.tlsConfig != nil {
		tc.plain = true // the handshake is bounded by connect, not first_byte
		_ = raw.SetDeadline(time.Now().Add(p.connect))
		c := tls.Client(tc, p.tlsConfig)
		if err := c.Handshake(); err != nil {
			_ = raw.Close()
			return &dialError{err: err}
		}
		_ = raw.SetDeadline(time.Time{})
		tc.plain = false
		nc = c
	}
	if l.br == nil {
		l.br = bufio.NewReaderSize(nc, 4<<10)
	} else {
		l.br.Reset(nc)
	}
	l.nc, l.tc, l.sock = nc, tc, sock
	l.conn.Store(tc)
	return nil
}

// close closes the line's connection.
func (l *line) close() { _ = l.detach().Close() }

// detach takes the line's connection off it, for the caller to close.
func (l *line) detach() net.Conn {
	nc := l.nc
	l.conn.Store(nil)
	l.br.Reset(nil)
	l.nc, l.tc, l.sock = nil, nil, nil
	return nc
}

// stream is the answer's body stream for the relay: closing it with an
// error closes the connection, which also ends a read in progress.
func (l *line) stream(resp *fasthttp.Response) fasthttp.ReadCloserWithError {
	l.body.r = resp.BodyStream()
	return &l.body
}

// lineBody is a line's answer body; see line.stream.
type lineBody struct {
	l *line
	r io.Reader
}

func (b *lineBody) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWithError closes the connection when err is not nil (a client that
// left, an answer not read to its end); the line's holder then gives the
// line back.
func (b *lineBody) CloseWithError(err error) error {
	if err != nil {
		if c := b.l.conn.Load(); c != nil {
			_ = c.Conn.Close()
		}
	}
	return nil
}

// watch arms the line for a call whose client is raw (nil: not watched):
// the server's watch set closes the call's connection if the client leaves before the
// answer arrives, unless cc's followers still want it.
func (l *line) watch(raw syscall.RawConn, cc *cacheCall) {
	l.gone.Store(false)
	if raw == nil {
		return
	}
	l.mu.Lock()
	l.client, l.cache, l.watching = raw, cc, true
	l.mu.Unlock()
	l.p.watch.add(l)
}

// unwatch disarms the line; once it returns the watcher no longer closes
// its connection for this call.
func (l *line) unwatch() {
	l.mu.Lock()
	armed := l.watching
	l.client, l.cache, l.watching = nil, nil, false
	l.mu.Unlock()
	if armed {
		l.p.watch.remove(l)
	}
}

func (l *line) watchSlot() *int { return &l.watchIdx }

// check closes the line's connection when the watched client has left.
func (l *line) check() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client == nil || !peerClosed(l.client) {
		return
	}
	if l.cache != nil && l.cache.shared() {
		return // cache: others wait for this answer
	}
	l.client = nil
	// gone before conn: a dial racing this check either is seen here or
	// sees gone when its request is written (timedConn.Write).
	l.gone.Store(true)
	if c := l.conn.Load(); c != nil {
		_ = c.Conn.Close()
	}
}

// staleness says why the line's pooled connection must not be reused
// before a call sends on it: "" when it may be.
func (l *line) staleness(now time.Time) string {
	if l.nc == nil {
		return ""
	}
	if now.Sub(l.used) >= l.p.idleTimeout {
		return "idle_timeout"
	}
	if l.sock.peerClosed() {
		return "closed_idle"
	}
	return ""
}

// closedBeforeAnswer reports that a failed call's request went out on a
// reused connection that ended (closed or reset) before any byte of the
// answer: the upstream had closed it while idle, so sending the request
// again on a new connection cannot repeat work. A timeout, or a failure on
// a new connection, may have reached the upstream and is not repeated.
func (l *line) closedBeforeAnswer(reused bool, err error) bool {
	if !reused || l.gotByte || l.gone.Load() {
		return false
	}
	var de *dialError
	var ne net.Error
	return !errors.As(err, &de) && !errors.Is(err, fasthttp.ErrTimeout) && !errors.Is(err, os.ErrDeadlineExceeded) &&
		!(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, errClientLeft)
}
