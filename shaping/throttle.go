package shaping

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ThrottleSpec is a parsed KumoMTA ThrottleSpec: Limit events per Period,
// with an optional burst.
type ThrottleSpec struct {
	Limit    int
	Period   time.Duration
	MaxBurst int  // 0 means Limit
	Local    bool // "local:" prefix: never shared across nodes
}

// Burst returns the burst size: MaxBurst, or Limit when unset.
func (t ThrottleSpec) Burst() int {
	if t.MaxBurst > 0 {
		return t.MaxBurst
	}
	return t.Limit
}

// String formats t in KumoMTA's canonical form, e.g. "100/s".
func (t ThrottleSpec) String() string {
	var b strings.Builder
	if t.Local {
		b.WriteString("local:")
	}
	b.WriteString(strconv.Itoa(t.Limit) + "/")
	switch t.Period {
	case time.Second:
		b.WriteString("s")
	case time.Minute:
		b.WriteString("m")
	case time.Hour:
		b.WriteString("h")
	case 24 * time.Hour:
		b.WriteString("d")
	default:
		b.WriteString(strconv.FormatFloat(t.Period.Seconds(), 'f', -1, 64) + "s")
	}
	if t.MaxBurst > 0 {
		b.WriteString(",max_burst=" + strconv.Itoa(t.MaxBurst))
	}
	return b.String()
}

// ParseThrottle parses a ThrottleSpec as KumoMTA does:
// "[local:]LIMIT/[N]PERIOD[,max_burst=B]" where PERIOD is one of s, sec,
// second, m, min, minute, h, hr, hour, d, day, optionally preceded by an
// integer multiplier ("10/5min"), and LIMIT and B may contain "_" or ","
// digit separators ("1,000/h").
func ParseThrottle(spec string) (ThrottleSpec, error) {
	var t ThrottleSpec
	s := strings.TrimSpace(spec)
	if rest, ok := strings.CutPrefix(s, "local:"); ok {
		t.Local, s = true, rest
	}
	s, burstPart, hasBurst := strings.Cut(s, ",max_burst=")
	limitPart, periodPart, ok := strings.Cut(s, "/")
	if !ok {
		return t, fmt.Errorf("shaping: throttle %q: want LIMIT/PERIOD", spec)
	}
	limit, err := strconv.Atoi(strings.NewReplacer("_", "", ",", "").Replace(limitPart))
	if err != nil || limit <= 0 {
		return t, fmt.Errorf("shaping: throttle %q: limit must be a positive integer", spec)
	}
	t.Limit = limit
	i := 0
	for i < len(periodPart) && periodPart[i] >= '0' && periodPart[i] <= '9' {
		i++
	}
	mult := 1
	if i > 0 {
		mult, err = strconv.Atoi(periodPart[:i])
		if err != nil || mult <= 0 || mult > 1<<20 {
			return t, fmt.Errorf("shaping: throttle %q: bad period multiplier", spec)
		}
	}
	var unit time.Duration
	switch periodPart[i:] {
	case "s", "sec", "second":
		unit = time.Second
	case "m", "min", "minute":
		unit = time.Minute
	case "h", "hr", "hour":
		unit = time.Hour
	case "d", "day":
		unit = 24 * time.Hour
	default:
		return t, fmt.Errorf("shaping: throttle %q: unknown period %q (want s, sec, second, m, min, minute, h, hr, hour, d or day)", spec, periodPart[i:])
	}
	t.Period = time.Duration(mult) * unit
	if hasBurst {
		b, err := strconv.Atoi(strings.NewReplacer("_", "", ",", "").Replace(burstPart))
		if err != nil || b <= 0 {
			return t, fmt.Errorf("shaping: throttle %q: max_burst must be a positive integer", spec)
		}
		t.MaxBurst = b
	}
	return t, nil
}

// PerSecond returns the sustained rate of t in events per second.
func (t ThrottleSpec) PerSecond() float64 {
	if t.Period <= 0 {
		return 0
	}
	return float64(t.Limit) / t.Period.Seconds()
}

// LimitSpec is a parsed KumoMTA LimitSpec, the value of connection_limit
// and of the entries of additional_connection_limits: a maximum count,
// shared by a fleet unless Local ("local:" prefix).
type LimitSpec struct {
	Limit int
	Local bool
}

// String formats l as KumoMTA writes it: "10" or "local:10".
func (l LimitSpec) String() string {
	if l.Local {
		return "local:" + strconv.Itoa(l.Limit)
	}
	return strconv.Itoa(l.Limit)
}

// ParseLimit parses a LimitSpec: "[local:]N" where N is a positive integer
// that may contain "_" or "," digit separators ("1,000").
func ParseLimit(spec string) (LimitSpec, error) {
	var l LimitSpec
	s := spec
	if rest, ok := strings.CutPrefix(s, "local:"); ok {
		l.Local, s = true, rest
	}
	n, err := strconv.Atoi(strings.NewReplacer("_", "", ",", "").Replace(s))
	if err != nil || n <= 0 {
		return LimitSpec{}, fmt.Errorf("shaping: limit %q: want a positive integer, optionally prefixed by \"local:\"", spec)
	}
	l.Limit = n
	return l, nil
}
