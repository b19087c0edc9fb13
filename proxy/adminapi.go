package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"sluice/cache"
	"sluice/policy"
)

// AdminOptions configure the /admin/ API (SetAdmin).
type AdminOptions struct {
	// Token is server.admin_token. Empty: every /admin/ call of this API
	// answers 404, so an unconfigured API is not there at all.
	Token string
	// Reload reloads policies.yaml (policy.Reloader.ReloadWith); force
	// applies a policy that lifts limits too (POST /admin/reload?force=1).
	// nil: POST /admin/reload answers 404 (the embedded example policy is
	// in use).
	Reload func(trigger string, force bool) (bool, error)
	// Status reports the last reload (policy.Reloader.Status); optional.
	Status func() policy.Status
}

// adminAPI is the state of the /admin/ API.
type adminAPI struct {
	o         AdminOptions
	tokenHash [sha256.Size]byte
}

// SetAdmin enables the /admin/ API of AdminHandler. Call before serving.
func (s *Server) SetAdmin(o AdminOptions) {
	a := &adminAPI{o: o}
	if o.Token != "" {
		a.tokenHash = sha256.Sum256([]byte(o.Token))
	}
	s.admin = a
}

// tokenOK compares a bearer token with the admin token's hash in constant
// time (hashing first makes the comparison length-independent).
// The scheme is case-insensitive (RFC 9110), as on the API listener.
func tokenOK(header string, want [sha256.Size]byte) bool {
	const scheme = "Bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return false
	}
	tok := header[len(scheme):]
	h := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(h[:], want[:]) == 1
}

// guard wraps an /admin/ handler: 404 without a configured token, 401
// without the right one.
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a := s.admin
		if a == nil || a.o.Token == "" {
			http.NotFound(w, r)
			return
		}
		if !tokenOK(r.Header.Get("Authorization"), a.tokenHash) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-admin"`)
			adminJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong admin token"})
			return
		}
		h(w, r)
	}
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	adminJSON(w, status, map[string]string{"error": msg})
}

// adminRoutes registers the /admin/ API on mux.
func (s *Server) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/policy", s.guard(s.handlePolicy))
	mux.HandleFunc("GET /admin/transcripts", s.guard(s.handleTranscripts))
	mux.HandleFunc("GET /admin/usage", s.guard(s.handleUsage))
	mux.HandleFunc("GET /admin/queues", s.guard(s.handleQueues))
	mux.HandleFunc("POST /admin/cache/purge", s.guard(s.handlePurge))
	mux.HandleFunc("POST /admin/reload", s.guard(s.handleReload))
	mux.HandleFunc("GET /admin/reload", s.guard(s.handleReloadStatus))
	// Go's profiles, for tuning under load (docs/performance.md): the same
	// token guards them, since a profile shows the process's internals.
	mux.HandleFunc("GET /debug/pprof/", s.guard(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", s.guard(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", s.guard(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", s.guard(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", s.guard(pprof.Trace))
}

// limitsJSON is a Limits as the admin API shows it.
type limitsJSON struct {
	RPM        policy.Rate `json:"rpm"`
	TPM        policy.Rate `json:"tpm"`
	TPD        policy.Rate `json:"tpd"`
	Concurrent int64       `json:"concurrent"`
	// Budget is the spend budget in USD; absent without one.
	Budget *policy.SpendBudget `json:"budget,omitempty"`
}

func toLimits(l policy.Limits) *limitsJSON {
	if l.IsZero() {
		return nil
	}
	j := &limitsJSON{RPM: l.RPM, TPM: l.TPM, TPD: l.TPD, Concurrent: l.Concurrent}
	if l.Budget != (policy.SpendBudget{}) {
		j.Budget = &l.Budget
	}
	return j
}

// resolve finds the principal of ?key=ID&user=NAME&model=M.
func (s *Server) resolve(w http.ResponseWriter, r *http.Request) (*policy.Policy, *policy.Key, policy.Principal, policy.Plan, bool) {
	q := r.URL.Query()
	keyID, user := q.Get("key"), q.Get("user")
	if keyID == "" && user == "" {
		adminError(w, http.StatusBadRequest, "give key=ID, user=NAME, or both (a trusted key and an end user it names)")
		return nil, nil, policy.Principal{}, policy.Plan{}, false
	}
	pol := s.policy.Load()
	k, p, err := pol.Resolve(keyID, user)
	if err != nil {
		adminError(w, http.StatusNotFound, "no key serves key="+keyID+" user="+user+
			" (an end user of a trusted app key has no key of its own: ask with key=APP&user=NAME)")
		return nil, nil, policy.Principal{}, policy.Plan{}, false
	}
	return pol, k, p, pol.Plan(p, k, q.Get("model")), true
}

// handlePolicy answers the effective policy for a key or user.
func (s *Server) handlePolicy(w http.ResponseWriter, r *http.Request) {
	pol, k, p, pl, ok := s.resolve(w, r)
	if !ok {
		return
	}
	out := map[string]any{
		"key_id": k.ID, "user": p.User, "team": p.Team, "tier": p.Tier, "end_user": p.EndUser,
		"trusted": k.Trusted, "limits": toLimits(pl.User), "app_limits": toLimits(pl.App), "shadow": toLimits(pl.Shadow),
		"team_limits":      toLimits(pl.Team),
		"cache_namespaces": k.CacheNamespaces,
	}
	if pl.Model != nil {
		out["model_limits"] = map[string]any{"pattern": pl.Model.Pattern, "limits": toLimits(pl.Model.Limits)}
	}
	if t := pl.Tier; t != nil {
		out["queue"] = map[string]any{"max_wait_seconds": t.Queue.MaxWait.Seconds(), "max_queue": t.Queue.MaxQueue,
			"weight": t.Queue.Weight, "priority": t.Queue.Priority}
		out["default_max_tokens"] = t.DefaultMaxTokens
	}
	rule := pol.CacheRule(p)
	out["cache"] = map[string]any{"mode": rule.Mode, "ttl_seconds": rule.TTL.Seconds(), "hits_count_tokens": rule.HitsCountTokens}
	adminJSON(w, http.StatusOK, out)
}

// handleUsage answers a user's buckets, read without spending.
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	_, k, p, pl, ok := s.resolve(w, r)
	if !ok {
		return
	}
	if s.limiter == nil {
		adminError(w, http.StatusNotFound, "limits are off")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	u, err := s.limiter.Usage(ctx, &pl)
	if err != nil {
		s.log.Warn("admin usage: bucket store failed", "error", err)
		adminError(w, http.StatusServiceUnavailable, "the bucket store did not answer")
		return
	}
	if u == nil {
		u = []policy.BucketUsage{}
	}
	adminJSON(w, http.StatusOK, map[string]any{"key_id": k.ID, "user": p.User, "tier": p.Tier, "buckets": u})
}

// handleQueues answers each upstream's queue state.
func (s *Server) handleQueues(w http.ResponseWriter, _ *http.Request) {
	type q struct {
		Upstream string  `json:"upstream"`
		Waiting  int     `json:"waiting"`
		Factor   float64 `json:"factor"`
		Limited  bool    `json:"limited"`
	}
	out := make([]q, 0, len(s.upstreams))
	for _, up := range s.upstreams {
		e := q{Upstream: up.name, Factor: 1}
		if up.sched != nil {
			e.Waiting, e.Factor, e.Limited = up.sched.Waiting(), up.sched.Factor(), up.sched.Limited()
		}
		out = append(out, e)
	}
	adminJSON(w, http.StatusOK, map[string]any{"upstreams": out})
}

// purgeRequest is the body of POST /admin/cache/purge: a namespace
// ("team:NAME" or "shared:NAME"), or one entry by its hex key, or one entry
// by the request that stored it (namespace, endpoint, model and body).
type purgeRequest struct {
	Namespace string          `json:"namespace"`
	Key       string          `json:"key"`
	Endpoint  string          `json:"endpoint"`
	Model     string          `json:"model"`
	Request   json.RawMessage `json:"request"`
}

func (s *Server) handlePurge(w http.ResponseWriter, r *http.Request) {
	if s.cache == nil {
		adminError(w, http.StatusNotFound, "the cache is off")
		return
	}
	var pr purgeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pr); err != nil {
		adminError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	var k cache.Key
	switch {
	case pr.Key != "":
		b, err := hex.DecodeString(pr.Key)
		if err != nil || len(b) != len(k) {
			adminError(w, http.StatusBadRequest, "key: want the entry's key in hex")
			return
		}
		copy(k[:], b)
	case len(pr.Request) > 0:
		if pr.Namespace == "" || pr.Endpoint == "" {
			adminError(w, http.StatusBadRequest, "a request needs its namespace and endpoint (chat, completions, embeddings)")
			return
		}
		var err error
		k, _, err = cache.NewKey(s.cache.Namespace(pr.Namespace), pr.Endpoint, pr.Model, pr.Request)
		if err != nil {
			adminError(w, http.StatusBadRequest, "request: "+err.Error())
			return
		}
	case pr.Namespace != "":
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		g, err := s.cache.PurgeNamespace(ctx, pr.Namespace)
		if err != nil {
			s.log.Warn("admin cache purge failed", "namespace", pr.Namespace, "error", err)
			adminError(w, http.StatusServiceUnavailable, "the shared cache store did not answer; nothing purged")
			return
		}
		adminJSON(w, http.StatusOK, map[string]any{"purged": "namespace", "namespace": pr.Namespace, "generation": g})
		return
	default:
		adminError(w, http.StatusBadRequest, "give namespace, key, or namespace+endpoint+model+request")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cache.Purge(ctx, k); err != nil {
		s.log.Warn("admin cache purge failed", "error", err)
		status := http.StatusServiceUnavailable
		if errors.Is(err, cache.ErrNoDelete) {
			status = http.StatusNotImplemented
		}
		adminError(w, status, "purge failed")
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"purged": "key", "key": k.String()})
}

// handleReload reloads policies.yaml. A policy that would lift limits is
// refused (409, with the lifts) unless ?force=1.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	a := s.admin
	if a.o.Reload == nil {
		adminError(w, http.StatusNotFound, "no policies file to reload (the embedded example is in use)")
		return
	}
	force := false
	switch v := r.URL.Query().Get("force"); v {
	case "", "0", "false":
	case "1", "true":
		force = true
	default:
		adminError(w, http.StatusBadRequest, "force must be 1 or 0")
		return
	}
	changed, err := a.o.Reload("admin", force)
	var lifts *policy.LiftsError
	if errors.As(err, &lifts) {
		adminJSON(w, http.StatusConflict, map[string]any{"reloaded": false, "error": err.Error(), "lifts": lifts.Lifts})
		return
	}
	if err != nil {
		adminJSON(w, http.StatusUnprocessableEntity, map[string]any{"reloaded": false, "error": err.Error()})
		return
	}
	adminJSON(w, http.StatusOK, map[string]any{"reloaded": changed, "unchanged": !changed})
}

func (s *Server) handleReloadStatus(w http.ResponseWriter, _ *http.Request) {
	a := s.admin
	if a.o.Status == nil {
		adminError(w, http.StatusNotFound, "no policies file (the embedded example is in use)")
		return
	}
	adminJSON(w, http.StatusOK, a.o.Status())
}
