package egress

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// readBufferSize is the size of a connection's read buffer and so the
	// longest reply line accepted (RFC 5321 allows 512 bytes).
	readBufferSize = 4096
	// maxReplyLines bounds the lines of one multi-line reply.
	maxReplyLines = 128
)

// errLineTooLong is returned for a reply line longer than readBufferSize.
var errLineTooLong = errors.New("reply line too long")

// protocolError is a reply that does not parse as SMTP.
type protocolError struct{ line string }

func (e *protocolError) Error() string {
	line := e.line
	if len(line) > 100 {
		line = line[:100] + "..."
	}
	return fmt.Sprintf("malformed reply %q", line)
}

// readReply reads one (possibly multi-line) reply. The lines of a
// multi-line reply must share the code; the enhanced status code of the
// first line is removed from the following lines that repeat it.
func readReply(br *bufio.Reader) (Response, error) {
	var (
		resp Response
		text strings.Builder
	)
	for n := 0; n < maxReplyLines; n++ {
		raw, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return Response{}, errLineTooLong
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(raw) > 0 {
				return Response{}, io.ErrUnexpectedEOF
			}
			return Response{}, err
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
		code, final, content, ok := parseReplyLine(line)
		if !ok {
			return Response{}, &protocolError{line: line}
		}
		if n == 0 {
			resp.Code = code
			resp.Enhanced, content = splitEnhanced(content)
		} else {
			if code != resp.Code {
				return Response{}, &protocolError{line: line}
			}
			text.WriteByte('\n')
			if resp.Enhanced != "" {
				content = strings.TrimPrefix(content, resp.Enhanced+" ")
			}
		}
		text.WriteString(content)
		if final {
			resp.Text = text.String()
			return resp, nil
		}
	}
	return Response{}, fmt.Errorf("reply has more than %d lines", maxReplyLines)
}

// parseReplyLine splits "250-text", "250 text" or "250".
func parseReplyLine(line string) (code int, final bool, content string, ok bool) {
	if len(line) < 3 {
		return 0, false, "", false
	}
	if line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' || line[2] < '0' || line[2] > '9' {
		return 0, false, "", false
	}
	code, _ = strconv.Atoi(line[:3])
	if len(line) == 3 {
		return code, true, "", true
	}
	switch line[3] {
	case ' ':
		return code, true, line[4:], true
	case '-':
		return code, false, line[4:], true
	}
	return 0, false, "", false
}

// ioError is a failed read or write on the connection, with what was
// being done.
type ioError struct {
	write   bool          // writing cmd, not waiting for its reply
	data    bool          // writing the message data
	cmd     string        // the command line without CRLF; "" for the banner
	timeout time.Duration // the timeout that applied
	err     error
}

func (e *ioError) Error() string {
	var what string
	switch {
	case e.data:
		what = "sending message payload data"
	case e.write:
		what = fmt.Sprintf("writing %q", e.cmd)
	case e.cmd == "":
		what = "waiting for the banner"
	default:
		what = fmt.Sprintf("waiting for the response to %q", e.cmd)
	}
	switch {
	case e.Timeout():
		return fmt.Sprintf("timed out after %v %s", e.timeout, what)
	case errors.Is(e.err, io.EOF), errors.Is(e.err, io.ErrUnexpectedEOF):
		return "connection closed by peer while " + what
	}
	return fmt.Sprintf("%s: %v", what, e.err)
}

func (e *ioError) Unwrap() error { return e.err }

// Timeout reports whether a deadline expired.
func (e *ioError) Timeout() bool { return errors.Is(e.err, os.ErrDeadlineExceeded) }
