// Package dkim signs outgoing messages with DKIM (RFC 6376).
//
// A [Signer] computes one or more DKIM-Signature header fields for a message;
// the server prepends them before the message is spooled, so a message is
// signed exactly once whether it arrived over SMTP or the HTTP inject API.
package dkim

// Signer computes DKIM signatures for a message.
//
// Implementations must be safe for concurrent use.
type Signer interface {
	// Sign returns the header fields to prepend to msg, each including its
	// name and terminated by CRLF. msg is the complete message (header and
	// body) with CRLF line endings; Sign must not modify it.
	Sign(msg []byte) ([]byte, error)
}
