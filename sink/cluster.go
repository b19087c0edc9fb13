package sink

// Transcripts on a ClickHouse cluster (ClickHouseOptions.Cluster). Every
// statement runs ON CLUSTER, so one Sluice creates the tables on every
// node, and a second one (or a restart) finds them there:
//
//   - Table_local on every node: the same columns, sort key and partitions
//     as the single-server table, with ReplicatedReplacingMergeTree at
//     /clickhouse/tables/{shard}/DATABASE/Table_local, replica {replica}.
//     The servers' <macros> give {shard} and {replica}; their <zookeeper>
//     (ZooKeeper or ClickHouse Keeper) keeps the replication log.
//   - Table, a Distributed table over Table_local, sharded by
//     cityHash64(user). Sluice inserts into it on the node it is connected
//     to; that node forwards each row to its shard (in the background, from
//     its own disk queue), and one replica per shard replicates it to the
//     others. Reads, the shipped queries included, go through it too.
//
// Why through a Distributed table rather than straight into Table_local on
// one node: Sluice keeps one connection address, so without it every row
// would land on one shard. Why sharded by user: a replayed batch (the spool
// after an outage) sends each row to the shard that holds its first copy,
// where ReplacingMergeTree collapses the two and FINAL, which runs per
// shard, reads one; per-user history reads one shard. When the node Sluice
// talks to is down, batches go to the spool as with one server.

// LocalTable is the name of the table that holds a cluster's rows on each
// node, for the Distributed table named table.
func LocalTable(table string) string { return table + "_local" }

// ClusterDDL returns the statements that create the transcript tables on a
// cluster, in order: the replicated local table, then the Distributed
// table over it (see the comment above). The database is created first by
// the caller, ON CLUSTER too.
func ClusterDDL(version, database, table, cluster string, ttlDays int) []string {
	local := LocalTable(table)
	engine := "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/" + database + "/" + local + "', '{replica}')"
	return []string{
		ddl(version, database+"."+local, cluster, engine, ttlDays),
		"CREATE TABLE IF NOT EXISTS " + database + "." + table + onCluster(cluster) + " AS " + database + "." + local +
			"\nENGINE = Distributed(" + cluster + ", " + database + ", " + local + ", cityHash64(user))",
	}
}

// onCluster is the ON CLUSTER clause for cluster, "" for none.
func onCluster(cluster string) string {
	if cluster == "" {
		return ""
	}
	return " ON CLUSTER " + cluster
}
