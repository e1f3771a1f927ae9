package dkim

import (
	"errors"
	"fmt"
)

// Signer computes DKIM signatures for a message.
//
// Implementations must be safe for concurrent use.
type Signer interface {
	// Sign returns the header fields to prepend to msg, each including its
	// name and terminated by CRLF. msg is the complete message (header and
	// body) with CRLF line endings; Sign must not modify it.
	Sign(msg []byte) ([]byte, error)
}

// RejectError is an error that the server should turn into an SMTP reply
// (or the equivalent HTTP injection failure) for the message being signed.
// Its fields have the shape of go-smtp's SMTPError.
type RejectError struct {
	Code         int    // SMTP reply code, e.g. 552
	EnhancedCode [3]int // RFC 3463 enhanced status code, e.g. {5, 6, 0}
	Message      string // reply text without the codes
}

// Error returns the reply as it would appear on the wire: "552 5.6.0 text".
func (e *RejectError) Error() string {
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code,
		e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

var (
	// ErrNoFromHeader is returned (wrapped) when a message that must be
	// signed has no From header field. It carries KumoMTA's reply for that
	// case, "552 5.6.0 DKIM signing requires a From header, but it is
	// missing from this message"; test with errors.Is and obtain the codes
	// with errors.As(err, &rejectErr).
	ErrNoFromHeader = &RejectError{
		Code:         552,
		EnhancedCode: [3]int{5, 6, 0},
		Message:      "DKIM signing requires a From header, but it is missing from this message",
	}

	// ErrInvalidFromHeader is returned (wrapped) when the From header field
	// is present but no usable domain can be taken from it, so the signing
	// domain cannot be chosen. It uses the same reply codes as
	// ErrNoFromHeader.
	ErrInvalidFromHeader = &RejectError{
		Code:         552,
		EnhancedCode: [3]int{5, 6, 0},
		Message:      "DKIM signing requires a From header with a valid address domain",
	}

	// ErrVaultUnsupported is returned (wrapped) when dkim_data.toml asks
	// for keys from HashiCorp Vault (base.vault_mount). mtakit reads keys
	// from files only.
	ErrVaultUnsupported = errors.New("vault key sources are not supported")
)

// Multi is a Signer that applies several signers to one message, in order,
// as KumoMTA does when a policy calls msg:dkim_sign more than once (for
// example an RSA and an Ed25519 signature, or the author domain and the
// ESP domain).
//
// Each signer sees the message as it would be after the previous
// signatures were prepended, so the result equals signing and prepending
// one signature after another: the returned block holds the last signer's
// field first. A Multi with no elements signs nothing and returns an empty
// result. If any signer fails, Sign fails; a message is never returned with
// only some of its signatures.
type Multi []Signer

// prefixSigner is implemented by the signers of this package that can sign
// a message which has extra header fields (earlier signatures) in front of
// it without copying the message.
type prefixSigner interface {
	signWithPrefix(prefix, msg []byte) ([]byte, error)
}

// Sign implements Signer.
func (m Multi) Sign(msg []byte) ([]byte, error) {
	return m.signWithPrefix(nil, msg)
}

func (m Multi) signWithPrefix(prefix, msg []byte) ([]byte, error) {
	var acc []byte // signatures produced so far, newest first
	for i, s := range m {
		var (
			sig []byte
			err error
		)
		all := concatPrefix(acc, prefix)
		if ps, ok := s.(prefixSigner); ok {
			sig, err = ps.signWithPrefix(all, msg)
		} else if len(all) == 0 {
			sig, err = s.Sign(msg)
		} else {
			full := make([]byte, 0, len(all)+len(msg))
			full = append(append(full, all...), msg...)
			sig, err = s.Sign(full)
		}
		if err != nil {
			if len(m) == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("signature %d of %d: %w", i+1, len(m), err)
		}
		acc = concatPrefix(sig, acc)
	}
	return acc, nil
}

// concatPrefix returns a followed by b in a new slice (or one of them when
// the other is empty).
func concatPrefix(a, b []byte) []byte {
	switch {
	case len(a) == 0:
		return b
	case len(b) == 0:
		return a
	}
	out := make([]byte, 0, len(a)+len(b))
	return append(append(out, a...), b...)
}
