package proxy

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"

	"sluice/policy"
)

// The endpoints Sluice forwards without reading their answers: the model
// listings and every other /v1/* path (files, audio, images, moderations,
// batches, fine-tuning, vector stores, and whatever the provider adds).
// They cost no tokens Sluice can count, but each is a request and holds an
// upstream connection while it runs, so each is metered as one: the
// caller's request budgets and concurrency lease (a wait for a reserved
// slot within the tier's max_wait, else 429), then the upstream's queue and
// budget (one request, no tokens), then the call. Without this a key held
// to 3 requests a minute could make any number of them here, and a few
// slow uploads from one key could hold every upstream connection.

// servePlain answers a models, model or passthrough request for key. It
// returns true when a relay finishes the exchange.
func (s *Server) servePlain(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key) bool {
	up := s.upstreams[s.router.Default()]
	var body []byte
	deployment := ""
	var f reqFields
	endUser := ""
	x.user = key.User // refined below for an app's end user
	if !key.StoredObjects && (x.ep == epModel && ctx.IsDelete() || x.ep == epPassthrough && storedObjectPath(ctx.Path())) {
		writeError(ctx, errStoredObjects, "", "This key shares its provider project with other keys, so it may not use "+
			"the endpoints of stored objects (files, batches, vector stores, fine-tuning, stored responses, …). "+
			"Ask the admin for a key with a project of its own.")
		return false
	}
	if !s.ownedAccess(ctx, x, key) { // stored objects' owners (owners.go)
		return false
	}
	switch x.ep {
	case epModel:
		id := ctx.Path()[len(prefixModels):]
		route, ok := s.router.Resolve(string(id))
		if !ok || !key.AllowsModel(route.Model) {
			writeModelNotFound(ctx, string(id))
			return false
		}
		x.model, up, deployment = route.Model, s.upstreams[route.Upstream], route.Deployment
	case epPassthrough:
		body = ctx.PostBody()
		// A JSON body that names a model (moderations, images) is routed by
		// it; anything else goes to the default upstream, byte for byte.
		if len(body) > 0 && body[0] == '{' && scanRequest(body, &f) == nil && f.model != nil {
			route, ok := s.router.Resolve(string(f.model))
			if ok && !route.Rewritten {
				up = s.upstreams[route.Upstream]
				x.model = route.Model
			}
			if !key.AllowsModel(string(f.model)) || ok && !key.AllowsModel(route.Model) {
				writeModelNotFound(ctx, string(f.model))
				return false
			}
		}
		// An app key names the end user here as everywhere it spends.
		var ok bool
		if endUser, ok = s.endUser(ctx, key, &f); !ok {
			return false
		}
	default: // epModels: a listing, also for an app key that names no one
		if key.Trusted && len(ctx.Request.Header.Peek("X-Sluice-User")) > 0 {
			var ok bool
			if endUser, ok = s.endUser(ctx, key, &f); !ok {
				return false
			}
		}
	}
	p := pol.Principal(key, endUser)
	x.user, x.team, x.tier = p.User, p.Team, p.Tier
	wait, ok := s.claimFor(ctx, x, pol, p)
	if !ok {
		return false
	}
	if s.limiter != nil && !s.admitPlain(ctx, x, pol, key, p, wait) {
		return false
	}
	if x.adm != nil && x.adm.Wait > 0 {
		if fl := s.waitSlot(ctx, x, nil); fl != nil {
			fl.write(ctx)
			return false
		}
	}
	t, fl := s.enqueue(ctx, x, up)
	if t != nil {
		fl = s.awaitTicket(ctx, x, up, t, nil)
	}
	if fl != nil {
		if x.adm != nil {
			s.limiter.Cancel(ctx, x.adm)
			x.adm = nil
		}
		fl.write(ctx)
		return false
	}
	return s.forward(ctx, x, up, body, deployment, false)
}

// admitPlain reserves one request of the principal's budgets (no tokens),
// answering 429 (or 503) when they are used up; x.adm holds the admission.
func (s *Server) admitPlain(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key,
	p policy.Principal, wait time.Duration) bool {
	plan := pol.Plan(p, key, x.model)
	x.claim.flow = plan.UserScope
	if !plan.Limited() {
		return true
	}
	ask := policy.Ask{Plan: plan, RequestID: x.requestID(), MaxWait: wait}
	ad := s.limiter.AdmitCounting(context.Background(), pol, &ask, nil)
	if ad.Outcome != policy.Admitted {
		writeRejected(ctx, ad, p.User)
		s.limiter.Finish(context.Background(), ad, -1)
		return false
	}
	x.adm = ad
	return true
}
