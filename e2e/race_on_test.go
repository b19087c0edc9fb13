//go:build race

package e2e

// raceEnabled reports that the test binary runs with the race detector.
const raceEnabled = true
