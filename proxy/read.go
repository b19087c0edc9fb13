package proxy

import (
	"github.com/valyala/fasthttp"
)

// accept checks the request line (step 1): the server is not draining, the
// path is clean and under /v1/, and the method is the endpoint's.
func (s *Server) accept(ctx *fasthttp.RequestCtx, x *exchange) bool {
	if s.draining.Load() {
		ctx.SetConnectionClose()
		writeError(ctx, errShuttingDown, "", "Sluice is shutting down; retry the request.")
		return false
	}
	if !cleanPath(ctx) {
		return false
	}
	if x.ep == epUnknown {
		writeError(ctx, errNotFound, "", "Unknown request URL: "+string(ctx.Method())+" "+string(ctx.Path())+". Sluice serves the OpenAI API under /v1/.")
		return false
	}
	return s.methodAllowed(ctx, x.ep)
}

// read reads the body (step 1) into x.body and f. The JSON endpoints'
// body is decoded (Content-Encoding) and scanned once for the fields Sluice
// needs, and must name a model. A passthrough body is sent byte for byte;
// one that is a JSON object naming a model (moderations, images) is
// scanned for it, to route and allow it. The model endpoints have none.
func (s *Server) read(ctx *fasthttp.RequestCtx, x *exchange, f *reqFields) bool {
	switch x.ep {
	case epModels, epModel:
		return true
	case epPassthrough:
		x.body = ctx.PostBody()
		if len(x.body) > 0 && x.body[0] == '{' && scanRequest(x.body, f) != nil {
			*f = reqFields{} // not JSON after all: nothing to route by
		}
		return true
	}
	if !s.decodeRequestBody(ctx, x.ep, s.cfg.Server.MaxBodyBytes) {
		return false
	}
	x.body = ctx.PostBody()
	if err := scanRequest(x.body, f); err != nil {
		writeError(ctx, err.kind, err.param, err.msg)
		return false
	}
	if f.model == nil {
		writeError(ctx, errInvalidRequest, "model", "You must provide a model parameter.")
		return false
	}
	x.stream = f.stream && x.ep.streams()
	return true
}

// methodAllowed answers 405 with an Allow header when the method is not
// the endpoint's: POST for the JSON endpoints, GET for the model list,
// GET or DELETE for one model; any method for a passthrough path.
func (s *Server) methodAllowed(ctx *fasthttp.RequestCtx, ep endpoint) bool {
	want := ""
	switch {
	case ep.parsesBody():
		if !ctx.IsPost() {
			want = fasthttp.MethodPost
		}
	case ep == epModels:
		if !ctx.IsGet() {
			want = fasthttp.MethodGet
		}
	case ep == epModel:
		// GET retrieves a model, DELETE removes a fine-tuned one.
		if !ctx.IsGet() && !ctx.IsDelete() {
			want = fasthttp.MethodGet
		}
	}
	if want == "" {
		return true
	}
	ctx.Response.Header.Set("Allow", want)
	writeError(ctx, errMethodNotAllowed, "", "Method "+string(ctx.Method())+" is not allowed on "+string(ctx.Path())+"; use "+want+".")
	return false
}
