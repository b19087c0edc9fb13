package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ClickHouseOptions configure the ClickHouse writer.
type ClickHouseOptions struct {
	// Addr is host:port of the native protocol (9000 by default on a
	// server). Required.
	Addr string
	// Database holds the table; created if missing. Default "sluice".
	Database string
	// Table is the transcript table; created if missing. Default
	// "transcripts".
	Table string
	// Username and Password authenticate. Default user "default", no
	// password.
	Username, Password string
	// DialTimeout bounds connecting. Default 2s.
	DialTimeout time.Duration
	// TTLDays is the retention on servers with TTL (current servers); old
	// servers keep everything (drop daily partitions to expire). Default 0:
	// no TTL.
	TTLDays int
	// Compression of inserts on the wire: "lz4", "none", or "" / "auto":
	// lz4 unless Addr is a loopback address (there it costs more CPU than
	// it saves bandwidth).
	Compression string
	// Logger receives the driver's incidents. Default: none.
	Logger *slog.Logger
	// Cluster names a cluster of the servers' remote_servers: the database
	// and tables are created ON CLUSTER, rows go to Table_local on every
	// node (ReplicatedReplacingMergeTree, {shard} and {replica} macros) and
	// are inserted and read through Table, a Distributed table sharded by
	// user (cluster.go). Default "": one server, one ReplacingMergeTree.
	Cluster string
}

// useLZ4 decides ClickHouseOptions.Compression.
func useLZ4(mode, addr string) bool {
	switch mode {
	case "lz4":
		return true
	case "none":
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// ModernMajor is the first server major version that gets the modern DDL
// (DateTime64, LowCardinality, codecs, TTL); older servers get the 18.16
// compatible one.
const ModernMajor = 20

// Columns is the transcript table's column list, in insert order; every
// INSERT names them (18.16 rejects an INSERT without its column list).
var Columns = []string{
	"request_id", "upstream_request_id", "start", "first_token", "end", "key_id", "user", "team", "tier", "endpoint",
	"model_requested", "model", "upstream", "stream", "request", "response", "finish_reason",
	"prompt_tokens", "completion_tokens", "total_tokens", "estimated_tokens", "cost_usd", "status", "error_type",
	"latency_ms", "ttft_ms", "queue_wait_ms", "cache_status", "retries", "client_gone", "user_agent",
}

// ClickHouse writes transcript batches over the native protocol, creating
// the database and table on first use with DDL chosen by server version.
type ClickHouse struct {
	opts ClickHouseOptions
	conn driver.Conn

	// mu guards ready and version (the admin endpoint reads concurrently).
	mu      sync.Mutex
	ready   bool
	version string

	// wmu serialises Write, which reuses cols between batches.
	wmu  sync.Mutex
	cols columnBufs
}

// columnBufs are one batch's columns, kept between batches so that a
// steady stream of batches does not allocate (and fault in) them anew.
type columnBufs struct {
	str  [16][]string
	tm   [3][]time.Time
	u8   [2][]uint8
	i64  [4][]int64
	u16  [2][]uint16
	f64  [4][]float64
	list []any
	// order is the batch in the table's sort order.
	order []*Record
}

// resize returns *p with length n, reallocated only when it is too small.
func resize[T any](p *[]T, n int) []T {
	if cap(*p) < n {
		*p = make([]T, n)
	}
	*p = (*p)[:n]
	return *p
}

// NewClickHouse prepares a connection pool; it does not connect yet, so
// Sluice starts (and spools) while ClickHouse is down.
func NewClickHouse(opts ClickHouseOptions) (*ClickHouse, error) {
	if opts.Addr == "" {
		return nil, errors.New("sink: clickhouse addr is required")
	}
	if opts.Database == "" {
		opts.Database = "sluice"
	}
	if opts.Table == "" {
		opts.Table = "transcripts"
	}
	if !identRe.MatchString(opts.Database) || !identRe.MatchString(opts.Table) ||
		(opts.Cluster != "" && !identRe.MatchString(opts.Cluster)) {
		return nil, fmt.Errorf("sink: clickhouse database, table and cluster must match %s", identRe)
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 2 * time.Second
	}
	user := opts.Username
	if user == "" {
		user = "default"
	}
	copts := &clickhouse.Options{
		Addr:            []string{opts.Addr},
		Protocol:        clickhouse.Native,
		Auth:            clickhouse.Auth{Database: "default", Username: user, Password: opts.Password},
		DialTimeout:     opts.DialTimeout,
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: time.Hour,
		Logger:          opts.Logger,
	}
	if useLZ4(opts.Compression, opts.Addr) {
		copts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
	conn, err := clickhouse.Open(copts)
	if err != nil {
		return nil, fmt.Errorf("sink: clickhouse: %w", err)
	}
	return &ClickHouse{opts: opts, conn: conn}, nil
}

var identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Table is the qualified table name, "db.table".
func (c *ClickHouse) Table() string { return c.opts.Database + "." + c.opts.Table }

// Conn is the driver connection, for tests and queries.
func (c *ClickHouse) Conn() driver.Conn { return c.conn }

// Version is the server version found by Ensure ("" before).
func (c *ClickHouse) Version() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// Ensure creates the database and table if missing, with the DDL for the
// server's version. Write calls it until it succeeds once.
func (c *ClickHouse) Ensure(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ready {
		return nil
	}
	var v string
	if err := c.conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return fmt.Errorf("sink: clickhouse version: %w", err)
	}
	if err := c.conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+c.opts.Database+onCluster(c.opts.Cluster)); err != nil {
		return fmt.Errorf("sink: clickhouse create database: %w", err)
	}
	tables := []string{c.opts.Table}
	if c.opts.Cluster == "" {
		if err := c.conn.Exec(ctx, DDL(v, c.Table(), c.opts.TTLDays)); err != nil {
			return fmt.Errorf("sink: clickhouse create table (server %s): %w", v, err)
		}
	} else {
		for _, q := range ClusterDDL(v, c.opts.Database, c.opts.Table, c.opts.Cluster, c.opts.TTLDays) {
			if err := c.conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("sink: clickhouse create table on cluster %s (server %s): %w", c.opts.Cluster, v, err)
			}
		}
		// The local table first: the Distributed one reads its columns.
		tables = []string{LocalTable(c.opts.Table), c.opts.Table}
	}
	for _, col := range AddedColumns {
		for _, table := range tables {
			if err := c.addColumn(ctx, v, table, col); err != nil {
				return err
			}
		}
	}
	c.version, c.ready = v, true
	return nil
}

// AddedColumn is a column added to the table after its first release: a
// table created by an older Sluice lacks it until Ensure adds it.
type AddedColumn struct {
	// Name is the column's name, as in Columns.
	Name string
	// Type is its type and default, e.g. "Float64 DEFAULT 0"; old rows read
	// the default.
	Type string
	// Codec is its compression on current servers (18.16 has no codecs),
	// as in the modern DDL; "" for the default.
	Codec string
	// After is the column it follows, so that the table reads as the DDL.
	After string
}

// AddedColumns are the columns Ensure adds to a table that lacks them.
var AddedColumns = []AddedColumn{
	{Name: "cost_usd", Type: "Float64 DEFAULT 0", Codec: "CODEC(Gorilla, ZSTD(1))", After: "estimated_tokens"},
}

// AddColumnSQL is the ALTER that adds col to table on a server of the given
// version. 18.16 has no ADD COLUMN IF NOT EXISTS (nor codecs), so there the
// caller checks system.columns first.
func AddColumnSQL(version, table string, col AddedColumn) string {
	return addColumnSQL(version, table, "", col)
}

// addColumnSQL is AddColumnSQL, ON CLUSTER cluster unless it is "".
func addColumnSQL(version, table, cluster string, col AddedColumn) string {
	alter := "ALTER TABLE " + table + onCluster(cluster)
	if Major(version) >= ModernMajor {
		typ := col.Type
		if col.Codec != "" {
			typ += " " + col.Codec
		}
		return alter + " ADD COLUMN IF NOT EXISTS " + col.Name + " " + typ + " AFTER " + col.After
	}
	return alter + " ADD COLUMN " + col.Name + " " + col.Type + " AFTER " + col.After
}

// addColumn adds col to the table unless it has it already. Another
// replica may add it at the same time: a failed ALTER counts as done when
// the column is there afterwards.
func (c *ClickHouse) addColumn(ctx context.Context, version, table string, col AddedColumn) error {
	has, err := c.hasColumn(ctx, table, col.Name)
	if err != nil || has {
		return err
	}
	if err := c.conn.Exec(ctx, addColumnSQL(version, c.opts.Database+"."+table, c.opts.Cluster, col)); err != nil {
		if has, herr := c.hasColumn(ctx, table, col.Name); herr == nil && has {
			return nil
		}
		return fmt.Errorf("sink: clickhouse add column %s to %s (server %s): %w", col.Name, table, version, err)
	}
	return nil
}

// hasColumn reports whether table (of the database) has a column called
// name.
func (c *ClickHouse) hasColumn(ctx context.Context, table, name string) (bool, error) {
	var n uint64
	err := c.conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
		c.opts.Database, table, name).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("sink: clickhouse columns of %s.%s: %w", c.opts.Database, table, err)
	}
	return n > 0, nil
}

// Major returns the major number of a server version string ("18.16.1" →
// 18); 0 when it cannot tell.
func Major(version string) int {
	major, _, _ := strings.Cut(version, ".")
	n, _ := strconv.Atoi(major)
	return n
}

// DDL returns the CREATE TABLE statement for table on a server of the
// given version. Both have the same columns, so one INSERT fits both.
//
// Both are ReplacingMergeTree ordered by (user, start, request_id): a
// batch replayed after a failure has the same key, so merges collapse it
// and the shipped queries (FROM … FINAL) count it once. Per-user history is
// a range scan of the sort key; partitions are daily.
func DDL(version, table string, ttlDays int) string {
	return ddl(version, table, "", "", ttlDays)
}

// ddl is DDL ON CLUSTER cluster (none when "") with engine (default
// ReplacingMergeTree).
func ddl(version, table, cluster, engine string, ttlDays int) string {
	if Major(version) >= ModernMajor {
		if engine == "" {
			engine = "ReplacingMergeTree"
		}
		ttl := ""
		if ttlDays > 0 {
			ttl = "\nTTL toDate(start) + INTERVAL " + strconv.Itoa(ttlDays) + " DAY"
		}
		return `CREATE TABLE IF NOT EXISTS ` + table + onCluster(cluster) + ` (
  request_id String CODEC(ZSTD(1)),
  upstream_request_id String CODEC(ZSTD(1)),
  start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
  first_token DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
  end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
  key_id LowCardinality(String),
  user String CODEC(ZSTD(1)),
  team LowCardinality(String),
  tier LowCardinality(String),
  endpoint LowCardinality(String),
  model_requested LowCardinality(String),
  model LowCardinality(String),
  upstream LowCardinality(String),
  stream UInt8,
  request String CODEC(ZSTD(3)),
  response String CODEC(ZSTD(3)),
  finish_reason LowCardinality(String),
  prompt_tokens Int64 CODEC(T64, ZSTD(1)),
  completion_tokens Int64 CODEC(T64, ZSTD(1)),
  total_tokens Int64 CODEC(T64, ZSTD(1)),
  estimated_tokens Int64 CODEC(T64, ZSTD(1)),
  cost_usd Float64 DEFAULT 0 CODEC(Gorilla, ZSTD(1)),
  status UInt16,
  error_type LowCardinality(String),
  latency_ms Float64 CODEC(Gorilla, ZSTD(1)),
  ttft_ms Float64 CODEC(Gorilla, ZSTD(1)),
  queue_wait_ms Float64 CODEC(Gorilla, ZSTD(1)),
  cache_status LowCardinality(String),
  retries UInt16,
  client_gone UInt8,
  user_agent LowCardinality(String)
) ENGINE = ` + engine + `
PARTITION BY toDate(start)
ORDER BY (user, start, request_id)` + ttl
	}
	// 18.16: no DateTime64, TTL, codecs; LowCardinality is experimental.
	// Times are DateTime (seconds); the _ms columns keep the durations.
	if engine == "" {
		engine = "ReplacingMergeTree()"
	}
	return `CREATE TABLE IF NOT EXISTS ` + table + onCluster(cluster) + ` (
  request_id String,
  upstream_request_id String,
  start DateTime,
  first_token DateTime,
  end DateTime,
  key_id String,
  user String,
  team String,
  tier String,
  endpoint String,
  model_requested String,
  model String,
  upstream String,
  stream UInt8,
  request String,
  response String,
  finish_reason String,
  prompt_tokens Int64,
  completion_tokens Int64,
  total_tokens Int64,
  estimated_tokens Int64,
  cost_usd Float64 DEFAULT 0,
  status UInt16,
  error_type String,
  latency_ms Float64,
  ttft_ms Float64,
  queue_wait_ms Float64,
  cache_status String,
  retries UInt16,
  client_gone UInt8,
  user_agent String
) ENGINE = ` + engine + `
PARTITION BY toYYYYMMDD(start)
ORDER BY (user, start, request_id)
SETTINGS index_granularity = 8192`
}

// insertSQL is the INSERT with its explicit column list.
func (c *ClickHouse) insertSQL() string {
	return "INSERT INTO " + c.Table() + " (" + strings.Join(Columns, ", ") + ")"
}

func b2u8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// chunkRows is how many rows Write hands the driver at a time: the column
// buffers (about 1 MiB for 2,048 rows of 400 bytes) are filled, sent as one
// data block of the INSERT and refilled, instead of growing to the whole
// batch. The server squashes a query's blocks into one part
// (min_insert_block_size_rows), so the table sees the same parts.
const chunkRows = 2048

// Write sends recs as one INSERT, in data blocks of chunkRows.
func (c *ClickHouse) Write(ctx context.Context, recs []*Record) error {
	if err := c.Ensure(ctx); err != nil {
		return err
	}
	batch, err := c.conn.PrepareBatch(ctx, c.insertSQL())
	if err != nil {
		return fmt.Errorf("sink: clickhouse prepare: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := &c.cols
	// Rows go in the table's ORDER BY order: a part whose rows arrive
	// sorted is written as they are, where unsorted ones are permuted
	// column by column on the server (about a tenth of its insert CPU,
	// measured on 18.16 with 400-byte rows).
	order := append(b.order[:0], recs...)
	b.order = order
	defer clear(order)
	sortByKey(order, Major(c.Version()) >= ModernMajor)
	for len(order) > 0 {
		n := min(len(order), chunkRows)
		if err := c.appendChunk(batch, order[:n]); err != nil {
			_ = batch.Abort()
			return err
		}
		order = order[n:]
		runtime.Gosched() // a chunk takes about 1 ms to build; the Flush below then waits on the server
		if len(order) > 0 {
			if err := batch.Flush(); err != nil {
				_ = batch.Abort()
				return fmt.Errorf("sink: clickhouse send: %w", err)
			}
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("sink: clickhouse send: %w", err)
	}
	return nil
}

// appendChunk appends recs to batch column by column: one Append per
// column instead of 31 boxed values per row (about 3x the rows per second).
// The caller holds wmu.
func (c *ClickHouse) appendChunk(batch driver.Batch, recs []*Record) error {
	n := len(recs)
	b := &c.cols
	defer func() {
		for i := range b.str {
			clear(b.str[i]) // let the batch's strings go
		}
	}()
	var (
		ids, upIDs, keys, users, teams = resize(&b.str[0], n), resize(&b.str[1], n), resize(&b.str[2], n), resize(&b.str[3], n), resize(&b.str[4], n)
		tiers, eps, asked, models, ups = resize(&b.str[5], n), resize(&b.str[6], n), resize(&b.str[7], n), resize(&b.str[8], n), resize(&b.str[9], n)
		reqs, resps, finishes          = resize(&b.str[10], n), resize(&b.str[11], n), resize(&b.str[12], n)
		errTypes, caches, agents       = resize(&b.str[13], n), resize(&b.str[14], n), resize(&b.str[15], n)
		starts, firsts, ends           = resize(&b.tm[0], n), resize(&b.tm[1], n), resize(&b.tm[2], n)
		streams, gones                 = resize(&b.u8[0], n), resize(&b.u8[1], n)
		prompt, completion             = resize(&b.i64[0], n), resize(&b.i64[1], n)
		total, estimated               = resize(&b.i64[2], n), resize(&b.i64[3], n)
		statuses, retries              = resize(&b.u16[0], n), resize(&b.u16[1], n)
		lat, ttft, wait, costs         = resize(&b.f64[0], n), resize(&b.f64[1], n), resize(&b.f64[2], n), resize(&b.f64[3], n)
	)
	for i, r := range recs {
		ids[i], upIDs[i], keys[i], users[i], teams[i], tiers[i], eps[i] = r.RequestID, r.UpstreamRequestID, r.KeyID, r.User, r.Team, r.Tier, r.Endpoint
		asked[i], models[i], ups[i] = r.ModelRequested, r.Model, r.Upstream
		reqs[i], resps[i], finishes[i], errTypes[i], caches[i], agents[i] = r.Request, r.Response, r.FinishReason, r.ErrorType, r.CacheStatus, r.UserAgent
		starts[i], firsts[i], ends[i] = r.Start, r.FirstToken, r.End
		if firsts[i].IsZero() {
			firsts[i] = time.Unix(0, 0)
		}
		streams[i], gones[i] = b2u8(r.Stream), b2u8(r.ClientGone)
		prompt[i], completion[i], total[i], estimated[i], costs[i] = r.PromptTokens, r.CompletionTokens, r.TotalTokens, r.EstimatedTokens, r.CostUSD
		statuses[i], retries[i] = uint16(r.Status), uint16(r.Retries)
		lat[i], ttft[i], wait[i] = r.LatencyMs, r.TTFTMs, r.QueueWaitMs
	}
	cols := append(b.list[:0], ids, upIDs, starts, firsts, ends, keys, users, teams, tiers, eps, asked, models, ups, streams, reqs, resps, finishes,
		prompt, completion, total, estimated, costs, statuses, errTypes, lat, ttft, wait, caches, retries, gones, agents)
	b.list = cols
	for i, col := range cols {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("sink: clickhouse append %s: %w", Columns[i], err)
		}
	}
	return nil
}

// sortByKey sorts recs by the table's sort key, (user, start, request_id),
// with start at the column's precision: milliseconds on modern servers
// (DateTime64(3)), seconds on old ones (DateTime).
func sortByKey(recs []*Record, millis bool) {
	at := func(r *Record) int64 {
		if millis {
			return r.Start.UnixMilli()
		}
		return r.Start.Unix()
	}
	slices.SortFunc(recs, func(a, b *Record) int {
		if c := strings.Compare(a.User, b.User); c != 0 {
			return c
		}
		if c := cmp.Compare(at(a), at(b)); c != 0 {
			return c
		}
		return strings.Compare(a.RequestID, b.RequestID)
	})
}

// Recent returns user's transcripts since since, newest first, one row per
// request id (FINAL collapses replayed duplicates).
func (c *ClickHouse) Recent(ctx context.Context, user string, since time.Time, limit int) ([]*Record, error) {
	if err := c.Ensure(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	q := "SELECT " + strings.Join(Columns, ", ") + " FROM " + c.Table() +
		" FINAL WHERE user = ? AND start >= ? ORDER BY start DESC, request_id DESC LIMIT " + strconv.Itoa(limit)
	rows, err := c.conn.Query(ctx, q, user, since.UTC().Truncate(time.Second))
	if err != nil {
		return nil, fmt.Errorf("sink: clickhouse query: %w", err)
	}
	defer rows.Close()
	var out []*Record
	for rows.Next() {
		var (
			r                     Record
			stream, gone          uint8
			status, retries       uint16
			start, first, endTime time.Time
		)
		if err := rows.Scan(&r.RequestID, &r.UpstreamRequestID, &start, &first, &endTime, &r.KeyID, &r.User, &r.Team, &r.Tier, &r.Endpoint,
			&r.ModelRequested, &r.Model, &r.Upstream, &stream, &r.Request, &r.Response, &r.FinishReason,
			&r.PromptTokens, &r.CompletionTokens, &r.TotalTokens, &r.EstimatedTokens, &r.CostUSD, &status, &r.ErrorType,
			&r.LatencyMs, &r.TTFTMs, &r.QueueWaitMs, &r.CacheStatus, &retries, &gone, &r.UserAgent); err != nil {
			return nil, fmt.Errorf("sink: clickhouse scan: %w", err)
		}
		r.Start, r.End = start.UTC(), endTime.UTC()
		if first.Unix() > 0 {
			r.FirstToken = first.UTC()
		}
		r.Stream, r.ClientGone = stream == 1, gone == 1
		r.Status, r.Retries = int(status), int(retries)
		out = append(out, &r)
	}
	return out, rows.Err()
}

// Close closes the connection pool.
func (c *ClickHouse) Close() error { return c.conn.Close() }
