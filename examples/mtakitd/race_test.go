//go:build race

package main

// raceEnabled: the race detector multiplies memory use, so memory bounds
// are not measured under it.
const raceEnabled = true
