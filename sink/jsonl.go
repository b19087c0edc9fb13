package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// JSONLOptions configure a JSONL writer.
type JSONLOptions struct {
	// Dir holds the files "transcripts-YYYY-MM-DD.N.jsonl" (UTC day, N from
	// 0 as files fill). Created if missing. Required.
	Dir string
	// MaxFileBytes starts the next file of the day once a file passes it.
	// Default 100 MiB.
	MaxFileBytes int64
	// MaxFiles keeps at most this many files, removing the oldest. Default 0:
	// keep all.
	MaxFiles int
	// NoSync skips the fsync after each batch. Default false.
	NoSync bool
	// Now returns the current time, for tests. Default time.Now.
	Now func() time.Time
}

// DefaultJSONLMaxFileBytes is JSONLOptions.MaxFileBytes's default.
const DefaultJSONLMaxFileBytes = 100 << 20

// JSONL writes records as JSON lines to files rotated by size and UTC day:
// the embedded default when no ClickHouse is configured.
type JSONL struct {
	opts JSONLOptions

	// mu protects the open file (Write and Recent may run concurrently).
	mu   sync.Mutex
	f    *os.File
	day  string
	n    int
	size int64
	// buf holds a batch's encoded rows (Write, under mu); reused across
	// batches.
	buf []byte
	// y gives way every 64 rows a batch encodes (made by the first Write).
	y      *yielder
	yReady bool
}

// NewJSONL opens the directory; the first Write opens the day's file.
func NewJSONL(opts JSONLOptions) (*JSONL, error) {
	if opts.Dir == "" {
		return nil, errors.New("sink: jsonl dir is required")
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultJSONLMaxFileBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sink: jsonl dir: %w", err)
	}
	return &JSONL{opts: opts}, nil
}

// jsonlName is the file name for a day and index.
func jsonlName(day string, n int) string {
	return "transcripts-" + day + "." + strconv.Itoa(n) + ".jsonl"
}

// parseJSONLName returns the day and index of a transcript file name.
func parseJSONLName(name string) (day string, n int, ok bool) {
	rest, found := strings.CutPrefix(name, "transcripts-")
	if !found {
		return "", 0, false
	}
	rest, found = strings.CutSuffix(rest, ".jsonl")
	if !found {
		return "", 0, false
	}
	day, idx, found := strings.Cut(rest, ".")
	if !found || len(day) != 10 {
		return "", 0, false
	}
	n, err := strconv.Atoi(idx)
	if err != nil {
		return "", 0, false
	}
	return day, n, true
}

// files lists the transcript files, oldest first.
func (j *JSONL) files() ([]string, error) {
	entries, err := os.ReadDir(j.opts.Dir)
	if err != nil {
		return nil, err
	}
	type f struct {
		day  string
		n    int
		name string
	}
	var fs []f
	for _, e := range entries {
		if day, n, ok := parseJSONLName(e.Name()); ok {
			fs = append(fs, f{day, n, e.Name()})
		}
	}
	sort.Slice(fs, func(a, b int) bool {
		if fs[a].day != fs[b].day {
			return fs[a].day < fs[b].day
		}
		return fs[a].n < fs[b].n
	})
	out := make([]string, len(fs))
	for i, x := range fs {
		out[i] = filepath.Join(j.opts.Dir, x.name)
	}
	return out, nil
}

// open makes sure the file for day is open, rotating by day and size.
func (j *JSONL) open(day string) error {
	if j.f != nil && j.day == day && j.size < j.opts.MaxFileBytes {
		return nil
	}
	if j.f != nil {
		_ = j.f.Close()
		j.f = nil
	}
	n := 0
	if j.day == day {
		n = j.n + 1
	} else {
		// A restart continues the day's last file.
		files, err := j.files()
		if err != nil {
			return err
		}
		for _, p := range files {
			if d, i, _ := parseJSONLName(filepath.Base(p)); d == day && i >= n {
				n = i
			}
		}
	}
	for {
		f, err := os.OpenFile(filepath.Join(j.opts.Dir, jsonlName(day, n)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("sink: jsonl: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return err
		}
		if st.Size() >= j.opts.MaxFileBytes {
			_ = f.Close()
			n++
			continue
		}
		j.f, j.day, j.n, j.size = f, day, n, st.Size()
		break
	}
	return j.prune()
}

// prune removes the oldest files beyond MaxFiles.
func (j *JSONL) prune() error {
	if j.opts.MaxFiles <= 0 {
		return nil
	}
	files, err := j.files()
	if err != nil {
		return err
	}
	for len(files) > j.opts.MaxFiles {
		_ = os.Remove(files[0])
		files = files[1:]
	}
	return nil
}

// jsonlChunk is how many encoded bytes Write gathers before one write
// call: a batch goes to the file in a few large writes, not one per row.
const jsonlChunk = 1 << 20

// Write appends recs, one JSON object per line, then fsyncs. Rows are
// encoded into one reused buffer and written in chunks of about
// jsonlChunk bytes; a file that fills mid-batch gets its rows before the
// next one opens. The day is the batch's write time.
func (j *JSONL) Write(_ context.Context, recs []*Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	day := j.opts.Now().UTC().Format("2006-01-02")
	defer func() {
		if cap(j.buf) > 4*jsonlChunk {
			j.buf = nil // a huge batch does not pin its buffer
		}
		j.buf = j.buf[:0]
	}()
	j.buf = j.buf[:0]
	if !j.yReady {
		j.y, j.yReady = newYielder(), true
	}
	written, pending := 0, 0 // rows in the file; rows in buf
	flush := func() error {
		if len(j.buf) == 0 {
			return nil
		}
		if _, err := j.f.Write(j.buf); err != nil {
			return fmt.Errorf("sink: jsonl write (%d of %d rows written): %w", written, len(recs), err)
		}
		written += pending
		pending = 0
		j.buf = j.buf[:0]
		return nil
	}
	for i, r := range recs {
		j.y.every(i + 1)
		if j.f == nil || j.day != day || j.size >= j.opts.MaxFileBytes {
			if err := flush(); err != nil {
				return err
			}
			if err := j.open(day); err != nil {
				return err
			}
		}
		n := len(j.buf)
		b, ok := appendRecordJSON(j.buf, r) // json.Marshal's bytes, without reflection
		if !ok {
			// A value Marshal refuses (a NaN, a year past 9999): its error.
			m, err := json.Marshal(r)
			if err != nil {
				j.buf = j.buf[:n]
				return err
			}
			b = append(b[:n], m...)
		}
		j.buf = append(b, '\n')
		j.size += int64(len(j.buf) - n)
		pending++
		if len(j.buf) >= jsonlChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if !j.opts.NoSync && j.f != nil {
		if err := j.f.Sync(); err != nil {
			return fmt.Errorf("sink: jsonl fsync: %w", err)
		}
	}
	return nil
}

// Close closes the open file.
func (j *JSONL) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.y.close()
	j.y, j.yReady = nil, false
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// Recent scans the files from newest to oldest for user's transcripts
// since since, newest first, at most limit. Files older than since's day
// are not read.
func (j *JSONL) Recent(_ context.Context, user string, since time.Time, limit int) ([]*Record, error) {
	j.mu.Lock()
	files, err := j.files()
	j.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sinceDay := since.UTC().Format("2006-01-02")
	var out []*Record
	for i := len(files) - 1; i >= 0; i-- {
		if d, _, _ := parseJSONLName(filepath.Base(files[i])); d < sinceDay {
			break
		}
		recs, err := readJSONL(files[i], user, since)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Start.After(out[b].Start) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func readJSONL(path, user string, since time.Time) ([]*Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var out []*Record
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 1 {
			var r Record
			if json.Unmarshal(line, &r) == nil && r.User == user && !r.Start.Before(since) {
				out = append(out, &r)
			}
		}
		if err != nil {
			return out, nil
		}
	}
}
