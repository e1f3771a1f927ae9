package listener

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/emersion/go-smtp"
)

// errBareLineEnding is the reply to a message containing a CR or LF that is
// not part of a CRLF pair. Such bytes are how SMTP smuggling works: a
// receiver that treats "<LF>.<LF>" as the end of data would see a second
// message where we see one. Refusing them means no peer can split the
// message differently from us.
var errBareLineEnding = &smtp.SMTPError{
	Code:         552,
	EnhancedCode: smtp.EnhancedCode{5, 6, 0},
	Message:      "message contains a bare CR or LF; lines must end with CRLF",
}

// errNUL is the reply to a message containing a NUL byte. RFC 5322 and
// 8BITMIME forbid NUL (we do not offer BINARYMIME), and a next hop that
// strips NULs would turn "<CRLF><NUL>.<CRLF>" into an end of data: a
// smuggling vector through us.
var errNUL = &smtp.SMTPError{
	Code:         552,
	EnhancedCode: smtp.EnhancedCode{5, 6, 0},
	Message:      "message contains a NUL byte",
}

func errLineTooLong(limit int) *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         552,
		EnhancedCode: smtp.EnhancedCode{5, 6, 0},
		Message:      fmt.Sprintf("message contains a line longer than %d octets", limit),
	}
}

// readData reads the DATA stream into buf, refusing bare CR, bare LF, NUL
// and lines longer than maxLine octets (excluding CRLF). It returns an
// *smtp.SMTPError for conformance failures and the read error otherwise.
func readData(r io.Reader, buf io.Writer, maxLine int) error {
	var chunk [32 << 10]byte
	lineLen := 0       // octets in the current line so far
	pendingCR := false // the previous chunk ended in CR
	for {
		n, err := r.Read(chunk[:])
		p := chunk[:n]
		buf.Write(p)
		for len(p) > 0 {
			if pendingCR {
				if p[0] != '\n' {
					return errBareLineEnding
				}
				pendingCR = false
				lineLen = 0
				p = p[1:]
				continue
			}
			i := bytes.IndexAny(p, "\r\n\x00")
			if i < 0 {
				lineLen += len(p)
				break
			}
			lineLen += i
			switch p[i] {
			case '\n':
				return errBareLineEnding
			case 0:
				return errNUL
			}
			pendingCR = true
			p = p[i+1:]
			if lineLen > maxLine {
				return errLineTooLong(maxLine)
			}
		}
		if lineLen > maxLine {
			return errLineTooLong(maxLine)
		}
		if err == io.EOF {
			if pendingCR {
				return errBareLineEnding
			}
			return nil
		}
		if err != nil {
			if errors.Is(err, smtp.ErrTooLongLine) {
				return errLineTooLong(maxLine)
			}
			return err
		}
	}
}
