package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"sluice/sink"
)

// chServer is a ClickHouse (Debian's 18.16) that one test starts, kills,
// freezes and restarts by its PID, with its data in the test's directory,
// on loopback ports of its own.
type chServer struct {
	t      *testing.T
	bin    string
	dir    string
	addr   string // native protocol host:port
	http   string // HTTP host:port, for /ping
	cmd    *exec.Cmd
	exited chan struct{}
}

// startClickHouse starts a ClickHouse for this test. It skips under -short
// and when scripts/services.sh did not start one (so the binary may be
// missing): SLUICE_TEST_CLICKHOUSE_ADDR is empty.
func startClickHouse(t *testing.T) *chServer {
	t.Helper()
	if testing.Short() {
		t.Skip("ClickHouse end-to-end tests are long; skipped under -short")
	}
	if raceEnabled {
		// The sluice under test is built without -race; in a race-enabled
		// test process the load generator and the fake upstream run several
		// times slower and the 100k test alone takes minutes.
		// scripts/test.sh runs these tests in a step of their own.
		t.Skip("ClickHouse end-to-end tests run without -race (scripts/test.sh runs them separately)")
	}
	if os.Getenv("SLUICE_TEST_CLICKHOUSE_ADDR") == "" {
		t.Skip("SLUICE_TEST_CLICKHOUSE_ADDR is empty: no ClickHouse (scripts/services.sh start_clickhouse)")
	}
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		t.Skipf("clickhouse-server not installed: %v", err)
	}
	c := &chServer{t: t, bin: bin, dir: t.TempDir(), addr: freeAddr(t), http: freeAddr(t)}
	c.writeConfig()
	c.start()
	t.Cleanup(c.kill)
	return c
}

// writeConfig writes the same files as scripts/services.sh's
// clickhouse_config.
func (c *chServer) writeConfig() {
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			c.t.Fatal(err)
		}
	}
	port := func(a string) string { return a[strings.LastIndexByte(a, ':')+1:] }
	writeFile(c.t, filepath.Join(c.dir, "config.xml"), fmt.Sprintf(`<yandex>
  <logger><level>warning</level><log>%[1]s/log/server.log</log><errorlog>%[1]s/log/error.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>%[2]s</tcp_port>
  <http_port>%[3]s</http_port>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[1]s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`, c.dir, port(c.addr), port(c.http)))
	writeFile(c.t, filepath.Join(c.dir, "users.xml"), `<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`)
}

// start runs the server (again, on the same data) and waits for /ping.
func (c *chServer) start() {
	c.t.Helper()
	out, err := os.OpenFile(filepath.Join(c.dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	c.cmd = exec.Command(c.bin, "--config-file="+filepath.Join(c.dir, "config.xml"))
	c.cmd.Stdout, c.cmd.Stderr = out, out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("start clickhouse-server: %v", err)
	}
	exited := make(chan struct{})
	c.exited = exited
	cmd := c.cmd
	go func() {
		_ = cmd.Wait()
		_ = out.Close()
		close(exited)
	}()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(c.dir, "log", "error.log"))
			c.t.Fatalf("clickhouse-server exited at start:\n%s", log)
		default:
		}
		if resp, err := client.Get("http://" + c.http + "/ping"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("clickhouse-server not ready on %s after 30s", c.addr)
}

// kill ends the server with SIGKILL (by its PID) and waits for it.
func (c *chServer) kill() {
	if c.cmd == nil {
		return
	}
	select {
	case <-c.exited:
	default:
		_ = c.cmd.Process.Signal(syscall.SIGCONT) // a frozen process must wake to die cleanly
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// signal sends sig (SIGSTOP, SIGCONT) to the server.
func (c *chServer) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("signal %v to clickhouse-server (pid %d): %v", sig, c.cmd.Process.Pid, err)
	}
}

// conn opens a client connection for the test's queries.
func (c *chServer) conn() driver.Conn {
	c.t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{c.addr}, DialTimeout: 2 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// shippedRequests runs the shipped requests_per_day query on table and
// returns its total requests and request ids (both one per request).
func shippedRequests(t *testing.T, conn driver.Conn, table string) (requests, ids uint64, err error) {
	t.Helper()
	q := "SELECT sum(requests), sum(request_ids) FROM (" + sink.Queries(table)["requests_per_day"] + ")"
	err = conn.QueryRow(context.Background(), q).Scan(&requests, &ids)
	return requests, ids, err
}

// rawRows counts the rows in table, duplicates included.
func rawRows(t *testing.T, conn driver.Conn, table string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// transcriptConfig is a sluice.yaml that writes transcripts to ClickHouse
// at ${SLUICE_CLICKHOUSE_ADDR} with a spool in spoolDir.
func transcriptConfig(spoolDir, database, writeTimeout string) string {
	base := strings.Replace(makeConfig(configOptions{}), "  shutdown_timeout: 10s\n",
		"  shutdown_timeout: 10s\n  admin_token: ${SLUICE_ADMIN_TOKEN}\n", 1)
	return base + fmt.Sprintf(`transcripts:
  mode: clickhouse
  flush_interval: 200ms
  write_timeout: %s
  clickhouse:
    addr: ${SLUICE_CLICKHOUSE_ADDR}
    database: %s
  spool:
    dir: %s
`, writeTimeout, database, spoolDir)
}
