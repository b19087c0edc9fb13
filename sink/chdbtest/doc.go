// Package chdbtest runs the sink's modern DDL and shipped queries on a
// current ClickHouse engine, in process, through chDB (libchdb.so loaded
// without cgo). It is a module of its own so that chdb-go stays out of
// Sluice's go.mod; scripts/test.sh runs it with CHDB_LIB_PATH set, and the
// test skips when the library is absent.
package chdbtest
