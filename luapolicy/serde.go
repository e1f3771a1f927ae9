package luapolicy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
	lua "github.com/yuin/gopher-lua"
)

// normalize turns decoder output into the value shapes toGo produces:
// []map[string]any (TOML arrays of tables) becomes []any, float64 numbers
// that are integral stay float64 (JSON), TOML integers are int64.
func normalize(v any) any {
	switch v := v.(type) {
	case []map[string]any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	case []any:
		for i, e := range v {
			v[i] = normalize(e)
		}
		return v
	case map[string]any:
		for k, e := range v {
			v[k] = normalize(e)
		}
		return v
	case float64:
		if v == float64(int64(v)) {
			return int64(v)
		}
		return v
	}
	return v
}

// resolvePath makes a relative file name relative to the policy's
// directory.
func (p *Policy) resolvePath(name string) string {
	if filepath.IsAbs(name) || p.dir == "" {
		return name
	}
	return filepath.Join(p.dir, name)
}

// readData reads a TOML or JSON data file into Go values. Errors name the
// file and, for syntax errors, the line.
func readData(path string) (any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.HasSuffix(path, ".json") {
		return parseJSON(path, data)
	}
	return parseTOML(path, data)
}

func parseTOML(name string, data []byte) (any, error) {
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		if pe, ok := err.(toml.ParseError); ok {
			return nil, fmt.Errorf("%s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return normalize(m), nil
}

func parseJSON(name string, data []byte) (any, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		if se, ok := err.(*json.SyntaxError); ok {
			line := 1 + bytes.Count(data[:se.Offset], []byte("\n"))
			return nil, fmt.Errorf("%s:%d: %v", name, line, err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return normalize(jsonNumbers(v)), nil
}

func jsonNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i, e := range v {
			v[i] = jsonNumbers(e)
		}
	case map[string]any:
		for k, e := range v {
			v[k] = jsonNumbers(e)
		}
	}
	return v
}

func (s *state) loadFile(L *lua.LState, parse func(string, []byte) (any, error)) int {
	name := s.p.resolvePath(L.CheckString(1))
	s.p.track(name)
	data, err := os.ReadFile(name)
	if err != nil {
		L.RaiseError("%v", err)
	}
	v, err := parse(name, data)
	if err != nil {
		L.RaiseError("%v", err)
	}
	L.Push(toLua(L, v))
	return 1
}

func (s *state) tomlLoad(L *lua.LState) int { return s.loadFile(L, parseTOML) }
func (s *state) jsonLoad(L *lua.LState) int { return s.loadFile(L, parseJSON) }

func (s *state) tomlParse(L *lua.LState) int {
	v, err := parseTOML("TOML text", []byte(L.CheckString(1)))
	if err != nil {
		L.RaiseError("kumo.toml_parse: %v", err)
	}
	L.Push(toLua(L, v))
	return 1
}

func (s *state) jsonParse(L *lua.LState) int {
	v, err := parseJSON("JSON text", []byte(L.CheckString(1)))
	if err != nil {
		L.RaiseError("kumo.json_parse: %v", err)
	}
	L.Push(toLua(L, v))
	return 1
}

func (s *state) encodeArg(L *lua.LState, fn string) any {
	v, err := toGo(L.Get(1))
	if err != nil {
		L.RaiseError("%s: %v", fn, err)
	}
	return v
}

func (s *state) jsonEncode(L *lua.LState) int {
	b, err := json.Marshal(s.encodeArg(L, "kumo.json_encode"))
	if err != nil {
		L.RaiseError("kumo.json_encode: %v", err)
	}
	L.Push(lua.LString(b))
	return 1
}

func (s *state) jsonEncodePretty(L *lua.LState) int {
	b, err := json.MarshalIndent(s.encodeArg(L, "kumo.json_encode_pretty"), "", "  ")
	if err != nil {
		L.RaiseError("kumo.json_encode_pretty: %v", err)
	}
	L.Push(lua.LString(b))
	return 1
}

func (s *state) tomlEncode(L *lua.LState) int {
	v := s.encodeArg(L, "kumo.toml_encode")
	if _, ok := v.(map[string]any); !ok {
		L.RaiseError("kumo.toml_encode: expected a table with named keys, got %s", typeName(v))
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		L.RaiseError("kumo.toml_encode: %v", err)
	}
	L.Push(lua.LString(b.String()))
	return 1
}
