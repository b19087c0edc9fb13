package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestJSONLRotatesBySizeAndDay(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 11, 27, 23, 59, 0, 0, time.UTC)}
	j, err := NewJSONL(JSONLOptions{Dir: dir, MaxFileBytes: 2 << 10, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 20; i++ { // ~400 B each: several files on the 27th
		if err := j.Write(ctx, []*Record{rec(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.set(c.now().Add(2 * time.Minute)) // the next UTC day
	if err := j.Write(ctx, []*Record{rec(20)}); err != nil {
		t.Fatal(err)
	}
	_ = j.Close()
	files := listDir(t, dir)
	var day1, day2 int
	for _, f := range files {
		switch {
		case strings.HasPrefix(f, "transcripts-2026-11-27."):
			day1++
		case strings.HasPrefix(f, "transcripts-2026-11-28.0.jsonl"):
			day2++
		default:
			t.Fatalf("unexpected file %s", f)
		}
	}
	if day1 < 3 || day2 != 1 {
		t.Fatalf("files %v: want several for the 27th (by size) and one for the 28th", files)
	}
	for _, f := range files {
		st, _ := os.Stat(filepath.Join(dir, f))
		if st.Size() > 2<<10+1024 {
			t.Fatalf("%s is %d bytes, past the size limit by more than a record", f, st.Size())
		}
	}
	// A restart continues the day's last file instead of starting at .0.
	c.set(c.now())
	j2, _ := NewJSONL(JSONLOptions{Dir: dir, MaxFileBytes: 2 << 10, Now: c.now})
	_ = j2.Write(ctx, []*Record{rec(21)})
	_ = j2.Close()
	if got := listDir(t, dir); len(got) != len(files) {
		t.Fatalf("restart opened a new file: %v", got)
	}
}

func TestJSONLMaxFilesAndRecent(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	j, _ := NewJSONL(JSONLOptions{Dir: dir, MaxFileBytes: 2 << 10, MaxFiles: 3, Now: c.now})
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		_ = j.Write(ctx, []*Record{rec(i)})
	}
	if n := len(listDir(t, dir)); n != 3 {
		t.Fatalf("%d files kept, want 3", n)
	}
	got, err := j.Recent(ctx, "u1", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].User != "u1" || !got[0].Start.After(got[1].Start) {
		t.Fatalf("recent: %+v", got)
	}
	if got[0].RequestID != "r000029" { // 29 % 7 == 1: the newest of u1
		t.Fatalf("newest u1 transcript %s, want r000029", got[0].RequestID)
	}
	none, _ := j.Recent(ctx, "u1", time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC), 10)
	if len(none) != 0 {
		t.Fatalf("since tomorrow: %d transcripts", len(none))
	}
}

// TestJSONLSameBytesAsMarshal: a batch written through the reused encoder
// buffer is each record's json.Marshal, one per line, in order (HTML
// characters escaped as Marshal does), and a second batch appends.
func TestJSONLSameBytesAsMarshal(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	j, _ := NewJSONL(JSONLOptions{Dir: dir, NoSync: true, Now: c.now})
	var want []byte
	var batch []*Record
	for i := 0; i < 50; i++ {
		r := rec(i)
		r.Response = "<b>a & b</b> \u2028 \xff"
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		want = append(append(want, b...), '\n')
		batch = append(batch, r)
	}
	if err := j.Write(context.Background(), batch[:30]); err != nil {
		t.Fatal(err)
	}
	if err := j.Write(context.Background(), batch[30:]); err != nil {
		t.Fatal(err)
	}
	_ = j.Close()
	got, err := os.ReadFile(filepath.Join(dir, "transcripts-2026-11-27.0.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file differs from json.Marshal lines:\n got %.300s\nwant %.300s", got, want)
	}
}

// TestJSONLRefusesWhatMarshalRefuses: a record json.Marshal cannot encode
// (a NaN) fails the batch with Marshal's error, as before.
func TestJSONLRefusesWhatMarshalRefuses(t *testing.T) {
	j, _ := NewJSONL(JSONLOptions{Dir: t.TempDir(), NoSync: true})
	defer j.Close()
	bad := rec(1)
	bad.LatencyMs = math.NaN()
	var want *json.UnsupportedValueError
	if err := j.Write(context.Background(), []*Record{rec(0), bad}); !errors.As(err, &want) {
		t.Fatalf("Write = %v, want json.UnsupportedValueError", err)
	}
}

// TestJSONLKeepsCost: a transcript's cost_usd written to the JSONL file
// reads back exactly, and a line written before the column existed reads 0.
func TestJSONLKeepsCost(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	j, _ := NewJSONL(JSONLOptions{Dir: dir, NoSync: true, Now: c.now})
	defer j.Close()
	ctx := context.Background()
	recs := []*Record{rec(0), rec(7), rec(14)}
	recs[0].CostUSD, recs[1].CostUSD = 0.000123, 1.5
	if err := j.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// An older Sluice's line: no cost_usd at all.
	old, _ := json.Marshal(rec(21))
	old = bytes.Replace(old, []byte(`"cost_usd":0,`), nil, 1)
	if bytes.Contains(old, []byte("cost_usd")) {
		t.Fatalf("old line still has cost_usd: %s", old)
	}
	f, err := os.OpenFile(filepath.Join(dir, "transcripts-2026-11-27.0.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(append(old, '\n')); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	got, err := j.Recent(ctx, "u0", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), 10)
	if err != nil {
		t.Fatal(err)
	}
	costs := map[string]float64{}
	for _, r := range got {
		costs[r.RequestID] = r.CostUSD
	}
	want := map[string]float64{"r000000": 0.000123, "r000007": 1.5, "r000014": 0, "r000021": 0}
	if !reflect.DeepEqual(costs, want) {
		t.Fatalf("costs read back %v, want %v", costs, want)
	}
}
