package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"sluice/policy"
	"sluice/policy/limit"
)

// Owned mode: a key with stored_objects: true and no provider project of its
// own shares the upstream's project with every other such key, so the
// provider alone would let each see the others' files, batches, stored
// responses, vector stores and fine-tuned models. Sluice keeps them apart:
//
//   - every object created through it is recorded with its owner (the key's
//     team; a key without a team owns its objects alone, as "key:ID") in
//     the limiter's store (limit.Owners: Redis beside the buckets, so
//     replicas agree; memory otherwise), 30 days from its last use;
//   - a path that names an object by id (GET/POST/DELETE /v1/files/ID, …)
//     is forwarded only when the caller's owner holds that id; otherwise
//     404 in the provider's shape, never forwarded. So is a request body
//     that names an object (input_file_id, training_file, file_id,
//     previous_response_id, vector_store_ids, …);
//   - a list (GET /v1/files, /v1/batches, …) is read whole and only the
//     owner's items are kept;
//   - a fine-tuned model ("ft:…") recorded as another owner's answers 404
//     model_not_found, for every key without a project of its own;
//     deleting one needs it to be the caller's.
//
// An id Sluice has no record of (made outside Sluice, before owned mode, or
// forgotten after 30 idle days) is nobody's: 404 for everyone. When the
// store fails, the request is refused with 503 whatever on_store_error
// says (allowing would show everyone everything; local records would not
// hold the other replicas' objects) and counted.

// ownMode is what an owned-mode request does with its answer.
type ownMode uint8

const (
	ownNone   ownMode = iota
	ownCreate         // record the new object's id (and ids it names)
	ownList           // keep only the owner's items
	ownRead           // record the ids a read object names (a batch's output file, a job's model)
	ownModels         // drop other owners' fine-tuned models from the model listing
)

// ownCall is an exchange's part in owned mode (exchange.own).
type ownCall struct {
	// owner is the caller's owner ("team:T" or "key:ID"); "" when the
	// request is not in owned mode.
	owner string
	mode  ownMode
	// buffer reports a passthrough answer read whole (a list to filter, a
	// created or read object to take ids from) instead of relayed.
	buffer bool
}

// owners holds the owner records and their metrics.
type owners struct {
	store limit.Owners
	// refused counts requests refused in owned mode, by reason.
	refused [ownReasonCount]prometheus.Counter
	// recorded counts the object ids recorded; filtered the list items
	// removed; storeErrors the failed store calls.
	recorded, filtered, storeErrors prometheus.Counter
}

type ownReason uint8

const (
	ownNotOwner  ownReason = iota // an object by id in the path
	ownReference                  // an object named in the request body
	ownModel                      // another owner's fine-tuned model
	ownStore                      // the store failed
	ownReasonCount
)

var ownReasonLabels = [ownReasonCount]string{"not_owner", "reference", "model", "store_error"}

// newOwners builds the owner records on the limiter's store (or the
// upstream budgets' store; memory without either) and registers the
// metrics.
func newOwners(opts *Options) (*owners, error) {
	var st limit.Store
	if opts.Limiter != nil {
		st, _ = opts.Limiter.Stores()
	} else if opts.BudgetStore != nil {
		st = opts.BudgetStore
	}
	o := &owners{store: limit.OwnersFor(st)}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_stored_objects_refused_total",
		Help: "Requests refused in owned mode: another owner's object by id (not_owner), in the body (reference), another owner's fine-tuned model (model), or the owner store failing (store_error).",
	}, []string{"reason"})
	for i, l := range ownReasonLabels {
		o.refused[i] = refused.WithLabelValues(l)
	}
	o.recorded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_stored_objects_recorded_total",
		Help: "Ids of stored objects recorded with their owner (created or named by an owned object).",
	})
	o.filtered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_stored_objects_filtered_total",
		Help: "Items removed from list answers because another owner (or no one Sluice knows) holds them.",
	})
	o.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sluice_stored_objects_store_errors_total",
		Help: "Failed calls to the store of stored objects' owners (requests refused with 503, or ids not recorded).",
	})
	for _, c := range []prometheus.Collector{refused, o.recorded, o.filtered, o.storeErrors} {
		if err := opts.Registry.Register(c); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// ownerOf is the owner of a key's objects: its team, or the key alone.
func ownerOf(key *policy.Key) string {
	if key.Team != "" {
		return "team:" + key.Team
	}
	return "key:" + key.ID
}

// ownedMode reports a key whose stored objects Sluice keeps apart.
func ownedMode(key *policy.Key) bool { return key.StoredObjects && key.Project == "" }

// objectPath is what a stored-object path names.
type objectPath struct {
	kind string // the object's name in errors ("File", "Batch", …)
	id   string // the object named, "" for the collection itself
	// collection reports the collection path itself (list or create).
	collection bool
	// free reports a path under a stored-object prefix that names no
	// object (fine-tuning graders).
	free bool
	// derived reports an object whose reads name other objects to record
	// (a batch's files, a fine-tuning job's model, an upload's file).
	derived bool
}

// objectKinds names the collections' objects as the provider's errors do.
var objectKinds = map[string]string{
	"files": "File", "uploads": "Upload", "batches": "Batch", "vector_stores": "VectorStore",
	"assistants": "Assistant", "threads": "Thread", "containers": "Container", "conversations": "Conversation",
	"evals": "Eval", "responses": "Response", "chat/completions": "ChatCompletion",
	"fine_tuning/jobs": "FineTuningJob", "fine_tuning/checkpoints": "Checkpoint",
}

// parseObjectPath splits a stored-object path (trailing slashes removed)
// into its collection and object id.
func parseObjectPath(path []byte) objectPath {
	rest := strings.TrimPrefix(string(path), "/v1/")
	segs := strings.Split(rest, "/")
	coll := segs[0]
	n := 1
	if (coll == "chat" || coll == "fine_tuning") && len(segs) > 1 {
		coll, n = coll+"/"+segs[1], 2
	}
	if strings.HasPrefix(coll, "fine_tuning/alpha") {
		return objectPath{free: true}
	}
	kind, ok := objectKinds[coll]
	if !ok {
		kind = "Object"
	}
	p := objectPath{kind: kind}
	if len(segs) == n {
		p.collection = true
		p.derived = coll == "fine_tuning/jobs"
		return p
	}
	p.id = segs[n]
	if coll == "threads" && p.id == "runs" && len(segs) == n+1 {
		// POST /v1/threads/runs creates a thread and runs it.
		return objectPath{kind: kind, collection: true}
	}
	p.derived = coll == "batches" || coll == "fine_tuning/jobs" || coll == "uploads"
	return p
}

// refKeys are the request fields that name stored objects.
var refKeys = map[string]bool{
	"input_file_id": true, "training_file": true, "validation_file": true, "file_id": true, "file_ids": true,
	"previous_response_id": true, "vector_store_ids": true, "vector_store_id": true, "thread_id": true,
	"assistant_id": true, "conversation": true,
}

// refHints are quick byte checks: a body that holds none of them names no
// object, and is not parsed. An escape (`\u`) may spell any name, so a body
// with one is always parsed.
var refHints = [][]byte{[]byte(`_id"`), []byte(`_ids"`), []byte(`_file"`), []byte(`"conversation"`), []byte(`"ft:`),
	[]byte(`\u`)}

// derivedKeys are the fields of an owned object that name other objects
// made for its owner (a batch's output and error files, a fine-tuning job's
// model and result files, a run's thread).
var derivedKeys = []string{"output_file_id", "error_file_id", "fine_tuned_model", "result_files", "thread_id"}

// owned is the stored-objects step of the pipeline (after read): the
// objects a request names must be its owner's (ownedRequest for the JSON
// endpoints, ownedAccess for the others). false: answered (404, 503).
func (s *Server) owned(ctx *fasthttp.RequestCtx, x *exchange, key *policy.Key, f *reqFields) bool {
	if x.ep.parsesBody() {
		return s.ownedRequest(ctx, x, key, x.body, f.model)
	}
	return s.ownedAccess(ctx, x, key)
}

// ownedAccess checks a models or passthrough request of key in owned mode
// (and a fine-tuned model by name for every key without a project): an
// object by id or named in the body must be the caller's. It prepares
// x.own for the answer. false: answered (404, 503).
func (s *Server) ownedAccess(ctx *fasthttp.RequestCtx, x *exchange, key *policy.Key) bool {
	if s.own == nil || key.Project != "" {
		return true
	}
	owner := ownerOf(key)
	if x.ep == epModels {
		x.own.owner, x.own.mode = owner, ownModels // read whole already
		return true
	}
	if x.ep == epModel {
		id := string(ctx.Path()[len(prefixModels):])
		if !strings.HasPrefix(id, "ft:") {
			return true
		}
		if ctx.IsDelete() { // deleting needs the model to be the caller's
			return s.ownedIDs(ctx, owner, []string{id}, ownModel, "", true)
		}
		return s.ownedIDs(ctx, owner, []string{id}, ownModel, "", false)
	}
	if x.ep != epPassthrough || !ownedMode(key) || !storedObjectPath(ctx.Path()) {
		return true
	}
	p := parseObjectPath(ctx.Path())
	if p.free {
		return true
	}
	if p.id != "" && !s.ownedIDs(ctx, owner, []string{p.id}, ownNotOwner, p.kind, true) {
		return false
	}
	if ctx.IsPost() && !s.ownedRefs(ctx, owner, ctx.PostBody()) {
		return false
	}
	x.own.owner = owner
	switch {
	case p.collection && ctx.IsGet():
		x.own.mode = ownList
	case p.collection && ctx.IsPost():
		x.own.mode = ownCreate
	case p.derived:
		x.own.mode = ownRead
	}
	if x.own.mode != ownNone {
		// The answer is read here: ask for it plain.
		x.own.buffer = true
		ctx.Request.Header.SetBytesKV(acceptEncoding, identity)
	}
	return true
}

// ownedRequest checks a JSON endpoint's request of key: a fine-tuned model
// of another owner answers 404 model_not_found (every key without a
// project); in owned mode the objects the body names must be the caller's,
// and a stored response or chat completion is recorded from the answer.
// false: answered.
func (s *Server) ownedRequest(ctx *fasthttp.RequestCtx, x *exchange, key *policy.Key, body, model []byte) bool {
	if s.own == nil || key.Project != "" {
		return true
	}
	if bytes.HasPrefix(model, ftPrefix) && !s.ownedIDs(ctx, ownerOf(key), []string{string(model)}, ownModel, "", false) {
		return false
	}
	if !ownedMode(key) {
		return true
	}
	owner := ownerOf(key)
	if !s.ownedRefs(ctx, owner, body) {
		return false
	}
	// A response is stored unless store is false; a chat completion only
	// when store is true. Recording one that was not stored costs a key.
	if x.ep == epResponses || x.ep == epChat && bytes.Contains(body, storeKey) && topLevelTrue(body, "store") {
		x.own.owner, x.own.mode = owner, ownCreate
	}
	return true
}

// storeKey is the request field that stores a chat completion.
var storeKey = []byte(`"store"`)

// ftPrefix starts the names of fine-tuned models.
var ftPrefix = []byte("ft:")

// topLevelTrue reports whether body's top-level field name is true.
func topLevelTrue(body []byte, name string) bool {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return false
	}
	return bytes.Equal(bytes.TrimSpace(top[name]), []byte("true"))
}

// ownedRefs checks the objects a JSON body names (refKeys, and "model"
// when it is a fine-tuned one). A body that is not JSON names none.
func (s *Server) ownedRefs(ctx *fasthttp.RequestCtx, owner string, body []byte) bool {
	if ids := formRefs(ctx, body); len(ids) > 0 {
		return s.ownedIDs(ctx, owner, ids, ownReference, "", true)
	}
	if len(body) == 0 || body[0] != '{' {
		return true
	}
	hinted := false
	for _, h := range refHints {
		if bytes.Contains(body, h) {
			hinted = true
			break
		}
	}
	if !hinted {
		return true
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return true // the upstream answers a malformed body with its own 400
	}
	var ids, models []string
	collectRefs(v, "", &ids, &models)
	if len(ids) > 0 && !s.ownedIDs(ctx, owner, ids, ownReference, "", true) {
		return false
	}
	return len(models) == 0 || s.ownedIDs(ctx, owner, models, ownModel, "", false)
}

// maxFormRef bounds the bytes of a form field read as an object id.
const maxFormRef = 1024

// formRefs returns the object ids a multipart/form-data body names in
// fields of refKeys (a container file made from a file_id); none for other
// bodies. A body that does not parse names none: the upstream refuses it.
func formRefs(ctx *fasthttp.RequestCtx, body []byte) []string {
	mt, params, err := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil
	}
	var ids []string
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return ids
		}
		if refKeys[p.FormName()] {
			v, _ := io.ReadAll(io.LimitReader(p, maxFormRef))
			if id := strings.TrimSpace(string(v)); id != "" {
				ids = append(ids, id)
			}
		}
		_ = p.Close()
	}
}

// collectRefs appends the object ids v names under refKeys to ids, and
// fine-tuned model names to models.
func collectRefs(v any, key string, ids, models *[]string) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			collectRefs(e, k, ids, models)
		}
	case []any:
		for _, e := range t {
			collectRefs(e, key, ids, models)
		}
	case string:
		switch {
		case key == "model" && strings.HasPrefix(t, "ft:"):
			*models = append(*models, t)
		case refKeys[key] && t != "":
			*ids = append(*ids, t)
		}
	}
}

// ownedIDs answers the request and returns false unless every id is
// owner's. strict: an id with no record is refused too (objects); else only
// one recorded as another owner's (fine-tuned models by name). kind names
// the object in the error ("" with reason ownModel: model_not_found).
func (s *Server) ownedIDs(ctx *fasthttp.RequestCtx, owner string, ids []string, reason ownReason, kind string, strict bool) bool {
	got, err := s.lookupSome(ids)
	if err != nil {
		s.own.storeErrors.Inc()
		s.own.refused[ownStore].Inc()
		s.log.Error("owner store failing; stored-object request refused", "request_id",
			string(ctx.Response.Header.Peek("X-Request-Id")), "error", err)
		writeError(ctx, errLimiterUnavailable, "", "Sluice cannot check who owns this object now (its store is "+
			"unreachable); retry shortly.")
		return false
	}
	for i, o := range got {
		if o == owner || o == "" && !strict {
			continue
		}
		s.own.refused[reason].Inc()
		switch {
		case reason == ownModel:
			writeModelNotFound(ctx, ids[i])
		case kind == "":
			writeError(ctx, errObjectNotFound, "", "No such object: "+ids[i])
		default:
			writeError(ctx, errObjectNotFound, "id", "No such "+kind+" object: "+ids[i])
		}
		return false
	}
	return true
}
