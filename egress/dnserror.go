package egress

import (
	"errors"
	"strings"

	"github.com/miekg/dns"
)

// Sentinel causes of DNS failures. Match them with errors.Is; they are
// wrapped in a *DNSError that says which name failed and whether retrying
// later may help.
var (
	// ErrNullMX: the domain publishes a null MX (RFC 7505, "MX 0 ."), so it
	// accepts no mail. Permanent. KumoMTA bounces these with
	// "556 5.1.10 Recipient address has a null MX".
	ErrNullMX = errors.New("domain publishes a null MX (RFC 7505) and accepts no mail")
	// ErrNXDomain: the name does not exist. Permanent.
	ErrNXDomain = errors.New("no such domain (NXDOMAIN)")
	// ErrNoAddresses: the name exists but no A or AAAA records could be
	// found for the mail host(s). Temporary, as in KumoMTA, which defers
	// with "451 4.4.4 MX didn't resolve to any hosts".
	ErrNoAddresses = errors.New("no A or AAAA records for the mail host(s)")
	// ErrInvalidDomain: the domain or host is not a valid DNS name or
	// address literal. Permanent.
	ErrInvalidDomain = errors.New("invalid domain name or address literal")
)

// DNSError describes a failed lookup.
type DNSError struct {
	// Name is the name queried (fully qualified, lower case) or the domain
	// or host given by the caller.
	Name string
	// Type is the query type ("MX", "A", "AAAA", "A/AAAA"), "" if the
	// failure did not come from a query.
	Type string
	// Server is the last server asked, "" if none was.
	Server string
	// Rcode is the DNS response code when the failure is an rcode
	// (SERVFAIL, REFUSED, ...), -1 otherwise.
	Rcode int
	// Temporary reports whether the failure may go away: server failures,
	// timeouts, refusals, network errors and cancellation are temporary;
	// NXDOMAIN, null MX and invalid names are not.
	Temporary bool
	// Err is the cause: one of the sentinels above, a context error, a
	// network error, or a description of the rcode.
	Err error
}

func (e *DNSError) Error() string {
	var b strings.Builder
	b.WriteString("dns")
	if e.Type != "" {
		b.WriteString(" ")
		b.WriteString(e.Type)
	}
	b.WriteString(" lookup ")
	b.WriteString(e.Name)
	if e.Server != "" {
		b.WriteString(" via ")
		b.WriteString(e.Server)
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else if e.Rcode >= 0 {
		b.WriteString(dns.RcodeToString[e.Rcode])
	} else {
		b.WriteString("failed")
	}
	if e.Temporary {
		b.WriteString(" (temporary)")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *DNSError) Unwrap() error { return e.Err }

// Timeout reports whether the failure was a timeout.
func (e *DNSError) Timeout() bool {
	var t interface{ Timeout() bool }
	return errors.As(e.Err, &t) && t.Timeout()
}

// IsTemporary reports whether err, or an error it wraps, is a *DNSError
// marked Temporary: the lookup may succeed later, so a delivery should be
// retried rather than bounced.
func IsTemporary(err error) bool {
	var de *DNSError
	return errors.As(err, &de) && de.Temporary
}

// IsPermanent reports whether err wraps a *DNSError that is not temporary
// (NXDOMAIN, null MX, invalid name): the destination cannot be reached
// and the message should bounce.
func IsPermanent(err error) bool {
	var de *DNSError
	return errors.As(err, &de) && !de.Temporary
}
