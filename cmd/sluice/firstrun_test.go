package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/fakeai"
)

// buildBinary builds cmd/sluice once for the tests that run the binary.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "sluice-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "sluice")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{string(out)}
	}
	return bin, nil
})

type buildError struct{ out string }

func (e *buildError) Error() string { return "go build: " + e.out }

func sluiceBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestHelpExitsZeroAndListsCommands(t *testing.T) {
	bin := sluiceBin(t)
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("sluice %v: %v\n%s", args, err, out)
			continue
		}
		for _, cmd := range []string{"serve", "validate", "diff", "hash-key", "gen-key", "healthcheck", "version", "help"} {
			if !strings.Contains(string(out), "sluice "+cmd) && !strings.Contains(string(out), "sluice ["+cmd+"]") {
				t.Errorf("sluice %v does not list %q:\n%s", args, cmd, out)
			}
		}
	}
	if out, err := exec.Command(bin, "serve", "-h").CombinedOutput(); err != nil || !strings.Contains(string(out), "-policies") {
		t.Errorf("sluice serve -h: %v\n%s", err, out)
	}
	if err := exec.Command(bin, "nosuch").Run(); err == nil {
		t.Error("an unknown command exits 0")
	}
}

// TestFirstRunAndShutdownDelay runs the binary on the embedded defaults with
// no key set: it prints a demo key and a curl line, and that request answers
// 200 from the fake upstream. Then SIGTERM with a shutdown delay: /readyz
// turns 503 at once while the API still answers, and the process exits only
// after the delay.
func TestFirstRunAndShutdownDelay(t *testing.T) {
	bin := sluiceBin(t)
	_, base, stop, err := fakeai.Start(fakeai.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	const delay = 1500 * time.Millisecond
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir() // the transcripts and the spool of the embedded config
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "OPENAI_BASE_URL="+base, "OPENAI_API_KEY=sk-upstream",
		"SLUICE_ADDR=127.0.0.1:0", "SLUICE_ADMIN_ADDR=127.0.0.1:0", "SLUICE_SHUTDOWN_DELAY="+delay.String())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	lines := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var adminAddr, key, curl string
	var all []string
	keyRE := regexp.MustCompile(`^\s+(sk-demo-\S+)$`)
	deadline := time.After(20 * time.Second)
	for adminAddr == "" || key == "" || curl == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("sluice exited before the first-run lines:\n%s", strings.Join(all, "\n"))
			}
			all = append(all, l)
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "admin listening" {
				adminAddr, _ = m["addr"].(string)
			}
			if k := keyRE.FindStringSubmatch(l); k != nil {
				key = k[1]
			}
			if strings.Contains(l, "curl http://") {
				curl = l
			}
		case <-deadline:
			t.Fatalf("no first-run lines in 20s:\n%s", strings.Join(all, "\n"))
		}
	}
	go func() {
		for l := range lines {
			_ = l
		}
	}()
	url := regexp.MustCompile(`http://\S+`).FindString(curl)
	if !strings.Contains(curl, "Bearer "+key) || url == "" {
		t.Fatalf("curl line %q does not carry the key %q", curl, key)
	}
	chat := func() int {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("chat: %v", err)
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := chat(); code != 200 {
		t.Fatalf("the printed curl answers %d, want 200", code)
	}
	ready := func() int {
		resp, err := http.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != 200 {
		t.Fatalf("/readyz %d before SIGTERM", code)
	}

	term := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var notReady time.Duration
	for time.Since(term) < delay/2 {
		if ready() == 503 {
			notReady = time.Since(term)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if notReady == 0 {
		t.Fatalf("/readyz still not 503 %s after SIGTERM", delay/2)
	}
	// Within the delay, a new connection is still served.
	if code := chat(); code != 200 {
		t.Errorf("a request during the shutdown delay answers %d, want 200", code)
	}
	served := time.Since(term)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		took := time.Since(term)
		t.Logf("readyz 503 after %s, request served at %s, exit after %s (delay %s)", notReady, served, took, delay)
		if err != nil {
			t.Errorf("exit: %v", err)
		}
		if took < delay {
			t.Errorf("exited %s after SIGTERM, before the %s delay", took, delay)
		}
	case <-time.After(delay + 15*time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}
