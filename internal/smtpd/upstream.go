// Package smtpd is a patched copy of the server side of
// github.com/emersion/go-smtp v0.25.1, kept until upstream has the fixes.
//
// go-smtp's DATA reader is unexported and is read from the connection's
// own buffer (after STARTTLS, from its own tls.Conn), so no wrapper can
// correct what it drops; and a replace directive in go.mod does not reach
// programs that embed mtakit. What the copy changes is in upstream.patch
// (an upstream-ready patch with tests) and README.md:
//
//   - ".<CR>" at the start of a line that is not the end-of-data line
//     keeps its CR (only the period goes, RFC 5321 section 4.5.2), and a
//     CR followed by CRLF still ends the line, so "<CRLF>.<CR><CR><LF>
//     .<CRLF>" ends the data where the client meant it to;
//   - the goroutine that runs Data for BDAT gets the session, recipients,
//     status collector and result channel of its own transaction, so a
//     Data call still running after RSET cannot answer the next BDAT
//     transaction, and a connection closed after "BDAT 0" cannot make it
//     call Data on a nil Session.
//
// Everything the rest of mtakit shares with go-smtp's client and API is
// an alias of the upstream declaration, so an *SMTPError, MailOptions or
// Session here is exactly the one of github.com/emersion/go-smtp, and
// errors such as ErrDataReset and ErrTooLongLine compare equal to
// upstream's.
package smtpd

import "github.com/emersion/go-smtp"

// Declarations of go-smtp's smtp.go, data.go, backend.go, server.go,
// lengthlimit_reader.go and conn.go that are not copied.
type (
	EnhancedCode     = smtp.EnhancedCode
	SMTPError        = smtp.SMTPError
	BodyType         = smtp.BodyType
	DSNReturn        = smtp.DSNReturn
	MailOptions      = smtp.MailOptions
	DSNNotify        = smtp.DSNNotify
	DSNAddressType   = smtp.DSNAddressType
	DeliverByMode    = smtp.DeliverByMode
	DeliverByOptions = smtp.DeliverByOptions
	PriorityProfile  = smtp.PriorityProfile
	RcptOptions      = smtp.RcptOptions

	Session         = smtp.Session
	LMTPSession     = smtp.LMTPSession
	StatusCollector = smtp.StatusCollector
	AuthSession     = smtp.AuthSession
	Logger          = smtp.Logger
)

const (
	Body7Bit       = smtp.Body7Bit
	Body8BitMIME   = smtp.Body8BitMIME
	BodyBinaryMIME = smtp.BodyBinaryMIME

	DSNReturnFull    = smtp.DSNReturnFull
	DSNReturnHeaders = smtp.DSNReturnHeaders

	DSNNotifyNever   = smtp.DSNNotifyNever
	DSNNotifyDelayed = smtp.DSNNotifyDelayed
	DSNNotifyFailure = smtp.DSNNotifyFailure
	DSNNotifySuccess = smtp.DSNNotifySuccess

	DSNAddressTypeRFC822 = smtp.DSNAddressTypeRFC822
	DSNAddressTypeUTF8   = smtp.DSNAddressTypeUTF8

	DeliverByNotify = smtp.DeliverByNotify
	DeliverByReturn = smtp.DeliverByReturn

	PriorityUnspecified = smtp.PriorityUnspecified
	PriorityMIXER       = smtp.PriorityMIXER
	PrioritySTANAG4406  = smtp.PrioritySTANAG4406
	PriorityNSEP        = smtp.PriorityNSEP
)

// The same values as upstream's (pointers to the same errors), so that
// comparisons with either package's variables agree.
var (
	NoEnhancedCode     = smtp.NoEnhancedCode
	EnhancedCodeNotSet = smtp.EnhancedCodeNotSet

	ErrDataTooLarge         = smtp.ErrDataTooLarge
	ErrAuthFailed           = smtp.ErrAuthFailed
	ErrAuthRequired         = smtp.ErrAuthRequired
	ErrAuthUnsupported      = smtp.ErrAuthUnsupported
	ErrAuthUnknownMechanism = smtp.ErrAuthUnknownMechanism
	ErrServerClosed         = smtp.ErrServerClosed
	ErrTooLongLine          = smtp.ErrTooLongLine
	ErrDataReset            = smtp.ErrDataReset
)
