// Package testkit holds the helpers Sluice's tests share: one reader of the
// Prometheus text format (Metrics, Scrape) and one poller (Eventually, Poll).
// It imports no Sluice package, so any package's tests may use it.
package testkit
