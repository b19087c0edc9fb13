package fakeai

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxKeptFileBytes bounds the bytes of one uploaded file the fake keeps to
// answer GET /v1/files/ID/content; longer files keep their first bytes.
const maxKeptFileBytes = 1 << 20

// objects are the fake's stored objects: files, batches and fine-tuning
// jobs, kept in memory in creation order like the real API's (which lists
// them newest first).
type objects struct {
	mu      sync.Mutex
	files   []*storedFile
	batches []*batchObject
	jobs    []*jobObject
}

type storedFile struct {
	obj     fileObject
	content []byte
	deleted bool
}

type batchObject struct {
	ID               string          `json:"id"`
	Object           string          `json:"object"`
	Endpoint         string          `json:"endpoint"`
	InputFileID      string          `json:"input_file_id"`
	CompletionWindow string          `json:"completion_window"`
	Status           string          `json:"status"`
	OutputFileID     *string         `json:"output_file_id"`
	ErrorFileID      *string         `json:"error_file_id"`
	CreatedAt        int64           `json:"created_at"`
	Metadata         json.RawMessage `json:"metadata"`
}

type jobObject struct {
	modelDeleted bool

	ID             string   `json:"id"`
	Object         string   `json:"object"`
	Model          string   `json:"model"`
	TrainingFile   string   `json:"training_file"`
	Status         string   `json:"status"`
	FineTunedModel *string  `json:"fine_tuned_model"`
	ResultFiles    []string `json:"result_files"`
	CreatedAt      int64    `json:"created_at"`
}

// listPage is the real API's cursor page.
type listPage struct {
	Object  string  `json:"object"`
	Data    []any   `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

// page answers a list of ids (oldest first) with the query's after, limit
// (default def, 1 to max) and order (desc unless "asc").
func (c *call) page(ids []string, items []any, def, maxLimit int) {
	q := c.r.URL.Query()
	limit := def
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			c.invalid("limit", "", "Invalid 'limit': expected an integer between 1 and "+strconv.Itoa(maxLimit)+".")
			return
		}
		limit = n
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = len(ids) - 1 - i
	}
	if q.Get("order") == "asc" {
		for i := range order {
			order[i] = i
		}
	}
	start := 0
	if after := q.Get("after"); after != "" {
		for i, j := range order {
			if ids[j] == after {
				start = i + 1
			}
		}
	}
	p := listPage{Object: "list", Data: []any{}}
	for _, j := range order[start:] {
		if len(p.Data) == limit {
			p.HasMore = true
			break
		}
		p.Data = append(p.Data, items[j])
		id := ids[j]
		if p.FirstID == nil {
			p.FirstID = &id
		}
		p.LastID = &id
	}
	c.writeJSON(http.StatusOK, &p)
}

// notFound answers 404 as the real API does for an unknown object id.
func (c *call) notFound(kind, id string) {
	c.fail(http.StatusNotFound, typeInvalidRequest, "", "id", "No such "+kind+" object: "+id)
}

// storeFile keeps an uploaded file (files.go).
func (s *Server) storeFile(f fileObject, content []byte) {
	s.objs.mu.Lock()
	s.objs.files = append(s.objs.files, &storedFile{obj: f, content: content})
	s.objs.mu.Unlock()
}

// file returns the live file id; the caller holds s.objs.mu.
func (s *Server) file(id string) *storedFile {
	for _, f := range s.objs.files {
		if f.obj.ID == id && !f.deleted {
			return f
		}
	}
	return nil
}

// fileRoutes answers GET /v1/files, GET and DELETE /v1/files/ID and GET
// /v1/files/ID/content; false for other paths.
func (c *call) fileRoutes(method, path string) bool {
	s := c.s
	rest, ok := strings.CutPrefix(path, "/v1/files")
	if !ok {
		return false
	}
	s.objs.mu.Lock()
	defer s.objs.mu.Unlock()
	switch {
	case rest == "" && method == http.MethodGet:
		var ids []string
		var items []any
		purpose := c.r.URL.Query().Get("purpose")
		for _, f := range s.objs.files {
			if !f.deleted && (purpose == "" || f.obj.Purpose == purpose) {
				ids, items = append(ids, f.obj.ID), append(items, f.obj)
			}
		}
		c.page(ids, items, 10000, 10000)
	case strings.Count(rest, "/") == 1 && (method == http.MethodGet || method == http.MethodDelete):
		id := rest[1:]
		f := s.file(id)
		if f == nil {
			c.notFound("File", id)
			return true
		}
		if method == http.MethodDelete {
			f.deleted = true
			c.writeJSON(http.StatusOK, map[string]any{"id": id, "object": "file", "deleted": true})
			return true
		}
		c.writeJSON(http.StatusOK, f.obj)
	case strings.HasSuffix(rest, "/content") && strings.Count(rest, "/") == 2 && method == http.MethodGet:
		id := rest[1 : len(rest)-len("/content")]
		f := s.file(id)
		if f == nil {
			c.notFound("File", id)
			return true
		}
		c.w.Header().Set("Content-Type", "application/octet-stream")
		c.w.WriteHeader(http.StatusOK)
		_, _ = c.w.Write(f.content)
	default:
		return false
	}
	return true
}

// objectRequest decodes the body of a create call into req, then checks
// that each named parameter's value (from values, read after decoding) is
// set and that the file named by fileParam is stored. It reports whether
// the request may go on; otherwise it answered the API's error.
func (c *call) objectRequest(req any, fileParam string, values func() []string, names ...string) bool {
	if !c.decode(req) {
		return false
	}
	vs := values()
	for i, name := range names {
		if vs[i] == "" {
			c.missingParam(name)
			return false
		}
	}
	if id := vs[slices.Index(names, fileParam)]; c.s.file(id) == nil {
		c.invalid(fileParam, "", "No such File object: "+id)
		return false
	}
	return true
}

// pageOf answers a list of stored objects (oldest first) as page does,
// 20 by default, at most 100.
func pageOf[T any](c *call, objs []T, id func(T) string) {
	ids, items := make([]string, len(objs)), make([]any, len(objs))
	for i, o := range objs {
		ids[i], items[i] = id(o), o
	}
	c.page(ids, items, 20, 100)
}

// batchRoutes answers POST and GET /v1/batches, GET /v1/batches/ID and POST
// /v1/batches/ID/cancel. A batch completes at once: its output file is
// stored with it.
func (c *call) batchRoutes(method, path string) bool {
	s := c.s
	rest, ok := strings.CutPrefix(path, "/v1/batches")
	if !ok {
		return false
	}
	s.objs.mu.Lock()
	defer s.objs.mu.Unlock()
	switch {
	case rest == "" && method == http.MethodPost:
		var req struct {
			InputFileID      string          `json:"input_file_id"`
			Endpoint         string          `json:"endpoint"`
			CompletionWindow string          `json:"completion_window"`
			Metadata         json.RawMessage `json:"metadata"`
		}
		if !c.objectRequest(&req, "input_file_id", func() []string { return []string{req.InputFileID, req.Endpoint, req.CompletionWindow} },
			"input_file_id", "endpoint", "completion_window") {
			return true
		}
		now := time.Now().Unix()
		out := fileObject{ID: newID("file-", 22), Object: "file", CreatedAt: now, ExpiresAt: jsonNull,
			Filename: "batch_output.jsonl", Purpose: "batch_output", Status: "processed", StatusDetails: jsonNull}
		s.objs.files = append(s.objs.files, &storedFile{obj: out})
		if req.Metadata == nil {
			req.Metadata = jsonNull
		}
		b := &batchObject{ID: newID("batch_", 24), Object: "batch", Endpoint: req.Endpoint, InputFileID: req.InputFileID,
			CompletionWindow: req.CompletionWindow, Status: "completed", OutputFileID: &out.ID, CreatedAt: now,
			Metadata: req.Metadata}
		s.objs.batches = append(s.objs.batches, b)
		c.writeJSON(http.StatusOK, b)
	case rest == "" && method == http.MethodGet:
		pageOf(c, s.objs.batches, func(b *batchObject) string { return b.ID })
	case strings.Count(rest, "/") >= 1:
		parts := strings.Split(rest[1:], "/")
		var b *batchObject
		for _, x := range s.objs.batches {
			if x.ID == parts[0] {
				b = x
			}
		}
		switch {
		case len(parts) == 1 && method == http.MethodGet:
		case len(parts) == 2 && parts[1] == "cancel" && method == http.MethodPost:
		default:
			return false
		}
		if b == nil {
			c.notFound("Batch", parts[0])
			return true
		}
		c.writeJSON(http.StatusOK, b)
	default:
		return false
	}
	return true
}

// jobRoutes answers POST and GET /v1/fine_tuning/jobs and GET
// /v1/fine_tuning/jobs/ID. A job succeeds at once: its model is
// "ft:BASE:fakeai::JOBSUFFIX".
func (c *call) jobRoutes(method, path string) bool {
	s := c.s
	rest, ok := strings.CutPrefix(path, "/v1/fine_tuning/jobs")
	if !ok {
		return false
	}
	s.objs.mu.Lock()
	defer s.objs.mu.Unlock()
	switch {
	case rest == "" && method == http.MethodPost:
		var req struct {
			Model        string `json:"model"`
			TrainingFile string `json:"training_file"`
		}
		if !c.objectRequest(&req, "training_file", func() []string { return []string{req.Model, req.TrainingFile} },
			"model", "training_file") {
			return true
		}
		id := newID("ftjob-", 24)
		model := "ft:" + req.Model + ":fakeai::" + id[len("ftjob-"):len("ftjob-")+8]
		j := &jobObject{ID: id, Object: "fine_tuning.job", Model: req.Model, TrainingFile: req.TrainingFile,
			Status: "succeeded", FineTunedModel: &model, ResultFiles: []string{}, CreatedAt: time.Now().Unix()}
		s.objs.jobs = append(s.objs.jobs, j)
		c.writeJSON(http.StatusOK, j)
	case rest == "" && method == http.MethodGet:
		pageOf(c, s.objs.jobs, func(j *jobObject) string { return j.ID })
	case strings.Count(rest, "/") == 1 && method == http.MethodGet:
		for _, j := range s.objs.jobs {
			if j.ID == rest[1:] {
				c.writeJSON(http.StatusOK, j)
				return true
			}
		}
		c.notFound("FineTuningJob", rest[1:])
	default:
		return false
	}
	return true
}

// fineTunedModels are the models of the succeeded jobs not deleted.
func (s *Server) fineTunedModels() []modelObject {
	s.objs.mu.Lock()
	defer s.objs.mu.Unlock()
	var out []modelObject
	for _, j := range s.objs.jobs {
		if j.FineTunedModel != nil && !j.modelDeleted {
			out = append(out, modelObject{ID: *j.FineTunedModel, Object: "model", Created: j.CreatedAt, OwnedBy: "user-fakeai"})
		}
	}
	return out
}

// deleteModel answers DELETE /v1/models/ID: a fine-tuned model is deleted,
// any other is the real API's 404 (or 403 for the provider's own models).
func (c *call) deleteModel(id string) {
	s := c.s
	s.objs.mu.Lock()
	defer s.objs.mu.Unlock()
	for _, j := range s.objs.jobs {
		if j.FineTunedModel != nil && *j.FineTunedModel == id && !j.modelDeleted {
			j.modelDeleted = true
			c.writeJSON(http.StatusOK, map[string]any{"id": id, "object": "model", "deleted": true})
			return
		}
	}
	c.fail(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model", "The model '"+id+"' does not exist")
}
