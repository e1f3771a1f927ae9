package bounce

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/mtakit/mtakit/mta/logs"
)

// classifyCase is a response and the class the default rules give it.
// The texts are written in the style of the named receivers; they are
// not copies of real transcripts.
type classifyCase struct {
	name     string
	code     int
	enhanced string
	text     string
	want     string
}

var defaultCases = []classifyCase{
	// InvalidRecipient
	{"gmail no such user", 550, "5.1.1", "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. For more information, go to\r\n https://support.google.com/mail/?p=NoSuchUser a1b2c3d4e5si6789012.34 - gsmtp", InvalidRecipient},
	{"outlook recipient not found", 550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient bob@contoso.example not found by SMTP address lookup", InvalidRecipient},
	{"outlook mailbox unavailable", 550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302). [DM6NAM11FT034.eop-nam11.prod.protection.outlook.example]", InvalidRecipient},
	{"outlook DBEB", 550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281) [SN1NAM02FT0043.eop-nam02.prod.protection.outlook.example]", InvalidRecipient},
	{"yahoo no account", 554, "", "delivery error: dd This user doesn't have a yahoo.example account (carol@yahoo.example) [0] - mta1234.mail.gq1.yahoo.example", InvalidRecipient},
	{"yahoo mailbox not found", 552, "", "1 Requested mail action aborted, mailbox not found", InvalidRecipient},
	{"postfix virtual table", 550, "5.1.1", "<bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table", InvalidRecipient},
	{"sendmail user unknown", 550, "5.1.1", "<bob@example.org>... User unknown", InvalidRecipient},
	{"exim unrouteable", 550, "", "Unrouteable address", InvalidRecipient},
	{"no such user", 550, "", "No such user here", InvalidRecipient},
	{"code only 5.1.1", 550, "5.1.1", "", InvalidRecipient},
	{"5.1.1 other words", 550, "5.1.1", "Delivery failed for 1 recipient(s)", InvalidRecipient},
	{"non-ascii text, code rule", 550, "5.1.1", "Utilisateur inconnu \u2014 bo\u00eete introuvable", InvalidRecipient},
	{"apple icloud", 550, "5.1.1", "<dave@icloud.example>: inactive email address", InactiveMailbox},

	// BadDomain
	{"code only 5.1.2", 550, "5.1.2", "", BadDomain},
	{"postfix domain not found", 450, "4.1.2", "<bob@nowhere.example>: Recipient address rejected: Domain not found", BadDomain},
	{"sendmail host unknown", 550, "5.1.2", "<bob@nowhere.example>... Host unknown (Name server: nowhere.example: host not found)", BadDomain},
	{"null mx", 556, "5.1.10", "Recipient address has null MX", BadDomain},

	// QuotaIssues
	{"gmail over quota 4xx", 452, "4.2.2", "The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp x9si1.2 - gsmtp", QuotaIssues},
	{"gmail out of storage", 552, "5.2.2", "The recipient's inbox is out of storage space. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm z1si2.3 - gsmtp", QuotaIssues},
	{"outlook mailbox full", 554, "5.2.2", "mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", QuotaIssues},
	{"yahoo size limit", 552, "5.2.2", "Mailbox size limit exceeded", QuotaIssues},
	{"generic mailbox is full", 550, "", "Mailbox is full, try again later", QuotaIssues},
	{"code only 4.2.2", 452, "4.2.2", "", QuotaIssues},
	{"code only 5.2.2", 552, "5.2.2", "", QuotaIssues},
	{"message too big", 552, "5.3.4", "Message size exceeds fixed maximum message size", QuotaIssues},

	// SpamBlock
	{"outlook block list", 550, "5.7.1", "Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.example/mail/troubleshooting.aspx#errors.", SpamBlock},
	{"outlook banned ip", 550, "5.7.606", "Access denied, banned sending IP [203.0.113.5]. To request removal from this list please visit https://sender.office.example/ and follow the directions.", SpamBlock},
	{"postfix rbl", 554, "5.7.1", "Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/203.0.113.5", SpamBlock},
	{"yahoo TSS09", 553, "5.7.2", "[TSS09] All messages from 203.0.113.5 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.example/error-codes", SpamBlock},
	{"gmail low reputation", 421, "4.7.0", "[203.0.113.5] Our system has detected that this message is suspicious due to the very low reputation of the sending IP address. To best protect our users from spam, the message has been blocked.", SpamBlock},
	{"comcast blocked", 554, "", "resimta-po-01v.sys.comcast.example comcast 203.0.113.5 Comcast block for spam. Please see http://postmaster.comcast.example/smtp-error-codes.php#BL000000", SpamBlock},

	// SpamContent
	{"gmail unsolicited content", 550, "5.7.1", "[203.0.113.5] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked. For more information, go to https://support.google.com/mail/?p=UnsolicitedMessageError - gsmtp", SpamContent},
	{"filter classified as spam", 554, "5.7.1", "Message rejected: classified as spam by content filter (score 12.3)", SpamContent},
	{"phishing", 550, "5.7.1", "Message contains a phishing link and was rejected", SpamContent},

	// SpamRelated
	{"gmail unsolicited rate", 421, "4.7.28", "[203.0.113.5] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.", SpamRelated},
	{"yahoo TSS04 complaints", 421, "4.7.0", "[TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.example/error-codes", SpamRelated},

	// PolicyRelated
	{"yahoo policy", 554, "5.7.9", "Message not accepted for policy reasons.  See https://postmaster.yahooinc.example/error-codes", PolicyRelated},
	{"icloud local policy", 554, "5.7.1", "[CS01] Message rejected due to local policy. Please visit https://support.apple.example/HT204137", PolicyRelated},
	{"gmail not authorized", 550, "5.7.1", "The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead.", PolicyRelated},
	{"exim prohibition", 550, "", "Administrative prohibition", PolicyRelated},
	{"code only 5.7.1", 550, "5.7.1", "", PolicyRelated},
	{"rate limited", 450, "4.7.1", "Rate limited, please slow down", PolicyRelated},
	{"gmail receiving too fast", 450, "4.2.1", "The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.", PolicyRelated},

	// RelayDenied
	{"postfix relay", 554, "5.7.1", "<bob@elsewhere.example>: Relay access denied", RelayDenied},
	{"kumomta-style relay", 550, "5.7.1", "relaying not permitted", RelayDenied},
	{"outlook relay", 550, "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain", RelayDenied},
	{"qmail rcpthosts", 553, "", "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", RelayDenied},

	// AuthenticationFailed
	{"gmail dmarc", 550, "5.7.26", "Unauthenticated email from example.com is not accepted due to domain's DMARC policy. Please contact the administrator of example.com domain if this was a legitimate mail.", AuthenticationFailed},
	{"yahoo unauthenticated", 550, "5.7.9", "This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", AuthenticationFailed},
	{"outlook dmarc", 550, "5.7.509", "Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.", AuthenticationFailed},
	{"gmail ptr", 550, "5.7.25", "The IP address sending this message does not have a PTR record setup, or the corresponding forward DNS entry does not point to the sending IP.", AuthenticationFailed},
	{"smtp auth creds", 535, "5.7.8", "Authentication credentials invalid", AuthenticationFailed},
	{"code only 5.7.8", 535, "5.7.8", "", AuthenticationFailed},
	{"starttls required", 530, "5.7.0", "Must issue a STARTTLS command first", AuthenticationFailed},

	// TooManyRecipients
	{"postfix too many", 452, "4.5.3", "Error: too many recipients", TooManyRecipients},
	{"code only 5.5.3", 552, "5.5.3", "", TooManyRecipients},
	{"limit exceeded", 550, "", "Maximum number of recipients exceeded", TooManyRecipients},

	// MessageExpired
	{"mtakit expiration", 551, "5.4.7", "Next delivery time would be 5h20m after creation, which exceeds max_age=4h", MessageExpired},
	{"code only 4.4.7", 451, "4.4.7", "", MessageExpired},

	// DNSFailure, NoAnswerFromHost, BadConnection (including Go error texts)
	{"postfix temp lookup", 451, "4.3.0", "<bob@example.org>: Temporary lookup failure", DNSFailure},
	{"go dns misbehaving", 451, "4.4.3", "lookup mx.example.org on 127.0.0.53:53: server misbehaving", DNSFailure},
	{"code only 4.4.3", 451, "4.4.3", "", DNSFailure},
	{"go dial timeout", 451, "4.4.1", "dial tcp 192.0.2.1:25: i/o timeout", NoAnswerFromHost},
	{"banner timeout", 421, "", "timeout waiting for the initial server greeting", NoAnswerFromHost},
	{"code only 4.4.1", 451, "4.4.1", "", NoAnswerFromHost},
	{"connection refused", 451, "4.4.1", "dial tcp 192.0.2.1:25: connect: connection refused", BadConnection},
	{"connection reset", 421, "4.4.2", "read tcp 192.0.2.9:41234->192.0.2.1:25: read: connection reset by peer", BadConnection},
	{"outlook too many connections", 421, "4.3.2", "The maximum number of concurrent server connections has exceeded a limit, closing transmission channel", BadConnection},
	{"kumomta-style connect", 400, "", "KumoMTA internal: failed to connect to any candidate hosts: connect to 192.0.2.1:25 and read initial banner: Connection refused (os error 111)", BadConnection},

	// Content, protocol, virus, attachments
	{"gmail message-id", 550, "5.7.1", "Messages missing a valid Message-ID header are not accepted. For more information, go to https://support.google.com/mail/?p=RfcMessageNonCompliant - gsmtp", ContentRelated},
	{"code only 5.6.0", 554, "5.6.0", "", ContentRelated},
	{"bare lf", 550, "5.6.11", "SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds, which cannot be sent via DATA", ProtocolErrors},
	{"syntax error", 500, "5.5.2", "Syntax error, command unrecognized", ProtocolErrors},
	{"code only 5.5.1", 503, "5.5.1", "", ProtocolErrors},
	{"gmail security issue", 552, "5.7.0", "This message was blocked because its content presents a potential security issue. Please visit https://support.google.com/mail/?p=BlockedMessage to review our message content and attachment content guidelines.", VirusRelated},
	{"virus found", 554, "5.7.1", "Message rejected: virus found (Eicar-Test-Signature)", VirusRelated},
	{"attachment", 552, "5.7.0", "Our system detected an illegal attachment on your message.", ProhibitedAttachment},
	{"exe blocked", 554, "", "Attachment file type is not allowed (.exe)", ProhibitedAttachment},

	// Inactive mailbox, invalid sender, routing, configuration
	{"yahoo disabled", 554, "", "delivery error: dd Sorry your message to erin@yahoo.example cannot be delivered. This mailbox is disabled (554.30). - mta1001.mail.ne1.yahoo.example", InactiveMailbox},
	{"gmail disabled", 550, "5.2.1", "The email account that you tried to reach is disabled. a1si1.1 - gsmtp", InactiveMailbox},
	{"code only 5.2.1", 550, "5.2.1", "", InactiveMailbox},
	{"postfix sender domain", 450, "4.1.8", "<alice@bad.example>: Sender address rejected: Domain not found", InvalidSender},
	{"sendmail sender domain", 553, "5.1.8", "<alice@bad.example>... Domain of sender address alice@bad.example does not exist", InvalidSender},
	{"helo rejected", 550, "5.7.1", "<mta.example>: Helo command rejected: Host not found", InvalidSender},
	{"code only 5.1.7", 553, "5.1.7", "", InvalidSender},
	{"mail loop", 554, "5.4.6", "Too many hops", RoutingErrors},
	{"loops back", 554, "5.4.6", "mail for example.org loops back to myself", RoutingErrors},
	{"code only 5.4.4", 550, "5.4.4", "", RoutingErrors},
	{"code only 5.3.5", 550, "5.3.5", "", BadConfiguration},
	{"bad certificate", 421, "4.7.0", "x509: certificate signed by unknown authority", BadConfiguration},

	// TransientFailure: greylisting and the 4xx catch-all
	{"postgrey", 450, "4.2.0", "<bob@example.org>: Recipient address rejected: Greylisted, see http://postgrey.example/help/example.org.html", TransientFailure},
	{"gmail try later", 421, "4.7.0", "Try again later, closing connection. (EHLO) a1si2.3 - gsmtp", TransientFailure},
	{"congestion", 451, "4.4.5", "", TransientFailure},
	{"4xx no enhanced", 421, "", "Service not available, closing transmission channel", TransientFailure},
	{"4xx policy code", 450, "4.7.1", "", TransientFailure},
	{"4xx unknown", 451, "4.3.0", "Local error in processing", TransientFailure},

	// Uncategorized
	{"5.0.0 bare", 550, "5.0.0", "", Uncategorized},
	{"transaction failed", 554, "", "Transaction failed", Uncategorized},
	{"generic rejection", 554, "5.0.0", "Message rejected", Uncategorized},
	{"success", 250, "2.0.0", "OK queued as 12345", Uncategorized},
	{"352 not a failure", 352, "5.2.2", "mailbox is stuffed", Uncategorized},
}

func TestDefaultClassifier(t *testing.T) {
	c := DefaultClassifier()
	covered := map[string]bool{}
	for _, tc := range defaultCases {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Classify(tc.code, tc.enhanced, tc.text)
			if got != tc.want {
				line := string(appendLine(nil, tc.code, tc.enhanced, tc.text))
				t.Errorf("Classify(%d, %q, ...) = %s, want %s\nline: %s\nrule: %s",
					tc.code, tc.enhanced, got, tc.want, line, matchingRule(c, line))
			}
		})
		covered[tc.want] = true
	}
	// Every predefined class that a delivery reply can carry has cases.
	for _, class := range PredefinedClasses() {
		switch class {
		case AutoReply, Subscribe, Unsubscribe, ChallengeResponse, RelayingIssues:
			continue // out-of-band report classes: see TestDefaultReportClasses
		}
		if !covered[class] {
			t.Errorf("no test case for %s", class)
		}
	}
}

// TestDefaultReportClasses covers the classes that mostly classify texts
// of out-of-band reports and auto-replies rather than SMTP replies.
func TestDefaultReportClasses(t *testing.T) {
	c := DefaultClassifier()
	for _, tc := range []classifyCase{
		{"auto reply", 550, "", "Auto-Reply: I am out of the office until Monday", AutoReply},
		{"challenge", 550, "", "Your message is held. Please verify that you are a human by visiting the link (Boxbe)", ChallengeResponse},
		{"unsubscribe", 550, "", "unsubscribe request received", Unsubscribe},
		{"subscribe", 550, "", "subscribe request received", Subscribe},
		{"relaying issue", 451, "", "Upstream server unavailable, cannot forward message", RelayingIssues},
	} {
		if got := c.Classify(tc.code, tc.enhanced, tc.text); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

// matchingRule describes the rule that decides line, for failure output.
func matchingRule(c *Classifier, line string) string {
	for _, r := range c.Rules() {
		if regexp.MustCompile(r.Pattern).MatchString(line) {
			return fmt.Sprintf("%s %s %q", r.Origin, r.Class, r.Pattern)
		}
	}
	return "(none)"
}

// slowClassify is the reference semantics: the first rule, as loaded,
// whose regexp matches, without any prefilter, window or rewriting.
func slowClassify(c *Classifier, line string) string {
	refMu.Lock()
	ref, ok := refs[c]
	if !ok {
		for _, r := range c.Rules() {
			ref = append(ref, refRule{r.Class, regexp.MustCompile(r.Pattern)})
		}
		refs[c] = ref
	}
	refMu.Unlock()
	for _, r := range ref {
		if r.re.MatchString(line) {
			return r.class
		}
	}
	return Uncategorized
}

type refRule struct {
	class string
	re    *regexp.Regexp
}

var (
	refMu sync.Mutex
	refs  = map[*Classifier][]refRule{}
)

func TestClassifyLineForms(t *testing.T) {
	c := DefaultClassifier()
	// The line form: "CODE ENH TEXT", line breaks as spaces.
	if got, want := c.ClassifyLine("550 5.1.1 user unknown"), InvalidRecipient; got != want {
		t.Errorf("ClassifyLine = %s, want %s", got, want)
	}
	// Non-canonical enhanced codes are normalized like KumoMTA's parser.
	if got := c.Classify(550, "5.01.001", ""); got != InvalidRecipient {
		t.Errorf("5.01.001: got %s", got)
	}
	// Something that is not an enhanced code stays in the text.
	if got := c.Classify(550, "oops", ""); got != Uncategorized {
		t.Errorf("bad enhanced: got %s", got)
	}
	if got := string(appendLine(nil, 550, "oops", "a\r\nb\nc\rd")); got != "550 oops a b c d" {
		t.Errorf("line = %q", got)
	}
	if got := string(appendLine(nil, 421, "", "x")); got != "421 x" {
		t.Errorf("line = %q", got)
	}
	// ClassifyResponse / ClassifyRecord use the log record's response.
	rec := &logs.Record{Type: logs.Bounce, Response: logs.Response{
		Code: 552, EnhancedCode: &logs.EnhancedCode{Class: 5, Subject: 2, Detail: 2}, Content: "full",
	}}
	c.ClassifyRecord(rec)
	if rec.BounceClassification != QuotaIssues {
		t.Errorf("ClassifyRecord: %s", rec.BounceClassification)
	}
	rec = &logs.Record{Type: logs.Delivery, Response: rec.Response}
	c.ClassifyRecord(rec)
	if rec.BounceClassification != "" {
		t.Errorf("ClassifyRecord(Delivery) set %q", rec.BounceClassification)
	}
	// A nil classifier has no rules.
	var nilc *Classifier
	if got := nilc.Classify(550, "5.1.1", ""); got != Uncategorized {
		t.Errorf("nil: %s", got)
	}
	if nilc.Len() != 0 || nilc.Rules() != nil {
		t.Error("nil classifier has rules")
	}
	// A line longer than the stack buffers.
	long := strings.Repeat("x", 2000) + " user unknown"
	if got := c.Classify(550, "", long); got != InvalidRecipient {
		t.Errorf("long line: %s", got)
	}
}

func TestPredefined(t *testing.T) {
	p := PredefinedClasses()
	if len(p) != 29 || p[len(p)-1] != Uncategorized {
		t.Fatalf("PredefinedClasses = %v", p)
	}
	p[0] = "changed"
	if !IsPredefined(InvalidRecipient) || IsPredefined("invalidrecipient") || IsPredefined("Mine") {
		t.Error("IsPredefined")
	}
	for _, rt := range []logs.RecordType{logs.Bounce, logs.TransientFailure, logs.Expiration, logs.AdminBounce, logs.OOB, logs.Feedback, logs.Rejection} {
		if !Classifiable(rt) {
			t.Errorf("Classifiable(%s) = false", rt)
		}
	}
	for _, rt := range []logs.RecordType{logs.Reception, logs.Delivery, logs.Delayed, logs.AdminRebind, logs.XferIn, logs.XferOut, logs.DeferredInjectionRebind} {
		if Classifiable(rt) {
			t.Errorf("Classifiable(%s) = true", rt)
		}
	}
}

// TestDefaultRulesUseKnownClasses keeps the embedded files to the
// predefined class names.
func TestDefaultRulesUseKnownClasses(t *testing.T) {
	rules := DefaultClassifier().Rules()
	if len(rules) < 100 {
		t.Fatalf("only %d default rules", len(rules))
	}
	for _, r := range rules {
		if !IsPredefined(r.Class) || r.Class == Uncategorized {
			t.Errorf("%s: class %q", r.Origin, r.Class)
		}
		if !strings.HasPrefix(r.Origin, "(default)/rules/") || !strings.Contains(r.Origin, ".toml:") {
			t.Errorf("origin %q", r.Origin)
		}
	}
}

// TestPrefilterAgreesWithRegexps checks, on the default rules and on a
// large generated corpus, that the prefiltered classification equals
// running every rule's regexp in order.
func TestPrefilterAgreesWithRegexps(t *testing.T) {
	c := DefaultClassifier()
	var lines []string
	for _, tc := range defaultCases {
		lines = append(lines, string(appendLine(nil, tc.code, tc.enhanced, tc.text)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("user unknown mailbox full over quota relay denied blocked spamhaus spam " +
		"policy DMARC SPF timeout connection refused reset domain not found host sender address rejected " +
		"recipient invalid account disabled greylisted too many recipients message size exceeds expired " +
		"virus attachment loop TLS certificate x509 lookup failed 5.1.1 5.7.1 4.2.2 4.4.1 5.5.3 : ; [ ] . , " +
		"USER Unknown MailBox FULL does not exist doesn't have an account no such " +
		"utilisateur inconnu bo\u00eete pleine \u212Aelvin \u017Fpam d\u00e9j\u00e0 \xff")
	codes := []string{"550 ", "421 ", "452 ", "554 ", "250 ", "451 ", "5", "", "550 5.1.1 ", "452 4.2.2 ", "551 5.4.7 "}
	n := 2500
	if testing.Short() || raceEnabled {
		n = 300
	}
	for range n {
		var b strings.Builder
		b.WriteString(codes[rng.IntN(len(codes))])
		// Up to 60 words: long lines exercise the match windows.
		for j := rng.IntN(60); j > 0; j-- {
			b.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(4) > 0 {
				b.WriteByte(' ')
			}
		}
		lines = append(lines, b.String())
	}
	for _, line := range lines {
		if got, want := c.ClassifyLine(line), slowClassify(c, line); got != want {
			t.Errorf("%q: prefiltered %s, regexps %s", line, got, want)
		}
	}
}

// TestWindowedMatching checks rules whose matches are found in windows
// around needles, with assertions at the window edges, on long random
// lines, each rule alone and all together, against the plain regexps.
func TestWindowedMatching(t *testing.T) {
	patterns := []string{
		`\bfoo\b`,
		`(?i)\bbar baz\b`,
		`qux$`,
		`^4\d\d .{0,20}quux`,
		`(?i)(alpha|beta) .{0,10}gamma`,
		`(?i)delta(\s+epsilon)?\b`,
		`zeta\B`,
		`\Beta`,
		`(?i)x{2,4}yz`,
		`(?i)(one|two)+ three`,
		`(?i)four|^five|six$`,
		`(?m)^seven`,
		`eight.*nine`,
		`[a-c]{2}ten`,
	}
	words := strings.Fields("foo Foo foox xfoo bar baz BAR BAZ qux quux 421 550 alpha beta gamma GAMMA " +
		"delta epsilon zeta zetas beta eta xx xxx xxxxx yz yZ one two three ONE four five six seven eight nine " +
		"abten cten ten . , ; - x y z \t")
	b := NewBuilder()
	for i, p := range patterns {
		if err := b.AddRule(fmt.Sprint("C", i), p); err != nil {
			t.Fatal(err)
		}
	}
	all := b.Build()
	var singles []*Classifier
	for i, p := range patterns {
		sb := NewBuilder()
		sb.AddRule(fmt.Sprint("C", i), p)
		singles = append(singles, sb.Build())
	}
	windowed := 0
	for _, r := range all.rules {
		if r.windowed {
			windowed++
		}
	}
	if windowed < 8 {
		t.Fatalf("only %d windowed rules", windowed)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	n := 4000
	if testing.Short() || raceEnabled {
		n = 500
	}
	for range n {
		var sb strings.Builder
		for j := rng.IntN(80); j > 0; j-- {
			sb.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(5) > 0 {
				sb.WriteByte(' ')
			}
		}
		line := sb.String()
		if got, want := all.ClassifyLine(line), slowClassify(all, line); got != want {
			t.Errorf("all rules on %q: prefiltered %s, regexps %s", line, got, want)
		}
		for i, c := range singles {
			if got, want := c.ClassifyLine(line), slowClassify(c, line); got != want {
				t.Errorf("%s on %q: prefiltered %s, regexps %s", patterns[i], line, got, want)
			}
		}
	}
}

// TestPrefilterEdgeCases checks the prefilter reasoning on expressions
// chosen to break naive literal extraction.
func TestPrefilterEdgeCases(t *testing.T) {
	rules := []struct{ class, pattern string }{
		{"Kelvin", `(?i)\x{212A}elvin`},           // Kelvin sign folds to ASCII k
		{"LongS", `(?i)\x{017F}pecial`},           // long s folds to s
		{"Optional", `mailbox (is )?full`},        // quest inside a literal run
		{"AltAnchored", `^(451|550) [45]\.1\.1 `}, // anchored alternation
		{"Alt", `^4\d\d|^55[0-3] x`},              // alternation of anchors
		{"Star", `a*b*`},                          // matches everything
		{"Case", `USER Gone`},                     // case-sensitive upper case
		{"Classes", `[Xx][Yy]zz?y`},               // classes and quest
		{"Plus", `(ab)+cd`},                       // plus
		{"Repeat", `q{2,3}r`},                     // counted repetition
		{"Dot", `^5.0 .x`},                        // any char in anchored prefix
		{"Multiline", `(?m)^foo`},                 // not anchored at text start
		{"NonASCII", `boîte`},                     // never in an ASCII line
		{"Empty", ``},                             // matches everything
		{"WordB", `\bfoo\b`},                      // zero-width in literals
		{"EndAnchor", `bar$`},                     // end anchor
		{"BigClass", `[a-z]{3}9`},                 // large classes
		{"FoldClass", `(?i)[k]elvin-class`},       // folded class
		{"AltEmpty", `x(|yz)w`},                   // alternation with empty
		{"Nested", `((a|b)(c|d)){2}e`},            // products
		{"Long alternation", `(?i)(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|omicron|pi|rho|sigma|tau|upsilon|phi|chi|psi|omega|one|two|three|four|five|six|seven|eight|nine|ten) end`},
	}
	b := NewBuilder()
	for _, r := range rules {
		if err := b.AddRule(r.class, r.pattern); err != nil {
			t.Fatal(err)
		}
	}
	c := b.Build()
	// Classify each line with each rule alone as well as all together.
	single := make([]*Classifier, len(rules))
	for i, r := range rules {
		sb := NewBuilder()
		sb.AddRule(r.class, r.pattern)
		single[i] = sb.Build()
	}
	lines := []string{
		"kelvin", "KELVIN", "\u212Aelvin", "special", "SPECIAL", "\u017Fpecial",
		"mailbox full", "mailbox is full", "MAILBOX FULL", "451 5.1.1 x", "550 4.1.1 ", "552 4.1.1 ",
		"421", "553 x", "554 x", "", "user gone", "USER Gone", "xyzy", "XYy", "xyzzy", "ababcd", "cd",
		"qqr", "qqqr", "qr", "590 ax", "5x0 yx", "\nfoo", "x\nfoo", "foo", "bo\u00eete", "boite",
		"a foo b", "afoob", "bar", "bar ", "abc9", "ABC9", "KELVIN-CLASS", "\u212Aelvin-class",
		"xw", "xyzw", "acbde", "adbce", "acbd", "SIGMA END", "omega end", "pi end", "p end",
	}
	for _, line := range lines {
		if got, want := c.ClassifyLine(line), slowClassify(c, line); got != want {
			t.Errorf("%q: prefiltered %s, regexps %s", line, got, want)
		}
		for i, sc := range single {
			if got, want := sc.ClassifyLine(line), slowClassify(sc, line); got != want {
				t.Errorf("rule %s on %q: prefiltered %s, regexp %s", rules[i].pattern, line, got, want)
			}
		}
	}
}

func TestACMatcher(t *testing.T) {
	needles := []string{"he", "she", "his", "hers", "a", "aa", "x\u00e9", "ushe"}
	m := newACMatcher(needles)
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := "heisraxu "
	for range 5000 {
		n := rng.IntN(20)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		present := make([]uint64, 1)
		m.scan(b, present)
		for id, nd := range needles {
			want := strings.Contains(string(b), nd)
			got := present[0]&(1<<id) != 0
			if got != want {
				t.Fatalf("text %q needle %q: got %v want %v", b, nd, got, want)
			}
		}
	}
}

func TestConcurrentClassify(t *testing.T) {
	c := DefaultClassifier()
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				tc := defaultCases[(g*131+i)%len(defaultCases)]
				if got := c.Classify(tc.code, tc.enhanced, tc.text); got != tc.want {
					select {
					case errs <- fmt.Sprintf("%s: got %s want %s", tc.name, got, tc.want):
					default:
					}
					return
				}
			}
		}()
	}
	// DefaultClassifier is also safe to call concurrently.
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if DefaultClassifier() != c {
				errs <- "DefaultClassifier returned a different classifier"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
