package sink

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chWriter connects to the ClickHouse that scripts/services.sh started
// (SLUICE_TEST_CLICKHOUSE_ADDR), in a database of the test's own, dropped
// at the end; it skips the test when none was started.
func chWriter(t testing.TB) *ClickHouse {
	t.Helper()
	if testing.Short() {
		t.Skip("needs ClickHouse: skipped under -short")
	}
	addr := os.Getenv("SLUICE_TEST_CLICKHOUSE_ADDR")
	if addr == "" {
		t.Skip("SLUICE_TEST_CLICKHOUSE_ADDR is empty: no ClickHouse (scripts/services.sh start_clickhouse)")
	}
	db := fmt.Sprintf("sluice_test_%d", time.Now().UnixNano())
	c, err := NewClickHouse(ClickHouseOptions{Addr: addr, Database: db})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db)
		_ = c.Close()
	})
	return c
}

func chCount(t testing.TB, c *ClickHouse, query string) uint64 {
	t.Helper()
	var n uint64
	if err := c.Conn().QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestClickHouseCreatesTableAndWrites(t *testing.T) {
	c := chWriter(t)
	ctx := context.Background()
	if err := c.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	var ddl string
	if err := c.Conn().QueryRow(ctx, "SHOW CREATE TABLE "+c.Table()).Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ddl, "ReplacingMergeTree") {
		t.Fatalf("table engine: %s", ddl)
	}
	if Major(c.Version()) < ModernMajor && strings.Contains(ddl, "DateTime64") {
		t.Fatalf("old server %s got modern DDL", c.Version())
	}
	recs := batchOf(0, 1000)
	recs[0].Stream, recs[0].ClientGone, recs[0].Retries, recs[0].FirstToken = true, true, 2, recs[0].Start.Add(time.Millisecond)
	recs[0].ErrorType, recs[0].CacheStatus, recs[0].Response = "server_error", "miss", "héllo \"quoted\"\n"
	recs[0].CostUSD, recs[7].CostUSD = 0.000123, 1.5 // both u0's
	if err := c.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if n := chCount(t, c, "SELECT count() FROM "+c.Table()); n != 1000 {
		t.Fatalf("%d rows, want 1000", n)
	}
	got, err := c.Recent(ctx, recs[0].User, recs[0].Start.Add(-time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, sent := range []*Record{recs[0], recs[7], recs[14]} {
		var back *Record
		for _, r := range got {
			if r.RequestID == sent.RequestID {
				back = r
			}
		}
		if back == nil {
			t.Fatalf("record %s not read back (%d rows for %s)", sent.RequestID, len(got), sent.User)
		}
		want := *sent
		// 18.16 keeps whole seconds; the _ms columns carry the durations.
		want.Start, want.End, want.FirstToken = want.Start.Truncate(time.Second), want.End.Truncate(time.Second), want.FirstToken.Truncate(time.Second)
		if Major(c.Version()) >= ModernMajor {
			want = *sent
		}
		if !reflect.DeepEqual(*back, want) {
			t.Fatalf("read back\n%+v\nwant\n%+v", *back, want)
		}
		if back.CostUSD != sent.CostUSD {
			t.Fatalf("%s: cost_usd read back %v, want exactly %v", sent.RequestID, back.CostUSD, sent.CostUSD)
		}
	}
}

// oldDDL is the table an older Sluice created: DDL without the columns
// added since (AddedColumns).
func oldDDL(t *testing.T, version, table string) string {
	t.Helper()
	ddl := DDL(version, table, 0)
	for _, col := range AddedColumns {
		re := regexp.MustCompile(`(?m)^  ` + col.Name + ` .*\n`)
		if !re.MatchString(ddl) {
			t.Fatalf("DDL for %s has no line for %s:\n%s", version, col.Name, ddl)
		}
		ddl = re.ReplaceAllString(ddl, "")
	}
	if strings.Contains(ddl, "cost_usd") {
		t.Fatalf("old DDL still has cost_usd:\n%s", ddl)
	}
	return ddl
}

// TestClickHouseAddsCostColumnToOldTable: a table created by a Sluice
// without cost_usd, holding a row, gains the column when the sink starts;
// the old row reads 0 and new rows their cost, and a second start (the
// column there already) changes nothing.
func TestClickHouseAddsCostColumnToOldTable(t *testing.T) {
	c := chWriter(t)
	ctx := context.Background()
	var version string
	if err := c.Conn().QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn().Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+c.opts.Database); err != nil {
		t.Fatal(err)
	}
	if err := c.Conn().Exec(ctx, oldDDL(t, version, c.Table())); err != nil {
		t.Fatal(err)
	}
	old := rec(0)
	oldCols := slices.DeleteFunc(slices.Clone(Columns), func(s string) bool { return s == "cost_usd" })
	batch, err := c.Conn().PrepareBatch(ctx, "INSERT INTO "+c.Table()+" ("+strings.Join(oldCols, ", ")+")")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(old.RequestID, old.UpstreamRequestID, old.Start, time.Unix(0, 0), old.End, old.KeyID, old.User,
		old.Team, old.Tier, old.Endpoint, old.ModelRequested, old.Model, old.Upstream, uint8(0), old.Request, old.Response, old.FinishReason,
		old.PromptTokens, old.CompletionTokens, old.TotalTokens, old.EstimatedTokens, uint16(old.Status), old.ErrorType,
		old.LatencyMs, old.TTFTMs, old.QueueWaitMs, old.CacheStatus, uint16(0), uint8(0), old.UserAgent); err != nil {
		t.Fatalf("append to the old table's batch: %v", err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("insert into the old table: %v", err)
	}
	if has, err := c.hasColumn(ctx, c.opts.Table, "cost_usd"); err != nil || has {
		t.Fatalf("old table has cost_usd: %v, %v", has, err)
	}

	recs := []*Record{rec(7), rec(14)}
	recs[0].CostUSD, recs[1].CostUSD = 0.000123, 1.5
	if err := c.Write(ctx, recs); err != nil { // Ensure adds the column first
		t.Fatal(err)
	}
	var ddl string
	if err := c.Conn().QueryRow(ctx, "SHOW CREATE TABLE "+c.Table()).Scan(&ddl); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`estimated_tokens Int64[^,]*,\s*cost_usd Float64`).MatchString(ddl) {
		t.Fatalf("cost_usd not added after estimated_tokens:\n%s", ddl)
	}
	got, err := c.Recent(ctx, "u0", old.Start.Add(-time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	costs := map[string]float64{}
	for _, r := range got {
		costs[r.RequestID] = r.CostUSD
	}
	want := map[string]float64{old.RequestID: 0, recs[0].RequestID: 0.000123, recs[1].RequestID: 1.5}
	if !reflect.DeepEqual(costs, want) {
		t.Fatalf("cost_usd by request %v, want %v", costs, want)
	}

	// A restart: the column is there, Ensure leaves the table alone.
	again, err := NewClickHouse(c.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Ensure(ctx); err != nil {
		t.Fatalf("second start: %v", err)
	}
	if n := chCount(t, c, "SELECT count() FROM system.columns WHERE database = '"+c.opts.Database+"' AND table = '"+c.opts.Table+"' AND name = 'cost_usd'"); n != 1 {
		t.Fatalf("%d cost_usd columns, want 1", n)
	}
}

// TestAddColumnSQL: current servers get IF NOT EXISTS; 18.16, which has no
// such clause, the plain ALTER (Ensure checks system.columns first).
func TestAddColumnSQL(t *testing.T) {
	col := AddedColumn{Name: "cost_usd", Type: "Float64 DEFAULT 0", Codec: "CODEC(Gorilla, ZSTD(1))", After: "estimated_tokens"}
	if got, want := AddColumnSQL("24.8.1", "db.t", col), "ALTER TABLE db.t ADD COLUMN IF NOT EXISTS cost_usd Float64 DEFAULT 0 CODEC(Gorilla, ZSTD(1)) AFTER estimated_tokens"; got != want {
		t.Fatalf("modern: %s\nwant %s", got, want)
	}
	if got, want := AddColumnSQL("18.16.1", "db.t", col), "ALTER TABLE db.t ADD COLUMN cost_usd Float64 DEFAULT 0 AFTER estimated_tokens"; got != want {
		t.Fatalf("18.16: %s\nwant %s", got, want)
	}
}

func TestShippedQueriesCountReplayedRowsOnce(t *testing.T) {
	c := chWriter(t)
	ctx := context.Background()
	recs := batchOf(0, 500)
	now := time.Now().UTC()
	// spent is what all 500 requests cost; teamCost team t1's by model,
	// userCost user u3's by team.
	var spent float64
	teamCost, userCost := map[string]float64{}, map[string]float64{}
	for i, r := range recs { // within every query's window
		r.Start = now.Add(-time.Duration(i) * time.Second)
		r.End = r.Start.Add(10 * time.Millisecond)
		r.Team, r.Model = fmt.Sprintf("t%d", i%3), []string{"gpt-4o-mini", "gpt-4o"}[i%2]
		// Multiples of 1/4 dollar add up exactly in any order.
		r.CostUSD = 0.25 * float64(1+i%4)
		if i%10 == 0 {
			r.CacheStatus, r.CostUSD = "hit", 0
		}
		if i%25 == 0 {
			r.Status, r.CostUSD = 502, 0
		}
		spent += r.CostUSD
		if r.Team == "t1" {
			teamCost[r.Model] += r.CostUSD
		}
		if r.User == "u3" {
			userCost[r.Team] += r.CostUSD
		}
	}
	if err := c.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// A replay: the first 200 rows again, as after a write whose
	// acknowledgement was lost.
	if err := c.Write(ctx, recs[:200]); err != nil {
		t.Fatal(err)
	}
	if n := chCount(t, c, "SELECT count() FROM "+c.Table()); n != 700 {
		t.Fatalf("raw rows %d, want 700 (the replay duplicated 200)", n)
	}
	qs := Queries(c.Table())
	for _, name := range []string{"requests_per_day", "usage_per_user_per_day", "top_users", "latency_per_model", "cache_savings", "error_rates",
		"spend_per_team_model_day", "spend_per_user_month"} {
		if qs[name] == "" {
			t.Fatalf("shipped query %s missing", name)
		}
	}
	for name, q := range qs { // every shipped file runs on this server
		if n := chCount(t, c, "SELECT count() FROM ("+q+")"); n == 0 {
			t.Errorf("shipped query %s returned no rows", name)
		}
	}
	sum := func(name, col string) float64 {
		t.Helper()
		q := "SELECT toFloat64(sum(" + col + ")) FROM (" + qs[name] + ")"
		var v float64
		if err := c.Conn().QueryRow(ctx, q).Scan(&v); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, q)
		}
		return v
	}
	if got := sum("requests_per_day", "requests"); got != 500 {
		t.Fatalf("requests_per_day counts %v, want 500", got)
	}
	if got := sum("usage_per_user_per_day", "total_tokens"); got != 500*7 {
		t.Fatalf("usage_per_user_per_day tokens %v, want %d", got, 500*7)
	}
	if got := sum("top_users", "requests"); got != 500 {
		t.Fatalf("top_users requests %v, want 500", got)
	}
	if got := sum("latency_per_model", "requests"); got != 480 {
		t.Fatalf("latency_per_model requests %v, want 480 (successes)", got)
	}
	if got := sum("cache_savings", "cached_answers"); got != 50 {
		t.Fatalf("cache_savings hits %v, want 50", got)
	}
	if got := sum("cache_savings", "tokens_saved"); got != 50*7 {
		t.Fatalf("cache_savings tokens %v, want 350", got)
	}
	if got := sum("error_rates", "server_errors"); got != 20 {
		t.Fatalf("error_rates 5xx %v, want 20", got)
	}
	if spent != 280 { // 440 priced answers, $0.25 to $1 each
		t.Fatalf("test data spends $%v, want $280", spent)
	}
	if got := sum("spend_per_team_model_day", "cost_usd"); got != spent {
		t.Fatalf("spend_per_team_model_day cost %v, want %v", got, spent)
	}
	if got := sum("spend_per_user_month", "cost_usd"); got != spent {
		t.Fatalf("spend_per_user_month cost %v, want %v", got, spent)
	}
	if got := sum("spend_per_user_month", "requests"); got != 500 {
		t.Fatalf("spend_per_user_month requests %v, want 500", got)
	}
	// One group at a time: each sum is its own rows', counted once.
	groups := func(q, key, where string) map[string]float64 {
		t.Helper()
		rows, err := c.Conn().Query(ctx, "SELECT "+key+", toFloat64(sum(cost_usd)) FROM ("+q+") WHERE "+where+" GROUP BY "+key)
		if err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
		defer rows.Close()
		out := map[string]float64{}
		for rows.Next() {
			var k string
			var v float64
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
		return out
	}
	if got := groups(qs["spend_per_team_model_day"], "model", "team = 't1'"); !reflect.DeepEqual(got, teamCost) {
		t.Fatalf("spend_per_team_model_day for t1 by model %v, want %v", got, teamCost)
	}
	if got := groups(qs["spend_per_user_month"], "team", "user = 'u3'"); !reflect.DeepEqual(got, userCost) {
		t.Fatalf("spend_per_user_month for u3 by team %v, want %v", got, userCost)
	}
	recent, err := c.Recent(ctx, "u0", now.Add(-time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if want := (500 + 6) / 7; len(recent) != want {
		t.Fatalf("Recent u0: %d rows, want %d (one per request)", len(recent), want)
	}
}

// TestClickHouseChunkedBatchIsOnePart: Write sends a batch as several data
// blocks of one INSERT; the server must still make one part of it (a part
// per block would flood the table with small parts), with every row.
func TestClickHouseChunkedBatchIsOnePart(t *testing.T) {
	c := chWriter(t)
	ctx := context.Background()
	const n = 5*chunkRows + 7
	recs := batchOf(0, n)
	if err := c.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if got := chCount(t, c, "SELECT count() FROM "+c.Table()); got != n {
		t.Fatalf("%d rows, want %d", got, n)
	}
	// All parts, active or merged away: one INSERT, one part.
	q := fmt.Sprintf("SELECT count() FROM system.parts WHERE database = '%s' AND table = '%s'", c.opts.Database, c.opts.Table)
	if got := chCount(t, c, q); got != 1 {
		t.Fatalf("one batch of %d rows made %d parts, want 1", n, got)
	}
	if got := chCount(t, c, "SELECT uniqExact(request_id) FROM "+c.Table()); got != n {
		t.Fatalf("%d distinct request ids, want %d", got, n)
	}
}

// TestSortByKey: rows are ordered by (user, start, request_id) with start
// at the column's precision, which differs between old and modern servers.
func TestSortByKey(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	mk := func(user, id string, ms int) *Record {
		return &Record{User: user, RequestID: id, Start: base.Add(time.Duration(ms) * time.Millisecond)}
	}
	ids := func(recs []*Record) string {
		var out []string
		for _, r := range recs {
			out = append(out, r.User+"/"+r.RequestID)
		}
		return strings.Join(out, " ")
	}
	in := []*Record{mk("bob", "a", 0), mk("al", "b", 1900), mk("al", "c", 1100), mk("al", "d", 2500), mk("al", "a", 1500)}
	secs := slices.Clone(in)
	sortByKey(secs, false)
	if got, want := ids(secs), "al/a al/b al/c al/d bob/a"; got != want {
		t.Fatalf("seconds: %s, want %s", got, want)
	}
	millis := slices.Clone(in)
	sortByKey(millis, true)
	if got, want := ids(millis), "al/c al/a al/b al/d bob/a"; got != want {
		t.Fatalf("milliseconds: %s, want %s", got, want)
	}
}

func TestClickHouseDownIsAnErrorNotAHang(t *testing.T) {
	c, err := NewClickHouse(ClickHouseOptions{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Write(ctx, batchOf(0, 1)); err == nil {
		t.Fatal("write to a closed port succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("failed write took %v", d)
	}
}

// BenchmarkClickHouseThroughput writes 100,000 transcript rows of about
// 400 bytes in batches of the default size (20,000) through the Writer, the
// sink's path into the table, and reports rows per second.
func BenchmarkClickHouseThroughput(b *testing.B) {
	c := chWriter(b)
	ctx := context.Background()
	if err := c.Ensure(ctx); err != nil {
		b.Fatal(err)
	}
	const rows = 100_000
	batch := DefaultBatchRows
	if v, _ := strconv.Atoi(os.Getenv("SINK_BENCH_BATCH")); v > 0 {
		batch = v
	}
	recs := batchOf(0, rows)
	for _, r := range recs {
		r.Request = `[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + strings.Repeat("word ", 30) + `"}]`
		r.Response = strings.Repeat("answer ", 20)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for off := 0; off < rows; off += batch {
			if err := c.Write(ctx, recs[off:off+batch]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(rows*b.N)/time.Since(start).Seconds(), "rows/s")
}

// BenchmarkSinkThroughput pushes 100,000 records through the whole sink
// (queue, batcher with the default redaction rules, shipper, ClickHouse)
// and reports rows per second from the first Enqueue to the end of Stop.
func BenchmarkSinkThroughput(b *testing.B) {
	c := chWriter(b)
	if err := c.Ensure(context.Background()); err != nil {
		b.Fatal(err)
	}
	red, _ := NewRedactor(DefaultRedactRules)
	const rows = 100_000
	b.ReportAllocs()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		recs := batchOf(i*rows, rows)
		for _, r := range recs {
			r.Request = `[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"` + strings.Repeat("word ", 30) + `"}]`
			r.Response = strings.Repeat("answer ", 20)
		}
		s, err := New(Options{Writer: keepOpen{c}, QueueSize: rows, Redactor: red})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for _, r := range recs {
			if !s.Enqueue(r) {
				b.Fatal("dropped")
			}
		}
		if err := s.Stop(context.Background()); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		if got := counter(s.m.written); got != rows {
			b.Fatalf("wrote %v rows, want %d", got, rows)
		}
	}
	b.ReportMetric(float64(rows*b.N)/total.Seconds(), "rows/s")
}

// keepOpen is a Writer whose Close leaves the underlying writer open.
type keepOpen struct{ Writer }

func (keepOpen) Close() error { return nil }
