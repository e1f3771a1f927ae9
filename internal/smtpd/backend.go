package smtpd

// A SMTP server backend.
type Backend interface {
	NewSession(c *Conn) (Session, error)
}

// BackendFunc is an adapter to allow the use of an ordinary function as a
// Backend.
type BackendFunc func(c *Conn) (Session, error)

var _ Backend = (BackendFunc)(nil)

// NewSession calls f(c).
func (f BackendFunc) NewSession(c *Conn) (Session, error) {
	return f(c)
}

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
