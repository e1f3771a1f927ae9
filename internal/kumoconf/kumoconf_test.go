package kumoconf

import (
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"10 hours": 10 * time.Hour, "17 mins": 17 * time.Minute, "1h 30m": 90 * time.Minute,
		"5s": 5 * time.Second, "24 hours": 24 * time.Hour, "2days": 48 * time.Hour, "1w": 7 * 24 * time.Hour,
		"100ms": 100 * time.Millisecond, " 3 min ": 3 * time.Minute, "1hour5secs": time.Hour + 5*time.Second,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "5", "h", "5 parsecs", "-5s", "1.5h", "99999999999999999999s"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
}

func TestDurationTOML(t *testing.T) {
	var v struct{ A, B, C Duration }
	if _, err := toml.Decode("A = '5 mins'\nB = 90\nC = 1.5\n", &v); err != nil {
		t.Fatal(err)
	}
	if time.Duration(v.A) != 5*time.Minute || time.Duration(v.B) != 90*time.Second || time.Duration(v.C) != 1500*time.Millisecond {
		t.Errorf("%+v", v)
	}
	_, err := toml.Decode("\nA = true\n", &v)
	if err == nil || !strings.HasPrefix(DecodeError("f.toml", err).Error(), "f.toml:2:") {
		t.Errorf("bool duration: %v", err)
	}
}

func TestKeyLine(t *testing.T) {
	doc := "a = 1\n\n[t]\nb = 2\n[t.\"x.y\"]\nc = 3\n[u]\nd.e = 4\n[v.'b.c']\ny = 5\n"
	for _, c := range []struct {
		key  toml.Key
		line int
	}{
		{toml.Key{"a"}, 1}, {toml.Key{"t"}, 3}, {toml.Key{"t", "b"}, 4}, {toml.Key{"t", "x.y"}, 5},
		{toml.Key{"t", "x.y", "c"}, 6}, {toml.Key{"u", "d", "e"}, 8}, {toml.Key{"v", "b.c", "y"}, 10},
		{toml.Key{"missing"}, 0}, {toml.Key{"a,b"}, 0},
	} {
		if got := KeyLine(doc, c.key); got != c.line {
			t.Errorf("KeyLine(%q) = %d, want %d", c.key, got, c.line)
		}
	}
	if got := FormatKey(toml.Key{"a", "b.c", "y"}); got != `a."b.c".y` {
		t.Errorf("FormatKey = %s", got)
	}
}
