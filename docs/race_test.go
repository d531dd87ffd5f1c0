//go:build race

package docs_test

// raceEnabled says the test runs with the race detector, so the binaries
// it builds use the same build cache entries.
const raceEnabled = true
