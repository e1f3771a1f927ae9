package smtpd

// mtakit-only additions (not in upstream.patch; see README.md).

// GreetSession is implemented by Sessions that check each HELO/EHLO
// (mtakit-only). Greet is called after the session exists (or has been
// reset by a repeated greeting) with the client's domain and, for EHLO,
// the extensions about to be advertised (nil for HELO). It returns the
// extensions to advertise instead, or an error to answer the command with
// (an *SMTPError as is, anything else as "451 4.3.0"); after an error the
// client must greet again before MAIL.
type GreetSession interface {
	Greet(domain string, extensions []string) ([]string, error)
}
