//go:build race

package mta_test

// raceEnabled: the race detector keeps shadow memory for what a test
// allocates, so tests of real memory usage skip under it.
const raceEnabled = true
