package sink

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestClusterDDL(t *testing.T) {
	for _, version := range []string{"18.16.1", "24.8.1"} {
		stmts := ClusterDDL(version, "db", "transcripts", "main", 30)
		if len(stmts) != 2 {
			t.Fatalf("%s: %d statements, want the local table and the Distributed one", version, len(stmts))
		}
		local, dist := stmts[0], stmts[1]
		for _, want := range []string{
			"CREATE TABLE IF NOT EXISTS db.transcripts_local ON CLUSTER main (",
			"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/transcripts_local', '{replica}')",
			"ORDER BY (user, start, request_id)",
		} {
			if !strings.Contains(local, want) {
				t.Errorf("%s: the local table lacks %q:\n%s", version, want, local)
			}
		}
		// Same columns as the single-server table: one INSERT fits both.
		single := DDL(version, "db.transcripts_local", 30)
		if cols := func(s string) string { return s[strings.Index(s, "(")+1 : strings.Index(s, ") ENGINE")] }; cols(local) != cols(single) {
			t.Errorf("%s: the cluster's columns differ from the single server's", version)
		}
		if want := "CREATE TABLE IF NOT EXISTS db.transcripts ON CLUSTER main AS db.transcripts_local\n" +
			"ENGINE = Distributed(main, db, transcripts_local, cityHash64(user))"; dist != want {
			t.Errorf("%s: Distributed table\n%s\nwant\n%s", version, dist, want)
		}
	}
	if got := addColumnSQL("18.16.1", "db.t_local", "main", AddedColumns[0]); !strings.HasPrefix(got, "ALTER TABLE db.t_local ON CLUSTER main ADD COLUMN cost_usd ") {
		t.Errorf("ALTER on a cluster: %s", got)
	}
	if _, err := NewClickHouse(ClickHouseOptions{Addr: "127.0.0.1:9000", Cluster: "a b"}); err == nil {
		t.Error("a cluster name that is not an identifier was accepted")
	}
}

// clusterNodes returns the native addresses of a ClickHouse cluster's
// nodes and its name, from SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS
// (comma-separated, one shard whose replicas are all the nodes) and
// SLUICE_TEST_CLICKHOUSE_CLUSTER, or skips. docs/transcripts.md shows how
// to start one on one machine (ZooKeeper and two 18.16 servers).
func clusterNodes(t *testing.T) ([]string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a ClickHouse cluster: skipped under -short")
	}
	addrs, name := os.Getenv("SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS"), os.Getenv("SLUICE_TEST_CLICKHOUSE_CLUSTER")
	if addrs == "" || name == "" {
		t.Skip("SLUICE_TEST_CLICKHOUSE_CLUSTER_ADDRS and SLUICE_TEST_CLICKHOUSE_CLUSTER are not set: no ClickHouse cluster")
	}
	return strings.Split(addrs, ","), name
}

// TestClickHouseCluster: a writer with a cluster creates the tables on
// every node, rows inserted through one node are read on every other
// (replicated), a replayed batch is counted once by the shipped queries'
// FINAL, and a second writer (another Sluice, on another node) finds the
// tables there.
func TestClickHouseCluster(t *testing.T) {
	nodes, cluster := clusterNodes(t)
	ctx := context.Background()
	db := fmt.Sprintf("sluice_cluster_%d", time.Now().UnixNano())
	writers := make([]*ClickHouse, len(nodes))
	for i, addr := range nodes {
		c, err := NewClickHouse(ClickHouseOptions{Addr: addr, Database: db, Cluster: cluster})
		if err != nil {
			t.Fatal(err)
		}
		writers[i] = c
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Cleanup(func() {
		_ = writers[0].Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" ON CLUSTER "+cluster)
	})
	if err := writers[0].Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range writers {
		var engine string
		if err := c.Conn().QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?",
			db, LocalTable("transcripts")).Scan(&engine); err != nil || engine != "ReplicatedReplacingMergeTree" {
			t.Fatalf("node %d: local table engine %q, %v", i, engine, err)
		}
		if err := c.Conn().QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?",
			db, "transcripts").Scan(&engine); err != nil || engine != "Distributed" {
			t.Fatalf("node %d: table engine %q, %v", i, engine, err)
		}
	}
	recs := batchOf(0, 300)
	if err := writers[0].Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// The Distributed table forwards in the background, then the replicas
	// fetch: every node sees the rows within seconds.
	for i, c := range writers {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if n := chCount(t, c, "SELECT count() FROM "+db+"."+LocalTable("transcripts")); n == 300 {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("node %d holds %d rows after 20 s, want 300", i, n)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// A second Sluice on another node: Ensure finds the tables and the
	// column, and its replay of the same batch (the spool after a timeout
	// whose insert had landed) is counted once.
	if err := writers[len(writers)-1].Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	q := Queries(writers[0].Table())["requests_per_day"]
	if q == "" {
		t.Fatal("no requests_per_day query")
	}
	for i, c := range writers {
		var total uint64
		rows, err := c.Conn().Query(ctx, "SELECT count() FROM "+c.Table()+" FINAL")
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		for rows.Next() {
			if err := rows.Scan(&total); err != nil {
				t.Fatal(err)
			}
		}
		rows.Close()
		if total != 300 {
			t.Errorf("node %d: FINAL counts %d rows after a replay, want 300", i, total)
		}
		rows, err = c.Conn().Query(ctx, q)
		if err != nil {
			t.Errorf("node %d: requests_per_day on the Distributed table: %v", i, err)
			continue
		}
		var day time.Time
		var n, ids uint64
		total = 0
		for rows.Next() {
			if err := rows.Scan(&day, &n, &ids); err != nil {
				t.Fatalf("node %d: requests_per_day row: %v", i, err)
			}
			total += n
		}
		rows.Close()
		if total != 300 {
			t.Errorf("node %d: requests_per_day counts %d requests, want 300", i, total)
		}
	}
}
