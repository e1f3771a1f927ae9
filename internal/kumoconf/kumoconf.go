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

	"github.com/BurntSushi/toml"

	"github.com/mtakit/mtakit/shaping"
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

// ParseDuration parses humantime's duration syntax ("10 hours", "1h 30m",
// "17mins"), as shaping.ParseDuration, which is the one implementation.
func ParseDuration(s string) (time.Duration, error) { return shaping.ParseDuration(s) }

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
