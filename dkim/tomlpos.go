package dkim

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// errPositionProbe is returned by positionProbe so that the TOML decoder
// reports the position of the key being decoded.
var errPositionProbe = errors.New("mtakit position probe")

// positionProbe fails to decode whatever value it is given.
type positionProbe struct{}

func (positionProbe) UnmarshalTOML(any) error { return errPositionProbe }

// tomlKeyLine returns the line on which key is defined in the TOML
// document data, or 0 if it cannot tell.
//
// BurntSushi/toml records key positions but only reveals them in decode
// errors, so this decodes data once more into a struct type built for the
// purpose — nested fields named after the key's parts, ending in a
// positionProbe — and reads the line from the resulting ParseError.
func tomlKeyLine(data string, key toml.Key) int {
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
	_, err := toml.Decode(data, v.Interface())
	var pe toml.ParseError
	if errors.As(err, &pe) && pe.Message == errPositionProbe.Error() {
		return pe.Position.Line
	}
	return 0
}

// formatKey writes a TOML key path the way it appears in a file:
// domain."example.com".selector.
func formatKey(key toml.Key) string {
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

// tomlError formats an error for key in file as "file:line: message", or
// "file: message" when the line is not known.
func tomlError(file, data string, key toml.Key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line := tomlKeyLine(data, key); line > 0 {
		return fmt.Errorf("%s:%d: %s", file, line, msg)
	}
	return fmt.Errorf("%s: %s", file, msg)
}
