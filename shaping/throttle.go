package shaping

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Throttle is a parsed KumoMTA ThrottleSpec: Limit events per Period, with
// an optional burst.
type Throttle struct {
	Limit    int
	Period   time.Duration
	MaxBurst int  // 0 means Limit
	Local    bool // "local:" prefix: never shared across nodes
}

// Burst returns the burst size: MaxBurst, or Limit when unset.
func (t Throttle) Burst() int {
	if t.MaxBurst > 0 {
		return t.MaxBurst
	}
	return t.Limit
}

// String formats t in KumoMTA's canonical form, e.g. "100/s".
func (t Throttle) String() string {
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

// ParseThrottle parses a ThrottleSpec: "[local:]LIMIT/[N]PERIOD[,max_burst=B]"
// where PERIOD is one of s, sec, second, m, min, minute, h, hr, hour, d,
// day, optionally preceded by a decimal multiplier ("10/5min"), and LIMIT
// may contain "_" or "," digit separators ("1,000/h").
func ParseThrottle(spec string) (Throttle, error) {
	var t Throttle
	s := strings.TrimSpace(spec)
	if rest, ok := strings.CutPrefix(s, "local:"); ok {
		t.Local, s = true, rest
	}
	limitPart, rest, ok := strings.Cut(s, "/")
	if !ok {
		return t, fmt.Errorf("shaping: throttle %q: want LIMIT/PERIOD", spec)
	}
	periodPart, burstPart, hasBurst := strings.Cut(rest, ",max_burst=")
	limit, err := strconv.Atoi(strings.NewReplacer("_", "", ",", "").Replace(strings.TrimSpace(limitPart)))
	if err != nil || limit <= 0 {
		return t, fmt.Errorf("shaping: throttle %q: limit must be a positive integer", spec)
	}
	t.Limit = limit
	periodPart = strings.TrimSpace(periodPart)
	i := 0
	for i < len(periodPart) && (periodPart[i] >= '0' && periodPart[i] <= '9' || periodPart[i] == '.') {
		i++
	}
	mult := 1.0
	if i > 0 {
		mult, err = strconv.ParseFloat(periodPart[:i], 64)
		if err != nil || mult <= 0 {
			return t, fmt.Errorf("shaping: throttle %q: bad period multiplier", spec)
		}
	}
	var unit time.Duration
	switch strings.TrimSpace(periodPart[i:]) {
	case "s", "sec", "second", "seconds":
		unit = time.Second
	case "m", "min", "minute", "minutes":
		unit = time.Minute
	case "h", "hr", "hour", "hours":
		unit = time.Hour
	case "d", "day", "days":
		unit = 24 * time.Hour
	default:
		return t, fmt.Errorf("shaping: throttle %q: unknown period %q (want s, m, h or d)", spec, periodPart[i:])
	}
	t.Period = time.Duration(mult * float64(unit))
	if hasBurst {
		b, err := strconv.Atoi(strings.TrimSpace(burstPart))
		if err != nil || b <= 0 {
			return t, fmt.Errorf("shaping: throttle %q: max_burst must be a positive integer", spec)
		}
		t.MaxBurst = b
	}
	return t, nil
}
