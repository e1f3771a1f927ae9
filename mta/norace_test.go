//go:build !race

package mta_test

const raceEnabled = false
