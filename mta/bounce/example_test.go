package bounce_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net/mail"
	"os"
	"path/filepath"

	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/mta/logs"
)

func ExampleDefaultClassifier() {
	c := bounce.DefaultClassifier()
	fmt.Println(c.Classify(550, "5.1.1", "The email account that you tried to reach does not exist."))
	fmt.Println(c.Classify(552, "5.2.2", "Mailbox full"))
	fmt.Println(c.Classify(554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"))
	fmt.Println(c.Classify(550, "5.7.1", "")) // no text: the status code decides
	fmt.Println(c.Classify(421, "", "Service not available, closing transmission channel"))
	fmt.Println(c.Classify(554, "", "Transaction failed"))
	// Output:
	// InvalidRecipient
	// QuotaIssues
	// SpamBlock
	// PolicyRelated
	// TransientFailure
	// Uncategorized
}

// Rules files use KumoMTA's format; the first file listed takes
// precedence, as in kumo.configure_bounce_classifier{files = {...}}.
func ExampleLoadClassifier() {
	dir, err := os.MkdirTemp("", "bounce-rules-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rules := filepath.Join(dir, "custom.toml")
	err = os.WriteFile(rules, []byte(`
[rules]
# Class names are free: predefined ones or your own.
InvalidRecipient = [
  '^(451|550) [45]\.1\.1 ',
]
ExampleProviderThrottle = [
  '(?i)^421 .*example provider is busy',
]
`), 0o644)
	if err != nil {
		log.Fatal(err)
	}
	c, err := bounce.LoadClassifier(rules)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(c.Classify(550, "5.1.1", "no such user"))
	fmt.Println(c.Classify(421, "4.7.0", "Example Provider is busy, come back later"))
	fmt.Println(c.Classify(552, "5.2.2", "mailbox full"))

	// A bad pattern is reported with its file, line and class.
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[rules]\nSpamBlock = [\n  '(unclosed',\n]\n"), 0o644)
	_, err = bounce.LoadClassifier(bad)
	var re *bounce.RuleError
	if errors.As(err, &re) {
		fmt.Printf("%s line %d: class %s, pattern %q\n", filepath.Base(re.File), re.Line, re.Class, re.Pattern)
	}
	// Output:
	// InvalidRecipient
	// ExampleProviderThrottle
	// Uncategorized
	// bad.toml line 3: class SpamBlock, pattern "(unclosed"
}

// A program can refine the built-in rules with its own, added first.
func ExampleBuilder() {
	b := bounce.NewBuilder()
	if err := b.AddRule(bounce.TransientFailure, `(?i)temporarily blocked.*reputation`); err != nil {
		log.Fatal(err)
	}
	b.AddDefaults()
	c := b.Build()
	fmt.Println(c.Classify(550, "5.7.1", "Temporarily blocked due to IP reputation"))
	fmt.Println(c.Classify(550, "5.7.1", "Blocked due to poor IP reputation"))
	// Output:
	// TransientFailure
	// SpamBlock
}

func ExampleClassifier_ClassifyRecord() {
	rec := &logs.Record{
		Type: logs.Bounce,
		Response: logs.Response{
			Code:         552,
			EnhancedCode: &logs.EnhancedCode{Class: 5, Subject: 2, Detail: 2},
			Content:      "The recipient's inbox is out of storage space.",
		},
	}
	bounce.DefaultClassifier().ClassifyRecord(rec)
	fmt.Println(rec.BounceClassification)
	// Output: QuotaIssues
}

func ExampleBuildDSN() {
	msg, err := bounce.BuildDSN(bounce.DSNOptions{
		ReportingMTA: "mx.example.net",
		OriginalID:   "1d98076abbbc11ed940250ebf67f93bd",
		Sender:       "alice@example.com",
		Recipients: []bounce.RecipientStatus{{
			Address:        "bob@example.org",
			Action:         bounce.ActionFailed,
			Status:         "5.1.1",
			DiagnosticCode: "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown",
			RemoteMTA:      "mx1.example.org",
		}},
		OriginalHeaders: []byte("From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Hello\r\n\r\nHi Bob!\r\n"),
	})
	if err != nil {
		log.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("From:", m.Header.Get("From"))
	fmt.Println("To:", m.Header.Get("To"))
	fmt.Println("Subject:", m.Header.Get("Subject"))
	fmt.Println("Auto-Submitted:", m.Header.Get("Auto-Submitted"))
	fmt.Println(bytes.Contains(msg, []byte("\r\nFinal-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n")))

	// Never answer a bounce with a bounce.
	_, err = bounce.BuildDSN(bounce.DSNOptions{ReportingMTA: "mx.example.net", Sender: ""})
	fmt.Println(errors.Is(err, bounce.ErrNullSender), bounce.ShouldSendDSN("<>"))
	// Output:
	// From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
	// To: <alice@example.com>
	// Subject: Undelivered Mail Returned to Sender
	// Auto-Submitted: auto-replied
	// true
	// true false
}
