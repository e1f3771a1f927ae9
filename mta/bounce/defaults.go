package bounce

import (
	"embed"
	"io/fs"
	"sync"
)

// The default rules, in KumoMTA's rules-file format. They are mtakit's
// own (not copies of KumoMTA's files): phrases.toml recognises the wording
// of common receivers and MTAs, status_codes.toml maps RFC 3463 / IANA
// enhanced status codes, and ends with the 4xx catch-all. Phrases come
// first so that "550 5.7.1 ... blocked using zen.spamhaus.org" is
// SpamBlock rather than the PolicyRelated of a bare 5.7.1.
//
//go:embed rules/phrases.toml rules/status_codes.toml
var defaultFS embed.FS

// defaultFiles lists the embedded files in precedence order.
var defaultFiles = []string{"rules/phrases.toml", "rules/status_codes.toml"}

// DefaultRuleFiles returns the built-in rules files, in KumoMTA's TOML
// format, as a file system holding rules/phrases.toml and
// rules/status_codes.toml (used in that order). A program can copy them
// out to serve as the starting point of its own rules, for example for
// a KumoMTA-style kumo.configure_bounce_classifier{files=...}.
func DefaultRuleFiles() fs.FS { return defaultFS }

var loadDefaults = sync.OnceValue(func() []pendingRule {
	b := NewBuilder()
	for _, name := range defaultFiles {
		data, err := defaultFS.ReadFile(name)
		if err != nil {
			panic("bounce: embedded default rules: " + err.Error())
		}
		if err := b.AddTOML("(default)/"+name, data); err != nil {
			panic("bounce: embedded default rules: " + err.Error())
		}
	}
	return b.rules
})

func defaultRules() []pendingRule { return loadDefaults() }

var defaultClassifier = sync.OnceValue(func() *Classifier {
	return newClassifier(defaultRules())
})

// DefaultClassifier returns a Classifier with the built-in default rules:
// phrases used by large mailbox providers and common MTAs for each
// predefined class, then enhanced status codes (5.1.1 InvalidRecipient,
// 5.1.2 BadDomain, 4.2.2/5.2.2 QuotaIssues, 5.7.x PolicyRelated, ...),
// then any other 4xx response as TransientFailure. Anything else is
// Uncategorized. The rules are compiled once, on first use, and the
// returned Classifier is shared.
func DefaultClassifier() *Classifier { return defaultClassifier() }
