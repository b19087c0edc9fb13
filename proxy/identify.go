package proxy

import (
	"fmt"
	"sluice/policy"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

var (
	bearerPrefix   = []byte("Bearer ")
	acceptEncoding = []byte("Accept-Encoding")
)

// identify finds the virtual key of the request (step 2), from
// "Authorization: Bearer KEY" or Azure's "api-key: KEY", answering 401 when
// there is none, and 403 when the key may not call the path. x gets the
// key's id, project, user, team and tier (principal refines them).
func (s *Server) identify(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy) (*policy.Key, bool) {
	secret := requestKey(&ctx.Request.Header)
	if len(secret) == 0 {
		writeError(ctx, errInvalidKey, "", "You didn't provide an API key. Provide your Sluice key in an Authorization header using Bearer auth (Authorization: Bearer YOUR_KEY).")
		return nil, false
	}
	key, ok := pol.Identify(secret)
	if !ok {
		writeError(ctx, errInvalidKey, "", "Incorrect API key provided.")
		return nil, false
	}
	// Every record names its tenant, models and passthrough calls too:
	// /admin/transcripts?team= keeps them.
	x.keyID, x.project, x.user, x.team, x.tier, x.showCost = key.ID, key.Project, key.User, key.Team, key.Tier, key.ShowCost
	if !key.AllowsPath(ctx.Path()) {
		writeError(ctx, errEndpointForbidden, "", "This key may not call "+string(ctx.Path())+".")
		return nil, false
	}
	if !key.StoredObjects && (x.ep == epModel && ctx.IsDelete() || x.ep == epPassthrough && storedObjectPath(ctx.Path())) {
		writeError(ctx, errStoredObjects, "", "This key shares its provider project with other keys, so it may not use "+
			"the endpoints of stored objects (files, batches, vector stores, fine-tuning, stored responses, …). "+
			"Ask the admin for a key with a project of its own.")
		return nil, false
	}
	return key, true
}

// principal finds who the request spends for (step 2): the end user a
// trusted app key names, on every endpoint that spends (a model listing
// names one only when it sends X-Sluice-User; a single model's lookup
// none), and the principal's user, team and tier.
func (s *Server) principal(ctx *fasthttp.RequestCtx, x *exchange, pol *policy.Policy, key *policy.Key, f *reqFields) (policy.Principal, bool) {
	endUser := ""
	if x.ep != epModel && (x.ep != epModels || key.Trusted && len(ctx.Request.Header.Peek("X-Sluice-User")) > 0) {
		var ok bool
		if endUser, ok = s.endUser(ctx, key, f); !ok {
			return policy.Principal{}, false
		}
	}
	p := pol.Principal(key, endUser)
	x.user, x.team, x.tier = p.User, p.Team, p.Tier
	return p, true
}

// requestKey is the key a request carries: "Authorization: Bearer KEY"
// (the scheme in any case) or Azure's "api-key: KEY"; nil when none.
func requestKey(h *fasthttp.RequestHeader) []byte {
	secret := h.Peek("Authorization")
	switch {
	case len(secret) > len(bearerPrefix) && asciiEqualFold(secret[:len(bearerPrefix)], bearerPrefix):
		return secret[len(bearerPrefix):]
	case len(secret) == 0:
		return h.Peek("Api-Key")
	}
	return nil
}

// unauthBodyLimit is the most of a request body read before its key is
// known to be valid, in bytes (64 KiB): a request without a valid key gets
// its 401 after that much at most, not after server.max_body_bytes.
const unauthBodyLimit = 64 << 10

// headerReceived runs once a request's headers are in, before its body is
// read: a body larger than unauthBodyLimit (or of unknown length) is read
// only for a valid key. Without one the body stops at the limit and the
// client gets a 401 (handleServerError), so slow uploads without a key
// cannot hold memory.
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if cl := h.ContentLength(); cl >= 0 && cl <= unauthBodyLimit {
		return fasthttp.RequestConfig{}
	}
	if s.cfg.Server.MaxBodyBytes <= unauthBodyLimit {
		return fasthttp.RequestConfig{} // the server's own limit is lower
	}
	if _, ok := s.policy.Load().Identify(requestKey(h)); ok {
		return fasthttp.RequestConfig{}
	}
	return fasthttp.RequestConfig{MaxRequestBodySize: unauthBodyLimit}
}

// validKey reports whether h carries a key of the running policy.
func (s *Server) validKey(h *fasthttp.RequestHeader) bool {
	_, ok := s.policy.Load().Identify(requestKey(h))
	return ok
}

// endUser returns the end user a trusted key names (X-Sluice-User, else the
// body's "user"), or "" for other keys, answering 400 for an unusable name
// and for a trusted key that names no end user (it would otherwise run as
// the key's own user, in the key's tier: often unlimited).
func (s *Server) endUser(ctx *fasthttp.RequestCtx, key *policy.Key, f *reqFields) (string, bool) {
	if !key.Trusted {
		return "", true
	}
	name := ctx.Request.Header.Peek("X-Sluice-User")
	param := "X-Sluice-User"
	if len(name) == 0 {
		name, param = f.user, "user"
	}
	if len(name) == 0 {
		writeError(ctx, errInvalidRequest, "user", "This is an app key: name the end user of every request with the X-Sluice-User header or the body's \"user\" field.")
		return "", false
	}
	if len(name) > policy.MaxUserLen || !utf8.Valid(name) || hasControl(name) {
		writeError(ctx, errInvalidRequest, param, fmt.Sprintf("The end-user name must be valid UTF-8 without control characters, at most %d bytes.", policy.MaxUserLen))
		return "", false
	}
	user, known := s.endUsers.get(name)
	if !known {
		s.endUsers.add(user)
	}
	return user, true
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		ca, cb := a[i]|0x20, b[i]|0x20
		if ca != cb {
			return false
		}
	}
	return true
}
