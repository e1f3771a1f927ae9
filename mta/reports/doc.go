// Package reports parses the reports that mail systems send back to a
// sender about its mail: delivery status notifications (bounces, RFC
// 3464) and feedback-loop complaint reports (ARF, RFC 5965). mtakit's
// server uses it for listener domains with log_oob and log_arf; it
// imports nothing of mtakit, so programs that receive reports some other
// way (a mailbox, a webhook) can use it on its own.
//
// # Bounces
//
// ParseDSN reads a multipart/report with report-type delivery-status: the
// per-message fields (Reporting-MTA, Arrival-Date, ...) and one
// RecipientReport per recipient group (Final-Recipient,
// Original-Recipient, Action, Status, Diagnostic-Code, Remote-MTA, ...).
// message/global-delivery-status (RFC 6533) is read the same way. The
// parser is lenient where senders are known to be sloppy: field names in
// any case, "rfc822;addr" without a space, angle brackets around
// addresses, comments after the Action, a missing Action (derived from
// the Status class) or Status (derived from the diagnostic), a missing
// per-message group, lines that are not fields.
//
// Many bounces in the wild have no delivery-status part. ParseDSN also
// recognizes the text of the common ones (see the Format values): qmail
// and Yahoo ("<user@example.com>:" then the reason), Exim and Sendmail
// ("The following address(es) failed:"), Gmail ("Your message wasn't
// delivered to ...", "The response from the remote server was:") and
// Microsoft Exchange / Outlook ("Delivery has failed to these recipients
// or groups", "Remote Server returned '550 5.1.10 ...'"). Such a report
// gives each address it names as failed, with the reply it quotes.
//
// RecipientReport.Reply turns a recipient's Status and Diagnostic-Code
// into an SMTP reply (code, enhanced code, text) ready for a bounce
// classifier.
//
// # Feedback reports
//
// ParseARF reads a multipart/report with report-type feedback-report into
// a FeedbackReport, whose JSON form is the feedback_report object of
// KumoMTA's Feedback log records. Feedback-Type and Version are required
// (a report without them is an error); RFC 5965 also requires User-Agent,
// which is kept empty when absent because some providers omit it.
//
// # Correlation
//
// Both kinds of report usually embed the original message or its header
// section (Original). Original.Correlation finds in it what identifies
// the message: its Message-ID; the queue ID mtakit wrote in its Received
// field ("by mx.example.com (mtakit) with ESMTP id ..."); and the
// supplemental trace header (X-KumoRef by default; any X- field whose
// value is base64 of a JSON object marked "_@_": "\_/", as KumoMTA looks
// for it), which holds the original recipient and the meta values the
// listener was configured to include (tenant, campaign, ...).
//
// # Errors and limits
//
// Errors wrap ErrNotDSN or ErrNotARF when the message is not a report of
// that kind at all, and describe the defect otherwise, so that a caller
// can log an unparseable report with its reason. The parsers never
// panic on any input (FuzzParseDSN, FuzzParseARF) and bound their work:
// at most 64 MIME parts, 4 levels of nesting, 8 MiB per part, 1000
// recipient groups of a delivery-status part, 100 addresses and 5000
// lines of a bounce text, and 1000 fields per header section.
package reports
