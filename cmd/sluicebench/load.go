package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// target is one way to reach the chat completions endpoint.
type target struct {
	name  string   // "direct", "Sluice" or "nginx"
	addr  string   // host:port
	auths []string // Authorization header values; worker i sends auths[i%len]
	// stream makes the closed and open loops send streaming requests;
	// same sends one unchanging body (cache hits) instead of unique ones.
	stream, same bool
	// plain is the keep-alive pool of the non-stream phases (MaxConns =
	// -conns); streams has its own so stream connections are never mixed in.
	plain, streams *fasthttp.HostClient
}

const chatPath = "/v1/chat/completions"

func newTarget(name, addr string, keys []string, conns int) *target {
	hc := func(n int) *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                          addr,
			MaxConns:                      n,
			MaxConnWaitTimeout:            10 * time.Second,
			ReadTimeout:                   10 * time.Second,
			WriteTimeout:                  10 * time.Second,
			MaxIdleConnDuration:           time.Minute,
			NoDefaultUserAgentHeader:      true,
			DisableHeaderNamesNormalizing: true,
			DisablePathNormalizing:        true,
		}
	}
	t := &target{name: name, addr: addr, plain: hc(conns), streams: hc(conns)}
	for _, k := range keys {
		t.auths = append(t.auths, "Bearer "+k)
	}
	return t
}

// The request body: a realistic ~1 KB chat conversation. The last user
// message starts with a 16-hex-digit number unique to each request; the
// "user" field (an end user, for the trusted app key) is one of 100 by worker.
const (
	noncePlaceholder = "XXXXXXXXXXXXXXXX"
	userPlaceholder  = "bench-user-17"
	bodyTemplate     = `{"model":"gpt-4o-mini","messages":[` +
		`{"role":"system","content":"You are Quill, the support assistant of Northwind Books, an online bookshop. Answer in at most three short sentences, in the customer's language. Never invent order details: if you need an order number or an email address, ask for it. Prices are in euros and include VAT. Shipping to the EU takes 2 to 4 working days; returns are free within 30 days when the book is unread."},` +
		`{"role":"user","content":"Hi! I ordered two paperbacks last Tuesday, order NW-448213, and the tracking page still says the parcel is being prepared. Is something wrong with it?"},` +
		`{"role":"assistant","content":"Thanks for waiting. Order NW-448213 was split: the first paperback left our warehouse yesterday and the second is expected from the publisher on Friday, so both should reach you early next week."},` +
		`{"role":"user","content":"` + noncePlaceholder + ` Okay, thanks. Can I still add a gift wrap to the second book, and would that delay it?"}` +
		`],"temperature":0.3,"max_tokens":120,"user":"bench-user-17"}`
)

// nonces numbers the requests of a run; the start is random so two runs
// never send the same prompt either.
var nonces atomic.Uint64

func init() {
	var b [8]byte
	_, _ = rand.Read(b[:])
	nonces.Store(binary.LittleEndian.Uint64(b[:]) >> 8)
}

// body is one worker's reusable request body.
type body struct {
	b    []byte
	off  int  // where the nonce goes
	same bool // keep the nonce: every request identical
}

func newBody(stream, same bool, worker int) *body {
	s := bodyTemplate
	if stream {
		s = strings.Replace(s, `"temperature"`, `"stream":true,"temperature"`, 1)
	}
	s = strings.Replace(s, userPlaceholder, fmt.Sprintf("bench-user-%02d", worker%100), 1)
	b := &body{b: []byte(s), off: strings.Index(s, noncePlaceholder)}
	b.set(0)
	b.same = same
	return b
}

// next writes a fresh nonce into the body (unless same) and returns it.
func (b *body) next() []byte {
	if !b.same {
		b.set(nonces.Add(1))
	}
	return b.b
}

func (b *body) set(n uint64) {
	const digits = "0123456789abcdef"
	d := b.b[b.off : b.off+len(noncePlaceholder)]
	for i := len(d) - 1; i >= 0; i-- {
		d[i] = digits[n&15]
		n >>= 4
	}
}

// newRequest returns worker's chat request to t whose body will be set per
// call.
func (t *target) newRequest(worker int) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("http://" + t.addr + chatPath)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", t.auths[worker%len(t.auths)])
	return req
}

// result is what one phase measured.
type result struct {
	lat     []time.Duration // latency of each successful request, sorted
	lag     []time.Duration // open loop: send time − scheduled time, sorted
	ok      int
	errs    int // transport errors and non-200 answers
	dropped int // open loop: not sent because the in-flight bound was full
	elapsed time.Duration
	sample  string // the first error, for the log

	// serverCPU is the CPU of the process the path's requests end in (the
	// fake, Sluice or nginx); fakeCPU the fake's, selfCPU the generator's.
	serverCPU, fakeCPU, selfCPU time.Duration
	mallocs                     int64      // Sluice's heap allocations (its path only)
	redis                       redisCount // Redis calls meanwhile (Sluice's path, -variant redis)
	// otherCores is the CPU the rest of the machine used meanwhile, in
	// cores (other processes, kernel threads): the noise of the phase.
	otherCores float64
}

func (r *result) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// pct returns the q-quantile (0..1) of a sorted slice, nearest rank.
func pct(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.999999) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// collector merges the per-worker samples of a phase.
type collector struct {
	mu  sync.Mutex
	res result
}

func (c *collector) add(lat, lag []time.Duration, errs int, sample string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.lat = append(c.res.lat, lat...)
	c.res.lag = append(c.res.lag, lag...)
	c.res.ok += len(lat)
	c.res.errs += errs
	if c.res.sample == "" {
		c.res.sample = sample
	}
}

func (c *collector) done(elapsed time.Duration) *result {
	r := &c.res
	r.elapsed = elapsed
	slices.Sort(r.lat)
	slices.Sort(r.lag)
	return r
}

// check classifies the outcome of one call: "" when it is a 200.
func check(err error, resp *fasthttp.Response) string {
	if err != nil {
		return err.Error()
	}
	if sc := resp.StatusCode(); sc != fasthttp.StatusOK {
		b := resp.Body()
		if len(b) > 200 {
			b = b[:200]
		}
		return fmt.Sprintf("status %d: %s", sc, b)
	}
	return ""
}

// closedLoop keeps conns requests in flight on conns connections for d and
// reports throughput and latency.
func closedLoop(ctx context.Context, t *target, conns int, d time.Duration) *result {
	var c collector
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	expect := max(1024, int(d.Seconds()*50000)/conns)
	for w := range conns {
		wg.Go(func() {
			req, resp := t.newRequest(w), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			b := newBody(t.stream, t.same, w)
			lat := make([]time.Duration, 0, expect)
			errs, sample := 0, ""
			for ctx.Err() == nil {
				req.SetBodyRaw(b.next())
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				err := t.plain.Do(req, resp)
				el := time.Since(t0)
				if msg := check(err, resp); msg != "" {
					errs++
					if sample == "" {
						sample = msg
					}
					if err != nil {
						time.Sleep(time.Millisecond) // do not spin on a dead server
					}
					continue
				}
				lat = append(lat, el)
			}
			c.add(lat, nil, errs, sample)
		})
	}
	wg.Wait()
	return c.done(time.Since(start))
}

// openLoop sends rate requests per second for d on a fixed schedule, whatever
// the answers do, with at most inflight requests in flight (a request that
// finds them all busy waits in a queue of inflight more; past that it is
// dropped and counted). Latency runs from the scheduled send time.
func openLoop(ctx context.Context, t *target, rate, inflight int, d time.Duration) *result {
	n := int(float64(rate) * d.Seconds())
	jobs := make(chan time.Time, inflight)
	var c collector
	var wg sync.WaitGroup
	for w := range inflight {
		wg.Go(func() {
			req, resp := t.newRequest(w), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			b := newBody(t.stream, t.same, w)
			lat := make([]time.Duration, 0, n/inflight+16)
			lag := make([]time.Duration, 0, n/inflight+16)
			errs, sample := 0, ""
			for due := range jobs {
				req.SetBodyRaw(b.next())
				lag = append(lag, time.Since(due))
				err := t.plain.Do(req, resp)
				el := time.Since(due)
				if msg := check(err, resp); msg != "" {
					errs++
					if sample == "" {
						sample = msg
					}
					continue
				}
				lat = append(lat, el)
			}
			c.add(lat, lag, errs, sample)
		})
	}
	start, dropped := pace(ctx, jobs, n, rate)
	wg.Wait()
	r := c.done(time.Since(start))
	r.dropped = dropped
	return r
}

// streamLoop sends n streaming requests at rate per second (open loop, at
// most inflight at once) and measures, from the moment each is sent, the time
// to the first byte of the first SSE event. Each stream is read to the end
// and must end with "data: [DONE]".
func streamLoop(ctx context.Context, t *target, n, rate, inflight int) *result {
	jobs := make(chan time.Time, inflight)
	var c collector
	var wg sync.WaitGroup
	for w := range inflight {
		wg.Go(func() {
			req, resp := t.newRequest(w), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			resp.StreamBody = true
			b := newBody(true, t.same, w)
			var lat []time.Duration
			errs, sample := 0, ""
			fail := func(msg string) {
				errs++
				if sample == "" {
					sample = msg
				}
			}
			var buf [4096]byte
			for range jobs {
				req.SetBodyRaw(b.next())
				resp.StreamBody = true
				t0 := time.Now()
				err := t.streams.Do(req, resp)
				if err != nil {
					fail(err.Error())
					continue
				}
				streamsOpen.Add(1)
				bs := resp.BodyStream()
				if resp.StatusCode() != fasthttp.StatusOK || bs == nil {
					streamsOpen.Add(-1)
					body, _ := io.ReadAll(io.LimitReader(orEmpty(bs, resp), 200))
					_ = resp.CloseBodyStream()
					fail(fmt.Sprintf("status %d: %s", resp.StatusCode(), body))
					continue
				}
				// The first byte of the first event.
				var k int
				for k == 0 && err == nil {
					k, err = bs.Read(buf[:])
				}
				first := time.Since(t0)
				if k == 0 {
					streamsOpen.Add(-1)
					_ = resp.CloseBodyStream()
					fail(fmt.Sprintf("stream ended before any event: %v", err))
					continue
				}
				head := string(buf[:min(k, 6)])
				tail := append([]byte(nil), buf[:k]...)
				for err == nil {
					k, err = bs.Read(buf[:])
					tail = append(tail, buf[:k]...)
					if len(tail) > 64 {
						tail = tail[len(tail)-64:]
					}
				}
				streamsOpen.Add(-1)
				_ = resp.CloseBodyStream()
				switch {
				case !errors.Is(err, io.EOF):
					fail("reading the stream: " + err.Error())
				case !strings.HasPrefix(head, "data: ") && !strings.HasPrefix(head, "event:"):
					fail(fmt.Sprintf("stream does not start with an SSE field: %q", head))
				case !bytes.HasSuffix(bytes.TrimSpace(tail), []byte("data: [DONE]")):
					fail(fmt.Sprintf("stream does not end with [DONE]: %q", tail))
				default:
					lat = append(lat, first)
				}
			}
			c.add(lat, nil, errs, sample)
		})
	}
	start, dropped := pace(ctx, jobs, n, rate)
	wg.Wait()
	r := c.done(time.Since(start))
	r.dropped = dropped
	return r
}

// pace hands n due times, rate per second from a moment 5 ms ahead, to the
// workers reading jobs (open loop: a time no worker is free for is
// dropped and counted, never queued), then closes jobs. It returns the
// start and the number dropped.
func pace(ctx context.Context, jobs chan<- time.Time, n, rate int) (time.Time, int) {
	start := time.Now().Add(5 * time.Millisecond)
	dropped := 0
	for i := 0; i < n && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(rate)))
		if w := time.Until(due); w > 0 {
			preciseSleep(w)
		}
		select {
		case jobs <- due:
		default:
			dropped++
		}
	}
	close(jobs)
	return start, dropped
}

// streamsOpen counts the streams whose answer headers have arrived and whose
// body is still being read, across every streamLoop.
var streamsOpen atomic.Int64

func orEmpty(r io.Reader, resp *fasthttp.Response) io.Reader {
	if r == nil {
		return bytes.NewReader(resp.Body())
	}
	return r
}

// cacheStatus sends two requests to t as worker 0 would and returns the
// x-sluice-cache header of the second: "miss" for unique requests, "hit"
// when t.same.
func cacheStatus(t *target) (string, error) {
	req, resp := t.newRequest(0), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	b := newBody(t.stream, t.same, 0)
	for range 2 {
		req.SetBodyRaw(b.next())
		if msg := check(t.plain.Do(req, resp), resp); msg != "" {
			return "", fmt.Errorf("%s: %s", t.name, msg)
		}
	}
	// Header names are not normalized by this client: compare them folded.
	for k, v := range resp.Header.All() {
		if strings.EqualFold(string(k), "x-sluice-cache") {
			return string(v), nil
		}
	}
	return "", nil
}

// probe sends one non-stream and one stream request to t and fails unless
// both succeed, so a broken lab is reported before any measurement.
func probe(ctx context.Context, t *target) error {
	r := openLoop(ctx, t, 100, 1, 10*time.Millisecond) // one request
	if r.ok != 1 {
		return fmt.Errorf("%s: a chat request failed: %s", t.name, r.sample)
	}
	r = streamLoop(ctx, t, 1, 10, 1)
	if r.ok != 1 {
		return fmt.Errorf("%s: a streaming chat request failed: %s", t.name, r.sample)
	}
	return nil
}
