// Package kumoconf holds helpers shared by the loaders of KumoMTA's
// policy-extras TOML files (egress's sources.toml, mta/queues's
// queues.toml): KumoMTA's duration syntax and errors that name the file
// and line of a TOML key.
package kumoconf

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
)

// Duration is a duration as KumoMTA's duration_serde reads it: a string in
// humantime syntax ("10 hours", "17 mins", "1h 30m") or a number of
// seconds (integer or float). It implements toml.Unmarshaler.
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		dur, err := ParseDuration(x)
		if err != nil {
			return err
		}
		*d = Duration(dur)
	case int64:
		if x < 0 || x > math.MaxInt64/int64(time.Second) {
			return fmt.Errorf("duration %d out of range (want a positive number of seconds)", x)
		}
		*d = Duration(time.Duration(x) * time.Second)
	case float64:
		if x < 0 || math.IsNaN(x) || x > float64(math.MaxInt64/int64(time.Second)) {
			return fmt.Errorf("duration %v out of range (want a positive number of seconds)", x)
		}
		*d = Duration(time.Duration(x * float64(time.Second)))
	default:
		return fmt.Errorf("invalid type %T for a duration (want a string such as \"5 mins\" or a number of seconds)", v)
	}
	return nil
}

// humantime's units (humantime::parse_duration, which KumoMTA uses).
var units = map[string]time.Duration{
	"nanos": time.Nanosecond, "nsec": time.Nanosecond, "ns": time.Nanosecond,
	"usec": time.Microsecond, "us": time.Microsecond, "µs": time.Microsecond,
	"millis": time.Millisecond, "msec": time.Millisecond, "ms": time.Millisecond,
	"seconds": time.Second, "second": time.Second, "secs": time.Second, "sec": time.Second, "s": time.Second,
	"minutes": time.Minute, "minute": time.Minute, "min": time.Minute, "mins": time.Minute, "m": time.Minute,
	"hours": time.Hour, "hour": time.Hour, "hr": time.Hour, "hrs": time.Hour, "h": time.Hour,
	"days": 24 * time.Hour, "day": 24 * time.Hour, "d": 24 * time.Hour,
	"weeks": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "w": 7 * 24 * time.Hour,
	"months": 2630016 * time.Second, "month": 2630016 * time.Second, "M": 2630016 * time.Second,
	"years": 31557600 * time.Second, "year": 31557600 * time.Second, "y": 31557600 * time.Second,
}

// ParseDuration parses humantime's duration syntax: one or more
// "<integer><unit>" terms, with optional spaces between number and unit
// and between terms ("10 hours", "1h 30m", "17mins").
func ParseDuration(s string) (time.Duration, error) {
	bad := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("invalid duration %q: %s", s, why)
	}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return bad("empty")
	}
	var total time.Duration
	for rest != "" {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i == 0 {
			return bad("expected a number")
		}
		if i < 0 {
			return bad("time unit needed, for example " + rest + "s")
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return bad("number out of range")
		}
		rest = strings.TrimLeft(rest[i:], " \t")
		j := strings.IndexFunc(rest, func(r rune) bool { return !unicode.IsLetter(r) })
		if j < 0 {
			j = len(rest)
		}
		unit, ok := units[rest[:j]]
		if !ok {
			return bad(fmt.Sprintf("unknown time unit %q", rest[:j]))
		}
		if n > 0 && unit > math.MaxInt64/time.Duration(n) || total > math.MaxInt64-unit*time.Duration(n) {
			return bad("out of range")
		}
		total += unit * time.Duration(n)
		rest = strings.TrimLeft(rest[j:], " \t")
	}
	return total, nil
}

// errPositionProbe is returned by positionProbe so that the TOML decoder
// reports the position of the key being decoded.
var errPositionProbe = errors.New("mtakit position probe")

// positionProbe fails to decode whatever value it is given.
type positionProbe struct{}

func (positionProbe) UnmarshalTOML(any) error { return errPositionProbe }

// KeyLine returns the line on which key is defined in the TOML document
// doc, or 0 if it cannot tell.
//
// BurntSushi/toml records key positions but only reveals them in decode
// errors, so this decodes doc once more into a struct type built for the
// purpose (nested fields named after the key's parts, ending in a value
// that refuses to decode) and reads the line from the ParseError.
func KeyLine(doc string, key toml.Key) int {
	if len(key) == 0 {
		return 0
	}
	t := reflect.TypeOf(positionProbe{})
	for i := len(key) - 1; i >= 0; i-- {
		if strings.Contains(key[i], ",") {
			return 0 // a struct tag cannot name this key
		}
		t = reflect.StructOf([]reflect.StructField{{
			Name: "F",
			Type: t,
			Tag:  reflect.StructTag("toml:" + strconv.Quote(key[i])),
		}})
	}
	v := reflect.New(t)
	_, err := toml.Decode(doc, v.Interface())
	var pe toml.ParseError
	if errors.As(err, &pe) && pe.Message == errPositionProbe.Error() {
		return pe.Position.Line
	}
	return 0
}

// FormatKey writes a TOML key path as it appears in a file:
// pool."pool-1"."ip-1".weight quotes the parts that need it.
func FormatKey(key toml.Key) string {
	parts := make([]string, len(key))
	for i, k := range key {
		if k != "" && strings.IndexFunc(k, func(r rune) bool {
			return !(r == '_' || r == '-' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9'))
		}) < 0 {
			parts[i] = k
		} else {
			parts[i] = strconv.Quote(k)
		}
	}
	return strings.Join(parts, ".")
}

// KeyError formats an error about key in file as "file:line: message",
// or "file: message" when the line is not known.
func KeyError(file, doc string, key toml.Key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line := KeyLine(doc, key); line > 0 {
		return fmt.Errorf("%s:%d: %s", file, line, msg)
	}
	return fmt.Errorf("%s: %s", file, msg)
}

// tomlLineErr matches BurntSushi/toml's type-mismatch errors.
var tomlLineErr = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*?)"\): (.*)$`)

// DecodeError turns an error from toml.Decode of file into
// "file:line: message".
func DecodeError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s:%d: %s", file, pe.Position.Line, pe.Message)
	}
	if m := tomlLineErr.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%s:%s: %s: %s", file, m[1], m[2], m[3])
	}
	return fmt.Errorf("%s: %w", file, err)
}

// UndecodedErrors reports each key of md.Undecoded() as "unknown key",
// once per table: keys below an unknown key are not repeated. skip, if
// not nil, exempts keys the caller decodes itself.
func UndecodedErrors(file, doc string, md toml.MetaData, skip func(toml.Key) bool) []error {
	var errs []error
	var reported []toml.Key
	for _, k := range md.Undecoded() {
		if skip != nil && skip(k) {
			continue
		}
		if slices.ContainsFunc(reported, func(p toml.Key) bool {
			return len(k) > len(p) && slices.Equal(k[:len(p)], p)
		}) {
			continue
		}
		reported = append(reported, k)
		errs = append(errs, KeyError(file, doc, k, "unknown key %s", FormatKey(k)))
	}
	return errs
}
