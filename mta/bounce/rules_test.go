package bounce

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRuleOrder: classes in file order, patterns in list order, files in
// the order given, first match wins (KumoMTA's precedence).
func TestRuleOrder(t *testing.T) {
	dir := t.TempDir()
	f1 := writeFile(t, dir, "one.toml", `
[rules]
foo = ["woot", "aaa"]
bar = ["woot", "aaa", "bbb"]
`)
	f2 := writeFile(t, dir, "two.toml", `
# a second file
[rules]
second_file = ["bbb", "ccc"]
`)
	c, err := LoadClassifier(f1, f2)
	if err != nil {
		t.Fatal(err)
	}
	for line, want := range map[string]string{
		"woot": "foo", "aaa": "foo", "bbb": "bar", "ccc": "second_file", "ddd": Uncategorized,
	} {
		if got := c.ClassifyLine(line); got != want {
			t.Errorf("%s: got %s, want %s", line, got, want)
		}
	}
	if c.Len() != 7 {
		t.Errorf("Len = %d", c.Len())
	}
	rules := c.Rules()
	if rules[0].Origin != f1+":3" || rules[6].Origin != f2+":4" {
		t.Errorf("origins %q, %q", rules[0].Origin, rules[6].Origin)
	}
}

// TestCustomRulesBeforeDefaults: a user file listed first overrides the
// defaults, as with KumoMTA's "your overrides first".
func TestCustomRulesBeforeDefaults(t *testing.T) {
	dir := t.TempDir()
	custom := writeFile(t, dir, "custom.toml", `
[rules]
# Treat this provider's reputation block as retryable.
TransientFailure = ['(?i)blocked using [a-z.]*spamhaus']
MyOwnClass = ['^550 5\.1\.1 .*mailbox on vacation']
`)
	b := NewBuilder()
	if err := b.AddFile(custom); err != nil {
		t.Fatal(err)
	}
	b.AddDefaults()
	c := b.Build()
	if got := c.Classify(554, "5.7.1", "Client host [192.0.2.1] blocked using zen.spamhaus.org"); got != TransientFailure {
		t.Errorf("override: %s", got)
	}
	if got := c.Classify(550, "5.1.1", "mailbox on vacation"); got != "MyOwnClass" {
		t.Errorf("user class: %s", got)
	}
	if got := c.Classify(550, "5.1.1", "user unknown"); got != InvalidRecipient {
		t.Errorf("defaults: %s", got)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, file, content string
		line                int
		class, pattern      string
		contains            []string
	}{
		{
			name: "syntax", file: "syntax.toml",
			content: "[rules]\nInvalidRecipient = [\n  'user unknown',\n  'no such user'\n  'missing comma',\n]\n",
			line:    5, contains: []string{"syntax.toml:5:"},
		},
		{
			name: "unterminated string", file: "unterminated.toml",
			content: "[rules]\n\nFoo = [\"abc]\n",
			line:    3, contains: []string{"unterminated.toml:3:"},
		},
		{
			name: "not a list", file: "type.toml",
			content: "[rules]\nA = ['x']\nB = 'not a list'\n",
			line:    3, contains: []string{"type.toml:3:", "rules.B"},
		},
		{
			name: "bad regex", file: "regex.toml",
			content: "[rules]\nGood = ['fine']\n\nBad = [\n  'ok',\n  'unclosed (group',\n]\n",
			line:    6, class: "Bad", pattern: "unclosed (group",
			contains: []string{"regex.toml:6:", "rules.Bad", "invalid regex", `"unclosed (group"`, "missing closing )"},
		},
		{
			name: "bad regex basic string", file: "regex2.toml",
			content: "[rules]\nX = [\n\"a\\\\d+\",\n\"[z-a]\"]\n",
			line:    4, class: "X", pattern: "[z-a]",
			contains: []string{"regex2.toml:4:", "rules.X", "invalid character class range"},
		},
		{
			name: "rust-only syntax", file: "rust.toml",
			content: "[rules]\nX = ['(?x) a b # verbose']\n",
			line:    2, class: "X", pattern: "(?x) a b # verbose",
			contains: []string{"rust.toml:2:", "rules.X"},
		},
		{
			name: "missing rules", file: "norules.toml",
			content:  "[rulez]\nX = ['a']\n",
			contains: []string{"norules.toml: missing [rules] table"},
		},
		{
			name: "bad json", file: "bad.json",
			content: "{\n  \"rules\": {\n    \"X\": [\"a\",]\n  }\n}\n",
			line:    3, contains: []string{"bad.json:3:"},
		},
		{
			name: "json bad regex", file: "regex.json",
			content: "{\"rules\": {\n\"A\": [\"ok\"],\n\"B\": [\n\"ok\",\n\"(\"\n]}}\n",
			line:    5, class: "B", pattern: "(",
			contains: []string{"regex.json:5:", "rules.B"},
		},
		{
			name: "extension", file: "rules.yaml",
			content:  "rules: {}\n",
			contains: []string{"rules.yaml: classifier files must have either .toml or .json filename extension"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.file, tc.content)
			c, err := LoadClassifier(p)
			if err == nil {
				t.Fatalf("no error; classifier has %d rules", c.Len())
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if !strings.HasPrefix(err.Error(), p) {
				t.Errorf("error %q does not start with the file name", err)
			}
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *RuleError", err)
			}
			if re.File != p || re.Line != tc.line || re.Class != tc.class || re.Pattern != tc.pattern {
				t.Errorf("RuleError{File: %q, Line: %d, Class: %q, Pattern: %q}, want line %d class %q pattern %q",
					re.File, re.Line, re.Class, re.Pattern, tc.line, tc.class, tc.pattern)
			}
		})
	}
}

// TestLoadReportsEveryError: all bad patterns of all files are reported,
// so a configuration check can list them at once.
func TestLoadReportsEveryError(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, dir, "a.toml", "[rules]\nA = ['(', 'ok', '[']\nB = ['*']\n")
	b := writeFile(t, dir, "b.toml", "[rules]\nC = ['fine']\n")
	c := writeFile(t, dir, "c.toml", "[rules\n")
	_, err := LoadClassifier(a, b, c, filepath.Join(dir, "missing.toml"))
	if err == nil {
		t.Fatal("no error")
	}
	var lines []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				lines = append(lines, e.Error())
			}
			continue
		}
		lines = append(lines, e.Error())
	}
	want := []string{a + ":2: rules.A", a + ":2: rules.A", a + ":3: rules.B", c + ":1:", filepath.Join(dir, "missing.toml") + ": open"}
	if len(lines) != len(want) {
		t.Fatalf("errors:\n%s", strings.Join(lines, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

// TestRustOnlySyntax: Rust regex syntax that Go would read differently is
// refused, and close look-alikes are not.
func TestRustOnlySyntax(t *testing.T) {
	for _, p := range []string{`\<word\>`, `[a-z&&[^aeiou]]`, `[a-z--b]`, `[\w~~x]`, `a{,3}`} {
		if _, err := compilePattern(p); err == nil {
			t.Errorf("%s accepted", p)
		}
	}
	for _, p := range []string{`\\<`, `[<>]`, `[a-z-]`, `[- ]`, `a{0,3}`, `[]&&]`, `[[:alpha:]]x`, `a&&b`, `x--y`, `{,}`, `\{,3}`} {
		if _, err := compilePattern(p); err != nil {
			t.Errorf("%s refused: %v", p, err)
		}
	}
}

func TestJSONRules(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "rules.json", `{
  "comment": "ignored",
  "rules": {
    "Zeta": ["^550 5\\.1\\.1 "],
    "Alpha": ["^550 ", "x"],
    "Zeta": ["^550 5\\.1\\.2 "]
  }
}`)
	c, err := LoadClassifier(p)
	if err != nil {
		t.Fatal(err)
	}
	// A repeated key replaces the list but keeps its place (serde's
	// OrderMap), so Zeta still comes before Alpha.
	if got := c.ClassifyLine("550 5.1.2 x"); got != "Zeta" {
		t.Errorf("got %s", got)
	}
	if got := c.ClassifyLine("550 5.1.1 x"); got != "Alpha" {
		t.Errorf("got %s", got)
	}
	if got := c.Rules()[0].Origin; got != p+":6" {
		t.Errorf("origin %q", got)
	}
}

func TestEmptyAndBuilder(t *testing.T) {
	c, err := LoadClassifier()
	if err != nil || c.Len() != 0 || c.Classify(550, "5.1.1", "x") != Uncategorized {
		t.Fatalf("empty classifier: %v %d", err, c.Len())
	}
	b := NewBuilder()
	if err := b.AddRule("", "x"); err == nil {
		t.Error("empty class accepted")
	}
	if err := b.AddRule("A", "("); err == nil || !strings.Contains(err.Error(), "class A") {
		t.Errorf("bad pattern: %v", err)
	}
	if err := b.AddRule("A", "x"); err != nil {
		t.Fatal(err)
	}
	c1 := b.Build()
	if err := b.AddRule("B", "y"); err != nil {
		t.Fatal(err)
	}
	if c1.Len() != 1 || b.Build().Len() != 2 {
		t.Error("Build is not a snapshot")
	}
	if err := b.AddTOML("inline", []byte("[rules]\n\"\" = ['z']\n")); err == nil {
		t.Error("empty class name in a file accepted")
	}
	// Inline tables and dotted keys are the same table to TOML.
	if err := b.AddTOML("dotted", []byte("rules.C = ['c']\nrules.D = ['d']\n")); err != nil {
		t.Fatal(err)
	}
	if err := b.AddTOML("inline", []byte("rules = { E = ['e'] }\n")); err != nil {
		t.Fatal(err)
	}
	c2 := b.Build()
	if c2.ClassifyLine("d") != "D" || c2.ClassifyLine("e") != "E" {
		t.Error("dotted or inline rules not loaded")
	}
}

// TestDefaultRuleFilesLoad: the embedded files are valid rules files in
// KumoMTA's format: loaded from disk in order they give the default
// classifier.
func TestDefaultRuleFilesLoad(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for _, name := range []string{"rules/phrases.toml", "rules/status_codes.toml"} {
		data, err := fs.ReadFile(DefaultRuleFiles(), name)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, writeFile(t, dir, filepath.Base(name), string(data)))
	}
	c, err := LoadClassifier(paths...)
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != DefaultClassifier().Len() {
		t.Fatalf("%d rules from files, %d built in", c.Len(), DefaultClassifier().Len())
	}
	for _, tc := range defaultCases {
		if got := c.Classify(tc.code, tc.enhanced, tc.text); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestScanTOMLStrings(t *testing.T) {
	doc := "# 'not a string'\n[rules]\nA = [\n  \"x\\\"y\", # \"comment\"\n  'lit',\n  '''multi\nline''',\n  \"\"\"basic\nmulti\"\"\",\n  \"after\"]\n"
	lits := scanTOMLStrings(doc)
	var got []string
	for _, l := range lits {
		v, ok := literalValue(l.raw)
		if !ok {
			t.Fatalf("cannot decode %q", l.raw)
		}
		got = append(got, v+"@"+strconv.Itoa(l.line))
	}
	want := []string{`x"y@4`, "lit@5", "multi\nline@6", "basic\nmulti@8", "after@10"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
