package proxy

import (
	"sluice/policy"
	"time"

	"github.com/valyala/fasthttp"
)

// route resolves the request's model to its route (step 3): the upstream
// pool, fallbacks and deployment, after aliases and wildcards. A model the
// router does not know or the key may not use is a 404. An alias rewrites
// the body's model; a model without a price is refused when the policy
// says so (403). The model endpoints and a passthrough body without a
// model go to the default upstream (a passthrough model that is an alias
// too: the body is not rewritten).
func (s *Server) route(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key, f *reqFields) bool {
	x.route = policy.Route{Upstream: s.router.Default()}
	switch x.ep {
	case epModels:
		return true
	case epModel:
		id := ctx.Path()[len(prefixModels):]
		route, ok := s.router.Resolve(string(id))
		if !ok || !key.AllowsModel(route.Model) {
			writeModelNotFound(ctx, string(id))
			return false
		}
		x.model = route.Model
		x.route.Upstream, x.route.Deployment = route.Upstream, route.Deployment
		return true
	case epPassthrough:
		if f.model == nil {
			return true
		}
		route, ok := s.router.Resolve(string(f.model))
		if ok && !route.Rewritten {
			x.route.Upstream, x.model = route.Upstream, route.Model
			x.price, x.priced = pol.Prices.Lookup(route.Model) // images and transcriptions may report tokens
		}
		if !key.AllowsModel(string(f.model)) || ok && !key.AllowsModel(route.Model) {
			writeModelNotFound(ctx, string(f.model))
			return false
		}
		return true
	}
	model, known := s.models.get(f.model)
	x.modelAsked = model
	route, ok := s.router.Resolve(model)
	if !ok || !key.AllowsModel(route.Model) {
		writeModelNotFound(ctx, model)
		return false
	}
	if !known {
		s.models.add(model)
	}
	if x.price, x.priced = pol.Prices.Lookup(route.Model); !x.priced && pol.Prices.Unpriced == policy.UnpricedRefuse {
		writeError(ctx, errModelNotPriced, "model", "The model `"+route.Model+"` has no price in Sluice's policy, and the policy refuses models without one.")
		return false
	}
	x.model, x.route = route.Model, route
	if route.Rewritten {
		x.body = rewriteModel(x.body, f, route.Model)
		_ = scanRequest(x.body, f) // offsets into the new body; it scanned once already
	}
	return true
}

// pick sets x.up and x.deployment to the route's first upstream whose
// breaker lets calls through (step 6), or returns the 503 to answer when
// none does, with the time until the primary half-opens.
func (s *Server) pick(x *exchange) *failure {
	now := time.Now()
	route := &x.route
	up := s.upstreams[route.Upstream]
	ok, wait := up.breaker.Allow(now)
	if ok {
		x.up, x.deployment = up, route.Deployment
		return nil
	}
	for _, i := range route.Fallbacks {
		fb := s.upstreams[i]
		if ok, _ := fb.breaker.Allow(now); ok {
			x.up, x.deployment = fb, ""
			if fb.azure {
				x.deployment = route.Model
			}
			return nil
		}
	}
	return &failure{kind: errUpstreamUnavailable, retry: max(wait, time.Second), position: -1,
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

// writeModelNotFound answers 404 model_not_found, as OpenAI does for a
// model that does not exist or that the key may not use.
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
