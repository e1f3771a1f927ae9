package reports_test

import (
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/mtakit/mtakit/mta/reports"
)

func ExampleParseDSN() {
	bounce := strings.ReplaceAll(`From: MAILER-DAEMON@mx.example.net
To: bounces@sender.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; nobody@example.net
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: user unknown

--B
Content-Type: text/rfc822-headers

Received: from app.sender.example (app.sender.example [192.0.2.1])
	by mta.sender.example (mtakit) with ESMTP id 18f2c9a1b3c4d5e6aabbccddeeff0011
Message-ID: <welcome-1@sender.example>
Subject: Welcome

--B--
`, "\n", "\r\n")
	d, err := reports.ParseDSN([]byte(bounce))
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range d.Failed() {
		rep := r.Reply()
		fmt.Println(r.Recipient(), rep.Code, rep.Enhanced, rep.Text)
	}
	c := d.Original.Correlation()
	fmt.Println("queue id:", c.QueueID)
	fmt.Println("message-id:", c.MessageID)
	// Output:
	// nobody@example.net 550 5.1.1 <nobody@example.net>: user unknown
	// queue id: 18f2c9a1b3c4d5e6aabbccddeeff0011
	// message-id: welcome-1@sender.example
}

func ExampleParseARF() {
	report := `From: fbl@isp.example
To: fbl@sender.example
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

A user marked this message as spam.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: <user@isp.example>
Source-IP: 192.0.2.20

--F
Content-Type: text/rfc822-headers

X-KumoRef: eyJfQF8iOiJcXF8vIiwicmVjaXBpZW50IjoidXNlckBpc3AuZXhhbXBsZSIsInRlbmFudCI6ImFjbWUifQ==
Message-ID: <promo-9@sender.example>

--F--
`
	r, err := reports.ParseARF([]byte(report))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.FeedbackType, r.OriginalRcptTo, *r.SourceIP)
	fmt.Println("tenant:", r.SupplementalTrace["tenant"])

	_, err = reports.ParseARF([]byte("Subject: hello\r\n\r\nnot a report\r\n"))
	fmt.Println(errors.Is(err, reports.ErrNotARF))
	// Output:
	// abuse [user@isp.example] 192.0.2.20
	// tenant: acme
	// true
}
