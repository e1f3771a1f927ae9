package reports

import (
	"regexp"
	"strings"
)

// Non-standard bounces: the human-readable text of a bounce that has no
// delivery-status part. Each recognizer looks for the fixed sentences of
// one family of senders and pulls out the failed addresses and the
// remote server's reply. They run on LF text, at most maxTextLines
// lines, and use only linear-time regular expressions.

const (
	maxTextLines      = 5000
	maxTextRecipients = 100 // addresses taken from one bounce text
)

var (
	addrRE = regexp.MustCompile(`[A-Za-z0-9.!#$%&'*+/=?^_{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+`)
	// qmailRcptRE is qmail's recipient line: "<user@example.com>:".
	qmailRcptRE      = regexp.MustCompile(`^<([^<>\s]+@[^<>\s]+)>:\s*$`)
	remoteReturnedRE = regexp.MustCompile(`(?i)remote server returned '([^']*)'`)
	reportedErrorRE  = regexp.MustCompile(`(?i)^\s*reported error:\s*(.+)$`)
	gmailNotDelivRE  = regexp.MustCompile(`(?i)your message (?:wasn't|was not) delivered to (\S+@\S+?)[.,]? (?:because|as)`)
)

// parseBounceText tries the recognizers in turn.
func parseBounceText(t []byte) (Format, []RecipientReport) {
	s := string(t)
	lines := strings.Split(s, "\n")
	if len(lines) > maxTextLines {
		lines = lines[:maxTextLines]
	}
	lower := strings.ToLower(strings.Join(lines, "\n"))
	switch {
	case strings.Contains(lower, "delivery has failed to these recipients or groups"):
		return FormatExchangeText, exchangeText(lines)
	case strings.Contains(lower, "wasn't delivered to") || strings.Contains(lower, "was not delivered to") ||
		strings.Contains(lower, "delivery to the following recipient failed permanently"):
		return FormatGmailText, gmailText(lines)
	case strings.Contains(lower, "following address(es) failed") ||
		strings.Contains(lower, "following addresses had permanent fatal errors"):
		return FormatExim, eximText(lines)
	}
	return FormatQmail, qmailText(lines)
}

// failedRecipient builds the report of a failed recipient from the
// reply (or explanation) found for it.
func failedRecipient(addr, diag string) RecipientReport {
	r := RecipientReport{
		FinalRecipient:     addr,
		FinalRecipientType: "rfc822",
		Action:             Failed,
		Status:             Status{5, 0, 0},
	}
	diag = strings.Join(strings.Fields(diag), " ")
	rep := parseReplyText(diag)
	if rep.Code != 0 {
		r.Diagnostic = Diagnostic{Type: "smtp", Text: diag}
		if rep.Code/100 == 4 {
			r.Status = Status{4, 0, 0}
		}
	} else if diag != "" {
		r.Diagnostic = Diagnostic{Text: diag}
	}
	if rep.Enhanced != "" {
		if st, err := ParseStatus(rep.Enhanced); err == nil {
			r.Status = st
		}
	}
	if r.Status.Class == 4 {
		r.Action = Delayed
	}
	return r
}

// findReply returns the first SMTP reply in lines: a line that starts
// with a reply code, or the text after "said:" / "returned".
func findReply(lines []string) string {
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if i := strings.Index(strings.ToLower(l), "said:"); i >= 0 {
			if after := strings.TrimSpace(l[i+len("said:"):]); parseReplyText(after).Code != 0 {
				return after
			}
		}
		if m := remoteReturnedRE.FindStringSubmatch(l); m != nil {
			return m[1]
		}
		if m := reportedErrorRE.FindStringSubmatch(l); m != nil {
			return m[1]
		}
		if l = strings.Trim(l, "()"); parseReplyText(l).Code != 0 {
			return strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(l, "reason:")), "##")
		}
		if after, ok := strings.CutPrefix(l, "reason:"); ok && parseReplyText(strings.TrimSpace(after)).Code != 0 {
			return strings.TrimSpace(after)
		}
	}
	return ""
}

// paragraph returns the lines from lines[i] up to the next blank line.
func paragraph(lines []string, i int) []string {
	j := i
	for j < len(lines) && strings.TrimSpace(lines[j]) != "" {
		j++
	}
	return lines[i:j]
}

func indexContaining(lines []string, from int, phrase string) int {
	for i := from; i < len(lines); i++ {
		if strings.Contains(strings.ToLower(lines[i]), phrase) {
			return i
		}
	}
	return -1
}

// qmailText: qmail, and Yahoo's "Sorry, we were unable to deliver your
// message to the following address." Each failed address is a line
// "<user@example.com>:" followed by a paragraph with the reason.
func qmailText(lines []string) []RecipientReport {
	var out []RecipientReport
	for i := 0; i < len(lines) && len(out) < maxTextRecipients; i++ {
		m := qmailRcptRE.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			continue
		}
		para := paragraph(lines, i+1)
		diag := findReply(para)
		if diag == "" {
			diag = strings.Join(para, " ")
		}
		if diag == "" {
			continue
		}
		out = append(out, failedRecipient(m[1], diag))
		i += len(para)
	}
	return out
}

// exchangeText: Exchange and Outlook.com non-delivery reports without a
// delivery-status part. The failed addresses follow "Delivery has failed
// to these recipients or groups:"; the replies are in the diagnostic
// section, "Remote Server returned '550 5.1.10 ...'" (older) or
// "Reported error: 550 5.1.10 ..." (newer), or else in "#550 ...##"
// lines.
func exchangeText(lines []string) []RecipientReport {
	start := indexContaining(lines, 0, "delivery has failed to these recipients or groups")
	end := indexContaining(lines, start+1, "diagnostic information for administrators")
	if end < 0 {
		end = len(lines)
	}
	var addrs []string
	for _, l := range lines[start+1 : end] {
		if a := addrRE.FindString(l); a != "" && !containsString(addrs, a) {
			addrs = append(addrs, a)
			if len(addrs) == maxTextRecipients {
				break
			}
		}
	}
	diag := ""
	if end < len(lines) {
		diag = findReply(lines[end:])
	}
	var out []RecipientReport
	for _, a := range addrs {
		d := diag
		// The diagnostic section lists each address followed by its reply.
		if end < len(lines) {
			for i := end; i < len(lines); i++ {
				if strings.Contains(lines[i], a) {
					if r := findReply(lines[i+1 : min(i+3, len(lines))]); r != "" {
						d = r
					}
					break
				}
			}
		}
		out = append(out, failedRecipient(a, d))
	}
	return out
}

// gmailText: Gmail's "Your message wasn't delivered to X because ..."
// (reply after "The response from the remote server was:" or "The
// response was:") and the older "Delivery to the following recipient
// failed permanently:" (reply under "Technical details of permanent
// failure:").
func gmailText(lines []string) []RecipientReport {
	var addrs []string
	explanation := ""
	for i, l := range lines {
		if m := gmailNotDelivRE.FindStringSubmatch(l); m != nil {
			addrs = append(addrs, strings.TrimRight(m[1], "."))
			explanation = strings.Join(paragraph(lines, i), " ")
			break
		}
	}
	if len(addrs) == 0 {
		if i := indexContaining(lines, 0, "delivery to the following recipient failed permanently"); i >= 0 {
			for j := i + 1; j < len(lines) && len(addrs) < maxTextRecipients; j++ {
				t := strings.TrimSpace(lines[j])
				if t == "" {
					if len(addrs) > 0 {
						break
					}
					continue
				}
				if a := addrRE.FindString(t); a != "" {
					addrs = append(addrs, a)
				}
			}
		}
	}
	diag := ""
	for _, phrase := range []string{
		"the response from the remote server was",
		"the error that the other server returned was",
		"the response was",
		"technical details of permanent failure",
	} {
		if i := indexContaining(lines, 0, phrase); i >= 0 {
			rest := lines[i+1:]
			for len(rest) > 0 && strings.TrimSpace(rest[0]) == "" {
				rest = rest[1:]
			}
			if diag = findReply(paragraph(rest, 0)); diag == "" {
				diag = strings.Join(paragraph(rest, 0), " ")
			}
			break
		}
	}
	if diag == "" {
		diag = explanation
	}
	var out []RecipientReport
	for _, a := range addrs {
		out = append(out, failedRecipient(a, diag))
	}
	return out
}

// eximText: Exim's "The following address(es) failed:" (each address
// indented, its details indented further) and Sendmail's "The following
// addresses had permanent fatal errors" ("<addr>" then "(reason: ...)").
func eximText(lines []string) []RecipientReport {
	i := indexContaining(lines, 0, "following address(es) failed")
	if i < 0 {
		i = indexContaining(lines, 0, "following addresses had permanent fatal errors")
	}
	var out []RecipientReport
	j := i + 1
	for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
		j++
	}
	for j < len(lines) && len(out) < maxTextRecipients {
		l := lines[j]
		t := strings.TrimSpace(l)
		if t == "" {
			// A blank line ends the list unless indented details follow.
			if j+1 < len(lines) && strings.HasPrefix(lines[j+1], "    ") {
				j++
				continue
			}
			break
		}
		a := addrRE.FindString(t)
		if a == "" || strings.HasPrefix(l, "    ") || strings.HasPrefix(l, "\t") {
			j++
			continue
		}
		// The details: the following lines indented deeper than this one.
		indent := len(l) - len(strings.TrimLeft(l, " \t"))
		k := j + 1
		for k < len(lines) {
			n := lines[k]
			nt := strings.TrimSpace(n)
			if nt != "" && len(n)-len(strings.TrimLeft(n, " \t")) <= indent && !strings.HasPrefix(nt, "(") {
				break
			}
			if nt == "" && (k+1 >= len(lines) || !strings.HasPrefix(lines[k+1], strings.Repeat(" ", indent+1))) {
				break
			}
			k++
		}
		details := lines[j+1 : k]
		diag := findReply(details)
		if diag == "" {
			diag = strings.Join(details, " ")
		}
		out = append(out, failedRecipient(a, diag))
		j = k
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
