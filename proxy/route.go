package proxy

import (
	"sluice/policy"
	"time"

	"github.com/valyala/fasthttp"
)

func writeModelNotFound(ctx *fasthttp.RequestCtx, model string) {
	writeError(ctx, errModelNotFound, "model", "The model `"+model+"` does not exist or you do not have access to it.")
}

// rewriteModel returns body with its model value replaced by model.
func rewriteModel(body []byte, f *reqFields, model string) []byte {
	out := make([]byte, 0, len(body)+len(model))
	out = append(out, body[:f.modelStart]...)
	out = appendJSONString(out, model)
	return append(out, body[f.modelEnd:]...)
}

// pickUpstream is the route's first upstream whose breaker lets calls
// through; when none does it answers 503 with the time until the primary
// half-opens.
func (s *Server) pickUpstream(ctx *fasthttp.RequestCtx, route *policy.Route) (*upstream, string, bool) {
	up, dep, f := s.pickUpstreamFailure(route)
	if f != nil {
		f.write(ctx)
		return nil, "", false
	}
	return up, dep, true
}

// pickUpstreamFailure is pickUpstream's choice, or the failure to answer.
func (s *Server) pickUpstreamFailure(route *policy.Route) (*upstream, string, *failure) {
	now := time.Now()
	up := s.upstreams[route.Upstream]
	ok, wait := up.breaker.Allow(now)
	if ok {
		return up, route.Deployment, nil
	}
	for _, i := range route.Fallbacks {
		fb := s.upstreams[i]
		if ok, _ := fb.breaker.Allow(now); ok {
			dep := ""
			if fb.azure {
				dep = route.Model
			}
			return fb, dep, nil
		}
	}
	return nil, "", &failure{kind: errUpstreamUnavailable, retry: max(wait, time.Second), position: -1,
		msg: "The upstream provider is failing; Sluice stopped calling it for " + wait.Round(time.Second).String() + ". Retry the request later."}
}

// fallback is the next upstream of the request's route after cur whose
// breaker lets calls through, or nil.
func (s *Server) fallback(x *exchange, cur *upstream) *upstream {
	now := time.Now()
	past := cur == s.upstreams[x.route.Upstream]
	for _, i := range x.route.Fallbacks {
		fb := s.upstreams[i]
		if !past {
			past = fb == cur
			continue
		}
		if ok, _ := fb.breaker.Allow(now); ok {
			return fb
		}
	}
	return nil
}
