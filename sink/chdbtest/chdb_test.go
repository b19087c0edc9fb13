package chdbtest

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chdb-io/chdb-go/chdb"

	"sluice/sink"
)

// session opens a chDB session in a temporary directory, or skips.
func session(t *testing.T) *chdb.Session {
	t.Helper()
	lib := os.Getenv("CHDB_LIB_PATH")
	if lib == "" {
		t.Skip("CHDB_LIB_PATH is empty: no libchdb.so (scripts/test.sh installs it)")
	}
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("CHDB_LIB_PATH: %v", err)
	}
	s, err := chdb.NewSession(t.TempDir())
	if err != nil {
		t.Fatalf("chdb session: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func query(t *testing.T, s *chdb.Session, q string) string {
	t.Helper()
	r, err := s.Query(q, "TabSeparated")
	if err != nil {
		t.Fatalf("%v\n%s", err, q)
	}
	if r.Error() != nil {
		t.Fatalf("%v\n%s", r.Error(), q)
	}
	return strings.TrimSpace(r.String())
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// values renders records as an INSERT's VALUES, in sink.Columns order.
func values(recs []*sink.Record) string {
	ts := func(t time.Time) string { return quote(t.UTC().Format("2006-01-02 15:04:05.000")) }
	b2 := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	var out []string
	for _, r := range recs {
		first := r.FirstToken
		if first.IsZero() {
			first = time.Unix(0, 0)
		}
		f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
		row := []string{quote(r.RequestID), quote(r.UpstreamRequestID), ts(r.Start), ts(first), ts(r.End), quote(r.KeyID),
			quote(r.User), quote(r.Team), quote(r.Tier), quote(r.Endpoint), quote(r.ModelRequested), quote(r.Model),
			quote(r.Upstream), b2(r.Stream), quote(r.Request), quote(r.Response), quote(r.FinishReason),
			fmt.Sprint(r.PromptTokens), fmt.Sprint(r.CompletionTokens), fmt.Sprint(r.TotalTokens), fmt.Sprint(r.EstimatedTokens),
			f(r.CostUSD), fmt.Sprint(r.Status), quote(r.ErrorType), f(r.LatencyMs), f(r.TTFTMs), f(r.QueueWaitMs), quote(r.CacheStatus),
			fmt.Sprint(r.Retries), b2(r.ClientGone), quote(r.UserAgent)}
		out = append(out, "("+strings.Join(row, ", ")+")")
	}
	return strings.Join(out, ",\n")
}

// TestModernDDLAndShippedQueriesOnCurrentEngine creates the table with the
// DDL a current server gets, writes 500 rows and a replay of 200 of them,
// and checks every shipped query counts each request once.
func TestModernDDLAndShippedQueriesOnCurrentEngine(t *testing.T) {
	s := session(t)
	version := query(t, s, "SELECT version()")
	if sink.Major(version) < sink.ModernMajor {
		t.Fatalf("chDB engine %s is older than %d", version, sink.ModernMajor)
	}
	t.Logf("chDB engine %s", version)
	const table = "sluice_chdb.transcripts"
	query(t, s, "CREATE DATABASE IF NOT EXISTS sluice_chdb")
	ddl := sink.DDL(version, table, 30)
	for _, want := range []string{"DateTime64", "LowCardinality", "CODEC", "TTL"} {
		if !strings.Contains(ddl, want) {
			t.Fatalf("modern DDL lacks %s", want)
		}
	}
	query(t, s, ddl)
	show := query(t, s, "SHOW CREATE TABLE "+table)
	for _, want := range []string{"ReplacingMergeTree", "DateTime64(3, \\'UTC\\')", "TTL", "CODEC(ZSTD(3))"} {
		if !strings.Contains(show, want) {
			t.Fatalf("created table lacks %s:\n%s", want, show)
		}
	}

	now := time.Now().UTC()
	recs := make([]*sink.Record, 500)
	for i := range recs {
		start := now.Add(-time.Duration(i) * time.Second)
		recs[i] = &sink.Record{RequestID: fmt.Sprintf("req_%06d", i), UpstreamRequestID: fmt.Sprintf("up_%06d", i),
			Start: start, FirstToken: start.Add(3 * time.Millisecond), End: start.Add(10 * time.Millisecond),
			KeyID: "k", User: fmt.Sprintf("u%d", i%7), Team: "t", Tier: "default", Endpoint: "chat_completions",
			ModelRequested: "gpt-4o-mini", Model: "gpt-4o-mini", Upstream: "openai", Stream: i%2 == 0,
			Request: `[{"role":"user","content":"it's \"quoted\" ` + fmt.Sprint(i) + `"}]`, Response: "echo",
			FinishReason: "stop", PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, Status: 200,
			LatencyMs: 10, TTFTMs: 3, UserAgent: "OpenAI/Go"}
		recs[i].CostUSD = 0.25
		if i%10 == 0 {
			recs[i].CacheStatus, recs[i].CostUSD = "hit", 0
		}
		if i%25 == 0 {
			recs[i].Status, recs[i].ErrorType, recs[i].CostUSD = 502, "upstream_error", 0
		}
	}
	insert := "INSERT INTO " + table + " (" + strings.Join(sink.Columns, ", ") + ") VALUES\n"
	query(t, s, insert+values(recs))
	query(t, s, insert+values(recs[:200])) // a replay
	if got := query(t, s, "SELECT count() FROM "+table); got != "700" {
		t.Fatalf("raw rows %s, want 700", got)
	}
	qs := sink.Queries(table)
	sum := func(name, col string) string {
		t.Helper()
		return query(t, s, "SELECT toInt64(sum("+col+")) FROM ("+qs[name]+")")
	}
	for _, c := range []struct{ name, col, want string }{
		{"requests_per_day", "requests", "500"},
		{"requests_per_day", "request_ids", "500"},
		{"usage_per_user_per_day", "total_tokens", "3500"},
		{"top_users", "requests", "500"},
		{"latency_per_model", "requests", "480"},
		{"cache_savings", "cached_answers", "50"},
		{"cache_savings", "tokens_saved", "350"},
		{"error_rates", "server_errors", "20"},
		{"error_rates", "requests", "500"},
		{"spend_per_team_model_day", "cost_usd * 4", "440"}, // 440 priced answers at $0.25
		{"spend_per_team_model_day", "requests", "500"},
		{"spend_per_user_month", "cost_usd * 4", "440"},
		{"spend_per_user_month", "requests", "500"},
	} {
		if got := sum(c.name, c.col); got != c.want {
			t.Errorf("%s: sum(%s) = %s, want %s", c.name, c.col, got, c.want)
		}
	}
	for name, q := range qs { // every shipped file runs on this engine
		if got := query(t, s, "SELECT count() FROM ("+q+")"); got == "0" {
			t.Errorf("shipped query %s returned no rows", name)
		}
	}
	// The admin endpoint's query shape, on the modern types.
	recent := "SELECT " + strings.Join(sink.Columns, ", ") + " FROM " + table +
		" FINAL WHERE user = 'u0' AND start >= now() - INTERVAL 1 DAY ORDER BY start DESC, request_id DESC LIMIT 1000"
	if got := len(strings.Split(query(t, s, recent), "\n")); got != (500+6)/7 {
		t.Fatalf("recent u0: %d rows, want %d", got, (500+6)/7)
	}
}

// TestAddCostColumnOnCurrentEngine: a table made by a Sluice without
// cost_usd gains it through sink.AddColumnSQL (IF NOT EXISTS: running it
// twice is harmless), after estimated_tokens; the old row reads 0, new rows
// their cost exactly.
func TestAddCostColumnOnCurrentEngine(t *testing.T) {
	s := session(t)
	version := query(t, s, "SELECT version()")
	const table = "sluice_chdb_old.transcripts"
	query(t, s, "CREATE DATABASE IF NOT EXISTS sluice_chdb_old")
	ddl := sink.DDL(version, table, 0)
	line := regexp.MustCompile(`(?m)^  cost_usd .*\n`)
	if !line.MatchString(ddl) {
		t.Fatalf("modern DDL has no cost_usd line:\n%s", ddl)
	}
	query(t, s, line.ReplaceAllString(ddl, ""))
	query(t, s, "INSERT INTO "+table+" (request_id, user, start, first_token, end) VALUES ('old', 'u0', now(), now(), now())")
	for _, col := range sink.AddedColumns {
		alter := sink.AddColumnSQL(version, table, col)
		query(t, s, alter)
		query(t, s, alter) // a second replica, or a restart
	}
	show := query(t, s, "SHOW CREATE TABLE "+table)
	if !regexp.MustCompile("`estimated_tokens` Int64 CODEC\\(T64, ZSTD\\(1\\)\\),(\\\\n| )*`cost_usd` Float64 DEFAULT 0 CODEC\\(Gorilla").MatchString(show) {
		t.Fatalf("cost_usd not added after estimated_tokens:\n%s", show)
	}
	start := time.Now().UTC()
	recs := []*sink.Record{{RequestID: "new1", User: "u0", Start: start, End: start, CostUSD: 0.000123},
		{RequestID: "new2", User: "u0", Start: start, End: start, CostUSD: 1.5}}
	query(t, s, "INSERT INTO "+table+" ("+strings.Join(sink.Columns, ", ")+") VALUES\n"+values(recs))
	if got, want := query(t, s, "SELECT request_id, cost_usd FROM "+table+" FINAL ORDER BY request_id"), "new1\t0.000123\nnew2\t1.5\nold\t0"; got != want {
		t.Fatalf("cost_usd by request:\n%s\nwant\n%s", got, want)
	}
	if got := query(t, s, "SELECT countIf(cost_usd = 0.000123) + countIf(cost_usd = 1.5) FROM "+table); got != "2" {
		t.Fatalf("exact cost matches %s, want 2", got)
	}
}

// TestClusterDDLParsesOnCurrentEngine: the statements a current server
// gets on a cluster parse (EXPLAIN AST), ON CLUSTER and the replicated
// engine's arguments included. chDB has no ZooKeeper or Keeper and no
// remote_servers, so the tables are not created here: sink's
// TestClickHouseCluster creates them on a real 18.16 cluster.
func TestClusterDDLParsesOnCurrentEngine(t *testing.T) {
	s := session(t)
	version := query(t, s, "SELECT version()")
	for _, q := range sink.ClusterDDL(version, "sluice_chdb", "transcripts", "main", 30) {
		ast := query(t, s, "EXPLAIN AST "+q)
		if !strings.Contains(ast, "CreateQuery") {
			t.Fatalf("EXPLAIN AST of\n%s\ngave\n%s", q, ast)
		}
	}
	// A statement that does not parse fails here: the check can fail.
	r, err := s.Query("EXPLAIN AST CREATE TABLE x ON CLUSTER (", "TabSeparated")
	if err == nil && r.Error() == nil {
		t.Fatal("EXPLAIN AST accepted a broken statement")
	}
}
