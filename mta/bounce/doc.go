// Package bounce classifies SMTP failure responses into KumoMTA's bounce
// classes and builds delivery status notifications (RFC 3464 bounce
// messages).
//
// # Classification
//
// A Classifier gives every failure response a class name, the value of
// the bounce_classification field of a log record (mta/logs):
// InvalidRecipient, QuotaIssues, SpamBlock, TransientFailure, ... or
// Uncategorized when no rule matches. It behaves as KumoMTA's bounce
// classifier (crates/bounce-classify, configured by
// kumo.configure_bounce_classifier{files = {...}}).
//
// Rules files are TOML (or JSON, chosen by the .toml / .json name
// extension) with a "rules" table mapping a class name to a list of
// regular expressions:
//
//	[rules]
//	InvalidRecipient = [
//	  '^(451|550) [45]\.1\.1 ',
//	  '(?i)user unknown',
//	]
//
// Other top-level keys are ignored; a file without a rules table is an
// error. Class names are case-sensitive: the predefined names (see
// PredefinedClasses) or any other string, which is returned verbatim.
//
// A response is matched as one line, "CODE ENHANCED TEXT" — for example
// "550 5.1.1 user unknown" — or "CODE TEXT" when it has no enhanced
// status code, with every line break of a multi-line reply replaced by
// one space (rfc5321 Response::to_single_line). Since the line starts
// with the code, rules can anchor on it (^5\d\d).
//
// The first rule that matches decides, in the order the rules were
// loaded: files in the order listed, the classes of a file in the order
// written, the expressions of a class in list order (KumoMTA compiles
// them in that order into a RegexSet and takes the lowest matching
// index). So files with overrides go first. Classifiable lists the record
// types KumoMTA classifies; others keep Uncategorized.
//
// LoadClassifier loads files; Builder combines files, single rules and
// the built-in defaults. Load errors are *RuleError values naming the
// file and line — of the TOML or JSON syntax error, or of the bad regular
// expression, with its class — and every problem of every file is
// reported, not only the first, so a configuration check can list them
// all.
//
// DefaultClassifier has mtakit's own default rules (DefaultRuleFiles;
// written for mtakit, not copied from KumoMTA), in two files used in this
// order:
//
//   - rules/phrases.toml: case-insensitive phrases of large mailbox
//     providers and common MTAs (Gmail, Outlook, Yahoo, iCloud, Postfix,
//     Exim, Sendmail, qmail, and the error texts of Go's net package),
//     for every predefined class. They come first because replies carry
//     more information in their text than in their codes: a "550 5.7.1"
//     may be a relay denial, a block-list hit or a content filter.
//   - rules/status_codes.toml: RFC 3463 enhanced status codes with their
//     IANA registry meanings (5.1.1 InvalidRecipient, 5.1.2 BadDomain,
//     4.2.2/5.2.2 QuotaIssues, 4.5.3/5.5.3 TooManyRecipients, 4.4.7
//     MessageExpired, 5.7.8 AuthenticationFailed, other 5.7.x
//     PolicyRelated, ...). Codes naming a lasting condition count only on
//     a 5xx reply; any 4xx reply no rule claimed ends as TransientFailure.
//
// Differences from KumoMTA's shipped iana.toml: KumoMTA's file has no
// phrase rules (those are in its separate community bounces.toml), leaves
// an unmatched 4xx reply Uncategorized where ours says TransientFailure,
// and maps 5.7.0-5.7.3 to AuthenticationFailed where ours says
// PolicyRelated. Load KumoMTA's own files with LoadClassifier to get its
// exact behaviour.
//
// # Speed
//
// With the default rules (182 expressions), Classify takes about 1 µs
// for a typical reply and a few µs for a long one that only a late rule
// matches (BenchmarkClassify). Its cost grows with the length of the
// reply and the number of rules that plausibly match it, hardly with the
// number of rules, and it allocates no more than a copy of the line for
// the regular expressions to run on. Go's regexp package has no RegexSet
// and runs the case-insensitive alternations rules are made of at
// 100-400 ns per byte, so running each rule in turn would cost hundreds
// of µs per reply; instead, when a Classifier is built, each expression
// is analysed (regexp/syntax) for conditions a line must meet to match:
//
//   - for expressions anchored with ^, the bytes allowed at each of the
//     first positions ([5][0-9][0-9][ ][45][.][1][.][1][ ]);
//   - sets of literal strings of which one must occur ("needles"), with
//     bounds on how far a match can reach before and after the needle.
//
// One Aho-Corasick pass over the lowered line finds every needle of
// every rule; only rules whose conditions hold are candidates, and a
// candidate's expression runs only on a window around each needle
// occurrence, anchored so that it tries the few possible match starts
// (with one byte of context on each side, so \b, ^ and $ judge the
// window as they would the line). Case-insensitive expressions are
// rewritten to case-sensitive ones run on the lowered line, which Go
// matches faster, and a rule that is an alternation at the top (a|b|c)
// runs as one rule per branch, each with its own, tighter, conditions.
// The result is always what running the expressions in order would give
// (the tests check this on random lines); lines with non-ASCII text use
// the same conditions on a folded copy and run the expressions on the
// whole line. A Classifier is immutable and safe for concurrent use; the
// window regexps are compiled on a rule's first use.
//
// KumoMTA runs classification on a thread pool with an LRU cache of
// results, because a RegexSet over many rules is still costly; at these
// speeds mtakit classifies inline, without a cache. To reload rules,
// build a new Classifier and swap it in.
//
// # Regular expression dialect
//
// KumoMTA's rules are Rust regex crate expressions; mtakit compiles them
// with Go's regexp (RE2 syntax), which accepts nearly all of them with
// the same meaning. The differences: Rust's \d, \w, \s and \b are
// Unicode-aware where Go's are ASCII (SMTP replies are ASCII in
// practice); Go rejects Rust's verbose mode (?x), reported as a load
// error; and Go silently reads some Rust syntax as literal text: the
// word anchors \< and \>, class set operations ([a-z&&[^aeiou]], --,
// ~~) and the repetition {,n}. Avoid those in rules shared with KumoMTA.
//
// # Delivery status notifications
//
// BuildDSN writes a complete bounce message: From the mail system at the
// reporting host (MAILER-DAEMON@ReportingMTA), To the original envelope
// sender, with Subject, Date, Message-ID and Auto-Submitted:
// auto-replied (RFC 3834), as a multipart/report; report-type=
// delivery-status (RFC 6522) of three parts: a human-readable text/plain
// explanation, the message/delivery-status fields of RFC 3464
// (Reporting-MTA, Arrival-Date, and for each recipient Final-Recipient,
// Action, Status, Remote-MTA, Diagnostic-Code, dates) and the original
// message's header section as text/rfc822-headers (the body is never
// returned). Every line ends in CRLF and is at most 998 octets; header
// and status fields are folded at spaces to 78 octets where they can be.
// Values are stripped of line breaks, so they cannot add fields.
// Non-ASCII addresses, diagnostics or headers switch to the RFC 6533
// forms (message/global-delivery-status with "utf-8" address types,
// message/global-headers, 8bit).
//
// The report must be sent with the null reverse-path (MAIL FROM:<>), and
// BuildDSN refuses to answer a message that itself had the null sender
// (ErrNullSender; ShouldSendDSN tells beforehand): that is how bounce
// loops are prevented. Whether a DSN is wanted at all (RFC 3461 NOTIFY,
// delayed-mail policy) is the caller's decision. The queue ID of the
// original message goes in an extension field, X-Mtakit-Queue-ID, as
// Postfix writes X-Postfix-Queue-ID.
//
// The layout follows Postfix's bounces, which users and their tools
// know. KumoMTA's own generator (kumo.generate_rfc3464_message, for
// Bounce and Expiration records) writes the same fields with other
// wording — Subject "Returned mail", From "Mail Delivery Subsystem
// <mailer-daemon@host>" — which DSNOptions.Subject and DSNOptions.From
// can reproduce.
package bounce
