package sink

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

// queryFiles are the shipped SQL files (queries/*.sql). They name the table
// "sluice.transcripts"; Queries substitutes another.
//
//go:embed queries/*.sql
var queryFiles embed.FS

// ShippedTable is the table name the shipped queries are written for.
const ShippedTable = "sluice.transcripts"

// Queries returns the shipped queries by file name (without ".sql"), with
// table in place of ShippedTable. Each counts a request once even when a
// replay wrote its row twice.
func Queries(table string) map[string]string {
	out := map[string]string{}
	names, _ := fs.Glob(queryFiles, "queries/*.sql")
	sort.Strings(names)
	for _, n := range names {
		b, err := queryFiles.ReadFile(n)
		if err != nil {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(n, "queries/"), ".sql")
		out[name] = strings.ReplaceAll(string(b), ShippedTable, table)
	}
	return out
}
