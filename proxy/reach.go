package proxy

import (
	"github.com/valyala/fasthttp"
)

// reached is where reach stopped.
type reached uint8

const (
	reachedUpstream    reached = iota // the upstream answered, or a failure says why not
	reachedCache                      // the cache answered (buffered)
	reachedCacheStream                // the cache answers with a stream a tee finishes
	reachedWait                       // parked before a wait (only when asked to park)
)

// reach runs step 6 and the call of step 7 for an admitted request, the
// one sequence of every endpoint and of the queued stream:
//
//  1. wait for the slot the user's buckets reserved (waitSlot);
//  2. a cache hit or a follower of an identical call is answered here
//     (cacheServe); one whose leader gave nothing goes on as a miss;
//  3. pick the route's first upstream whose breaker lets calls through;
//  4. ask that upstream's fair queue for capacity, and wait for it;
//  5. call it, with retries and failover (call).
//
// Each step that was passed is not run again, so a request that parked
// (park true: it stops before its first wait, reachedWait) resumes here
// with keep-alives k. The answer or failure is the caller's to deliver.
func (s *Server) reach(ctx *fasthttp.RequestCtx, x *exchange, cc *cacheCall, k *keepalive, park bool) (*fasthttp.Response, *failure, reached) {
	if x.slotAhead() {
		if park {
			return nil, nil, reachedWait
		}
		if fl := s.waitSlot(ctx, x, k); fl != nil {
			return nil, fl, reachedUpstream
		}
	}
	if cc != nil && (!cc.leader || cc.remote) && x.cacheStatus != cacheMiss {
		if streamed, done := s.cacheServe(ctx, x, cc); done {
			if streamed {
				return nil, nil, reachedCacheStream
			}
			return nil, nil, reachedCache
		}
	}
	if x.ticket == nil && x.pending == nil {
		if fl := s.pick(x); fl != nil {
			return nil, fl, reachedUpstream
		}
		t, fl := s.enqueue(ctx, x)
		if fl != nil {
			return nil, fl, reachedUpstream
		}
		x.pending = t // nil when granted at once (x.ticket)
	}
	if x.pending != nil {
		if park {
			return nil, nil, reachedWait
		}
		if fl := s.awaitTicket(ctx, x, k); fl != nil {
			return nil, fl, reachedUpstream
		}
	}
	resp, fl := s.call(ctx, x, k)
	return resp, fl, reachedUpstream
}
