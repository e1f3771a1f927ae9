//go:build race

package bounce

// raceEnabled shortens the long differential tests under the race
// detector, which slows Go's regexp about tenfold; they are
// single-goroutine and test logic, not concurrency.
const raceEnabled = true
