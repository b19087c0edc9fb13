package testkit

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually and Poll try their condition.
const PollInterval = 10 * time.Millisecond

// Poll calls cond every PollInterval until it holds or d passes, and
// reports whether it held. cond is called at least once.
func Poll(d time.Duration, cond func() bool) bool {
	return PollEvery(d, PollInterval, cond)
}

// PollEvery is Poll trying every interval, for a condition that costs more
// than a loopback round trip (a query to Prometheus, a scan of a file).
func PollEvery(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// Eventually fails the test unless cond holds within d; what names the
// condition in the failure.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
