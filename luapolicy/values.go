package luapolicy

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/shaping"
)

// toGo converts a Lua value to the Go value JSON would give: nil, bool,
// float64 or int64 (integral numbers), string, []any (a table with keys
// 1..n) or map[string]any. Userdata converts to its Go value. Functions,
// threads and channels are errors.
func toGo(v lua.LValue) (any, error) { return toGoDepth(v, 0) }

func toGoDepth(v lua.LValue, depth int) (any, error) {
	if depth > 64 {
		return nil, errors.New("table nesting deeper than 64 (a cycle?)")
	}
	switch v := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(v), nil
	case lua.LNumber:
		f := float64(v)
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f), nil
		}
		return f, nil
	case lua.LString:
		return string(v), nil
	case *lua.LUserData:
		return v.Value, nil
	case *lua.LTable:
		n := v.Len()
		if n > 0 || isEmptyTable(v) {
			arr := make([]any, 0, n)
			isArray := true
			v.ForEach(func(k, _ lua.LValue) {
				if kn, ok := k.(lua.LNumber); !ok || float64(kn) < 1 || float64(kn) > float64(n) || float64(kn) != math.Trunc(float64(kn)) {
					isArray = false
				}
			})
			if isArray {
				for i := 1; i <= n; i++ {
					e, err := toGoDepth(v.RawGetInt(i), depth+1)
					if err != nil {
						return nil, err
					}
					arr = append(arr, e)
				}
				return arr, nil
			}
		}
		m := map[string]any{}
		var err error
		v.ForEach(func(k, e lua.LValue) {
			if err != nil {
				return
			}
			var key string
			switch k := k.(type) {
			case lua.LString:
				key = string(k)
			case lua.LNumber:
				key = k.String()
			default:
				err = fmt.Errorf("table key of type %s", k.Type())
				return
			}
			var g any
			if g, err = toGoDepth(e, depth+1); err == nil {
				m[key] = g
			}
		})
		return m, err
	}
	return nil, fmt.Errorf("cannot convert a Lua %s", v.Type())
}

func isEmptyTable(t *lua.LTable) bool {
	k, _ := t.Next(lua.LNil)
	return k == lua.LNil
}

// toLua converts a Go value (as produced by toGo, encoding/json or the
// TOML decoder) to Lua.
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case time.Time:
		return lua.LString(v.Format(time.RFC3339Nano))
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case []string:
		t := L.CreateTable(len(v), 0)
		for _, e := range v {
			t.Append(lua.LString(e))
		}
		return t
	case []map[string]any:
		t := L.CreateTable(len(v), 0)
		for _, e := range v {
			t.Append(toLua(L, e))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for k, e := range v {
			t.RawSetString(k, toLua(L, e))
		}
		return t
	case lua.LValue:
		return v
	}
	ud := L.NewUserData()
	ud.Value = v
	return ud
}

// ParseSize parses a byte size: a number, or a number with a unit such as
// "20MiB", "128 KiB", "1_000_000", "10mb" (KB/MB/GB are decimal, KiB/MiB/GiB
// binary, as KumoMTA's size parser does).
func ParseSize(s string) (int64, error) {
	in := strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(s), "_", ""), ",", "")
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	n, err := strconv.ParseFloat(in[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %v", s, err)
	}
	var mul float64
	switch strings.ToLower(strings.TrimSpace(in[i:])) {
	case "", "b":
		mul = 1
	case "k", "kb":
		mul = 1e3
	case "kib":
		mul = 1 << 10
	case "m", "mb":
		mul = 1e6
	case "mib":
		mul = 1 << 20
	case "g", "gb":
		mul = 1e9
	case "gib":
		mul = 1 << 30
	default:
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, in[i:])
	}
	return int64(n * mul), nil
}

// fields decodes a parameter table (as a Go map) for one KumoMTA function,
// remembering which keys were used so that unknown ones can be reported.
type fields struct {
	what string // "kumo.start_esmtp_listener" or "queues.toml [queue.default]"
	m    map[string]any
	used map[string]bool
	errs []error
}

func newFields(what string, v any) *fields {
	f := &fields{what: what, used: map[string]bool{}}
	switch v := v.(type) {
	case map[string]any:
		f.m = v
	case nil:
		f.m = map[string]any{}
	case []any:
		if len(v) == 0 {
			f.m = map[string]any{}
			break
		}
		f.errs = append(f.errs, fmt.Errorf("%s: expected a table of named parameters, got a list", what))
		f.m = map[string]any{}
	default:
		f.errs = append(f.errs, fmt.Errorf("%s: expected a table of parameters, got %s", what, typeName(v)))
		f.m = map[string]any{}
	}
	return f
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "nil"
	case bool:
		return "a boolean"
	case int64, float64, int:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

func (f *fields) fail(key string, format string, args ...any) {
	f.errs = append(f.errs, fmt.Errorf("%s: parameter %q: %s", f.what, key, fmt.Sprintf(format, args...)))
}

func (f *fields) get(key string) (any, bool) {
	f.used[key] = true
	v, ok := f.m[key]
	if v == nil {
		return nil, false
	}
	return v, ok
}

// ignore marks KumoMTA parameters that mtakit accepts and does not use.
func (f *fields) ignore(keys ...string) []string {
	var set []string
	for _, k := range keys {
		if _, ok := f.get(k); ok {
			set = append(set, k)
		}
	}
	return set
}

func (f *fields) str(key string, dst *string) bool {
	v, ok := f.get(key)
	if !ok {
		return false
	}
	s, isStr := v.(string)
	if !isStr {
		f.fail(key, "expected a string, got %s", typeName(v))
		return false
	}
	*dst = s
	return true
}

func (f *fields) boolean(key string, dst *bool) bool {
	v, ok := f.get(key)
	if !ok {
		return false
	}
	b, isBool := v.(bool)
	if !isBool {
		f.fail(key, "expected true or false, got %s", typeName(v))
		return false
	}
	*dst = b
	return true
}

func (f *fields) integer(key string, dst *int) bool {
	v, ok := f.get(key)
	if !ok {
		return false
	}
	switch n := v.(type) {
	case int64:
		*dst = int(n)
		return true
	case string:
		x, err := strconv.Atoi(strings.NewReplacer("_", "", ",", "").Replace(n))
		if err == nil {
			*dst = x
			return true
		}
	}
	f.fail(key, "expected an integer, got %s", describe(v))
	return false
}

func (f *fields) duration(key string, dst *time.Duration) bool {
	v, ok := f.get(key)
	if !ok {
		return false
	}
	switch n := v.(type) {
	case int64:
		*dst = time.Duration(n) * time.Second
		return true
	case float64:
		*dst = time.Duration(n * float64(time.Second))
		return true
	case string:
		d, err := shaping.ParseDuration(n)
		if err != nil {
			f.fail(key, "%v", err)
			return false
		}
		*dst = d
		return true
	}
	f.fail(key, "expected a duration such as \"5 minutes\", got %s", typeName(v))
	return false
}

func (f *fields) size(key string, dst *int64) bool {
	v, ok := f.get(key)
	if !ok {
		return false
	}
	switch n := v.(type) {
	case int64:
		*dst = n
		return true
	case string:
		s, err := ParseSize(n)
		if err != nil {
			f.fail(key, "%v", err)
			return false
		}
		*dst = s
		return true
	}
	f.fail(key, "expected a size such as \"20MiB\", got %s", typeName(v))
	return false
}

func (f *fields) strings(key string, dst *[]string) bool {
	v, ok := f.get(key)
	if !ok {
		return false
	}
	list, err := stringList(v)
	if err != nil {
		f.fail(key, "%v", err)
		return false
	}
	*dst = list
	return true
}

func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("element %d: expected a string, got %s", i+1, typeName(e))
			}
			out = append(out, s)
		}
		return out, nil
	case map[string]any:
		if len(v) == 0 {
			return []string{}, nil
		}
	}
	return nil, fmt.Errorf("expected a list of strings, got %s", typeName(v))
}

func describe(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return typeName(v)
}

// enum checks a string parameter against KumoMTA's variant names.
func (f *fields) enum(key string, dst *string, allowed ...string) bool {
	var s string
	if !f.str(key, &s) {
		return false
	}
	for _, a := range allowed {
		if s == a {
			*dst = s
			return true
		}
	}
	f.fail(key, "invalid value %q (want one of %s)", s, strings.Join(allowed, ", "))
	return false
}

// done reports unknown keys (KumoMTA's deny_unknown_fields) and returns
// the errors found.
func (f *fields) done() error {
	var unknown []string
	for k := range f.m {
		if !f.used[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		f.errs = append(f.errs, fmt.Errorf("%s: unknown parameter %q", f.what, k))
	}
	return errors.Join(f.errs...)
}
