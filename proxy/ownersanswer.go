package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"

	"github.com/valyala/fasthttp"
)

// The answer side of owned mode (owners.go): the ids a create returns
// are recorded for the caller's owner, and lists are filtered to them.

// ownedAnswer finishes an owned-mode exchange whose answer was read whole
// (ctx.Response): records created ids, keeps a list's owned items.
func (s *Server) ownedAnswer(ctx *fasthttp.RequestCtx, x *exchange) {
	if x.own.mode == ownNone || x.upFirst.IsZero() {
		return
	}
	st := ctx.Response.StatusCode()
	if st < 200 || st > 299 {
		return
	}
	body, ok := s.plainAnswer(ctx)
	if !ok {
		if x.own.mode == ownList {
			writeError(ctx, errUpstreamUnreachable, "", "Sluice could not read the provider's list to keep your own objects.")
			return
		}
		s.own.storeErrors.Inc() // not recorded: its id will answer 404
		return
	}
	switch x.own.mode {
	case ownCreate, ownRead:
		var obj map[string]json.RawMessage
		if json.Unmarshal(body, &obj) != nil {
			return
		}
		var ids []string
		if x.own.mode == ownCreate {
			ids = appendString(ids, obj["id"])
		}
		ids = appendDerived(ids, obj)
		s.recordOwned(x, ids)
	case ownList:
		s.filterList(ctx, x, body, false)
	case ownModels:
		if bytes.Contains(body, ftQuoted) {
			s.filterList(ctx, x, body, true)
		}
	}
}

// plainAnswer is the answer body, decoded when the upstream compressed it
// although asked not to (the body then goes out decoded).
func (s *Server) plainAnswer(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	coding := answerCoding(ctx.Response.Header.ContentEncoding())
	if coding == "" {
		if len(ctx.Response.Header.ContentEncoding()) > 0 && !bytes.EqualFold(ctx.Response.Header.ContentEncoding(), identity) {
			return nil, false // a coding Sluice cannot read
		}
		return ctx.Response.Body(), true
	}
	d, err := answerDecoder(coding, bytes.NewReader(ctx.Response.Body()))
	if err != nil {
		return nil, false
	}
	plain, err := io.ReadAll(io.LimitReader(d, decodedAnswerLimit))
	_ = d.Close()
	if err != nil {
		return nil, false
	}
	ctx.Response.Header.Del("Content-Encoding")
	ctx.Response.SetBody(plain)
	return ctx.Response.Body(), true
}

// recordOwned stores ids as x's owner's, counting store failures (the objects
// then answer 404: the safe side).
func (s *Server) recordOwned(x *exchange, ids []string) {
	if len(ids) == 0 {
		return
	}
	if err := s.own.store.Own(context.Background(), x.own.owner, ids...); err != nil {
		s.own.storeErrors.Inc()
		s.log.Error("owner store failing; created objects not recorded (they will answer 404)",
			"ids", len(ids), "error", err)
		return
	}
	s.own.recorded.Add(float64(len(ids)))
}

// appendString appends the JSON string raw holds, if any.
func appendString(ids []string, raw json.RawMessage) []string {
	var v string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &v) == nil && v != "" {
		ids = append(ids, v)
	}
	return ids
}

// appendDerived appends the ids an owned object names (derivedKeys, and an
// upload's file).
func appendDerived(ids []string, obj map[string]json.RawMessage) []string {
	for _, k := range derivedKeys {
		raw := obj[k]
		if len(raw) > 0 && raw[0] == '[' {
			var list []string
			if json.Unmarshal(raw, &list) == nil {
				for _, v := range list {
					if v != "" {
						ids = append(ids, v)
					}
				}
			}
			continue
		}
		ids = appendString(ids, raw)
	}
	if raw := obj["file"]; len(raw) > 0 && raw[0] == '{' {
		var f map[string]json.RawMessage
		if json.Unmarshal(raw, &f) == nil {
			ids = appendString(ids, f["id"])
		}
	}
	return ids
}

// ftQuoted starts a fine-tuned model's id in a JSON answer.
var ftQuoted = []byte(`"ft:`)

// filterList keeps the owner's items of a list answer ({"object":"list",
// "data":[…],"first_id","last_id","has_more"}). first_id becomes the first
// kept item's id (null when none); last_id stays the provider's, the
// cursor of the next page (after=last_id skips nothing); has_more stays
// the provider's: a page may hold fewer items than asked, none at all.
// models: the model listing, which loses only the fine-tuned models
// recorded as other owners'.
func (s *Server) filterList(ctx *fasthttp.RequestCtx, x *exchange, body []byte, models bool) {
	var list map[string]json.RawMessage
	var items []json.RawMessage
	if json.Unmarshal(body, &list) != nil || json.Unmarshal(list["data"], &items) != nil {
		writeError(ctx, errUpstreamUnreachable, "", "Sluice could not read the provider's list to keep your own objects.")
		return
	}
	ids := make([]string, len(items))
	objs := make([]map[string]json.RawMessage, len(items))
	for i, it := range items {
		if json.Unmarshal(it, &objs[i]) == nil {
			if got := appendString(nil, objs[i]["id"]); len(got) == 1 && (!models || strings.HasPrefix(got[0], "ft:")) {
				ids[i] = got[0]
			}
		}
	}
	got, err := s.lookupSome(ids)
	if err != nil {
		s.own.storeErrors.Inc()
		s.own.refused[ownStore].Inc()
		s.log.Error("owner store failing; list refused", "error", err)
		ctx.Response.Header.Del("Content-Encoding")
		writeError(ctx, errLimiterUnavailable, "", "Sluice cannot check who owns these objects now (its store is "+
			"unreachable); retry shortly.")
		return
	}
	kept := make([]json.RawMessage, 0, len(items))
	var derived []string
	for i, it := range items {
		if models && (got[i] == "" || got[i] == x.own.owner) {
			kept = append(kept, it)
			continue
		}
		if ids[i] == "" || got[i] != x.own.owner {
			continue
		}
		kept = append(kept, it)
		derived = appendDerived(derived, objs[i])
	}
	s.own.filtered.Add(float64(len(items) - len(kept)))
	if !models {
		s.recordOwned(x, derived)
	}
	if len(kept) == len(items) {
		return
	}
	list["data"], _ = json.Marshal(kept)
	if _, ok := list["first_id"]; ok {
		list["first_id"] = json.RawMessage("null")
		if len(kept) > 0 {
			list["first_id"], _ = json.Marshal(ids[indexOfKept(ids, got, x.own.owner)])
		}
	}
	out, err := json.Marshal(list)
	if err != nil {
		writeError(ctx, errInternal, "", "Sluice could not write the filtered list.")
		return
	}
	ctx.Response.SetBody(out)
}

// lookupSome returns the owners of ids, "" for the "" ids (not looked up).
func (s *Server) lookupSome(ids []string) ([]string, error) {
	got := make([]string, len(ids))
	var look []string
	var at []int
	for i, id := range ids {
		if id != "" {
			look, at = append(look, id), append(at, i)
		}
	}
	if len(look) == 0 {
		return got, nil
	}
	res := make([]string, len(look))
	if err := s.own.store.Lookup(context.Background(), look, res); err != nil {
		return nil, err
	}
	for j, i := range at {
		got[i] = res[j]
	}
	return got, nil
}

// indexOfKept is the index of the first item owner holds.
func indexOfKept(ids, got []string, owner string) int {
	for i := range ids {
		if ids[i] != "" && got[i] == owner {
			return i
		}
	}
	return 0
}

// ownedEvent records the stored response or chat completion a stream
// creates, from the first event that names its id (a chat chunk's "id", a
// response.created event's response.id); x.own is then done.
func (s *Server) ownedEvent(x *exchange, ev []byte) {
	i := bytes.Index(ev, []byte("data:"))
	if i < 0 {
		return
	}
	data := bytes.TrimSpace(ev[i+len("data:"):])
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	var v struct {
		ID       string `json:"id"`
		Response struct {
			ID string `json:"id"`
		} `json:"response"`
	}
	if len(data) == 0 || data[0] != '{' || json.Unmarshal(data, &v) != nil {
		return
	}
	id := v.ID
	if x.ep == epResponses {
		id = v.Response.ID
	}
	if id == "" {
		return
	}
	s.recordOwned(x, []string{id})
	x.own.mode = ownNone
}
