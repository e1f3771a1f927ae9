package shaping

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// ParseDuration parses a duration as KumoMTA's configuration does (the
// humantime crate): one or more "<integer><unit>" terms, spaces allowed
// between and inside terms ("90m", "2 hours", "1h 30m", "5 minutes").
// Units: ns nsec nanos, us usec, ms msec millis, s sec secs second
// seconds, m min mins minute minutes, h hr hrs hour hours, d day days,
// w week weeks, M month months (30.44 days), y year years (365.25 days).
// Units are case-sensitive ("M" is months, "m" minutes). Fractions such as
// "1.5h" are rejected, as by humantime.
func ParseDuration(s string) (time.Duration, error) {
	bad := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("invalid duration %q: %s (want e.g. \"30s\", \"5 minutes\", \"2 hours\")", s, why)
	}
	i, n := 0, len(s)
	skipSpace := func() {
		for i < n && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	var total time.Duration
	terms := 0
	for {
		skipSpace()
		if i == n {
			break
		}
		start := i
		var v uint64
		for i < n && s[i] >= '0' && s[i] <= '9' {
			if v > (math.MaxUint64-9)/10 {
				return bad("number too large")
			}
			v = v*10 + uint64(s[i]-'0')
			i++
		}
		if i == start {
			return bad("expected a number")
		}
		skipSpace()
		ustart := i
		for i < n && (s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z' || s[i] == 0xc2 || s[i] == 0xb5) {
			i++
		}
		unit := s[ustart:i]
		if unit == "" {
			return bad("missing unit")
		}
		var mult time.Duration
		switch unit {
		case "nanos", "nsec", "ns":
			mult = time.Nanosecond
		case "usec", "us", "µs":
			mult = time.Microsecond
		case "millis", "msec", "ms":
			mult = time.Millisecond
		case "seconds", "second", "secs", "sec", "s":
			mult = time.Second
		case "minutes", "minute", "min", "mins", "m":
			mult = time.Minute
		case "hours", "hour", "hr", "hrs", "h":
			mult = time.Hour
		case "days", "day", "d":
			mult = 24 * time.Hour
		case "weeks", "week", "w":
			mult = 7 * 24 * time.Hour
		case "months", "month", "M":
			mult = 2630016 * time.Second
		case "years", "year", "y":
			mult = 31557600 * time.Second
		default:
			return bad(fmt.Sprintf("unknown unit %q", unit))
		}
		if v > uint64(math.MaxInt64/int64(mult)) {
			return bad("out of range")
		}
		d := time.Duration(v) * mult
		if total > math.MaxInt64-d {
			return bad("out of range")
		}
		total += d
		terms++
	}
	if terms == 0 {
		return bad("empty")
	}
	return total, nil
}

// durationValue converts a TOML value to a duration as KumoMTA's
// duration_serde does: a string in ParseDuration's syntax, or a
// non-negative number of seconds.
func durationValue(v any) (time.Duration, error) {
	switch x := v.(type) {
	case string:
		return ParseDuration(strings.TrimSpace(x))
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("negative duration %d", x)
		}
		if x > math.MaxInt64/int64(time.Second) {
			return 0, fmt.Errorf("duration %d out of range", x)
		}
		return time.Duration(x) * time.Second, nil
	case float64:
		if x < 0 || math.IsNaN(x) || x > float64(math.MaxInt64/int64(time.Second)) {
			return 0, fmt.Errorf("invalid duration %v", x)
		}
		return time.Duration(x * float64(time.Second)), nil
	}
	return 0, fmt.Errorf("want a duration string such as \"30s\" or a number of seconds, got %s", tomlTypeName(v))
}
