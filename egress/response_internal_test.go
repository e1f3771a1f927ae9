package egress

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	cases := []struct {
		in   string
		want Response
	}{
		{"250 ok\r\n", Response{Code: 250, Text: "ok"}},
		{"250\r\n", Response{Code: 250}},
		{"250 2.1.5 recipient ok\r\n", Response{Code: 250, Enhanced: "2.1.5", Text: "recipient ok"}},
		{"550 5.1.1\r\n", Response{Code: 550, Enhanced: "5.1.1"}},
		{"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n", Response{Code: 250, Text: "mx.example\nPIPELINING\nSIZE 100"}},
		{"451-4.7.1 line one\r\n451-4.7.1 line two\r\n451 4.7.1 three\r\n",
			Response{Code: 451, Enhanced: "4.7.1", Text: "line one\nline two\nthree"}},
		// As KumoMTA: only a repeat of the first line's code is removed.
		{"220-4.1.0 woot\r\n220-4.1.0 more\r\n220 5.5.5 done\r\n",
			Response{Code: 220, Enhanced: "4.1.0", Text: "woot\nmore\n5.5.5 done"}},
		{"250 4.2.x not enhanced\n", Response{Code: 250, Text: "4.2.x not enhanced"}},
		{"250 6.0.0 not a class\r\n", Response{Code: 250, Text: "6.0.0 not a class"}},
		{"250 2.0.1234 too long\r\n", Response{Code: 250, Text: "2.0.1234 too long"}},
	}
	for _, tc := range cases {
		got, err := readReply(bufio.NewReader(strings.NewReader(tc.in)))
		if err != nil || got != tc.want {
			t.Errorf("readReply(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}

	bad := []string{
		"* OK IMAP\r\n",
		"25\r\n",
		"250x\r\n",
		"650 six\r\n",
		"150 one\r\n",
		"250-first\r\n251 second\r\n",
	}
	for _, in := range bad {
		_, err := readReply(bufio.NewReader(strings.NewReader(in)))
		var pe *protocolError
		if !errors.As(err, &pe) {
			t.Errorf("readReply(%q): %v, want a protocolError", in, err)
		}
	}
	long := "250 " + strings.Repeat("x", readBufferSize) + "\r\n"
	if _, err := readReply(bufio.NewReaderSize(strings.NewReader(long), readBufferSize)); !errors.Is(err, errLineTooLong) {
		t.Errorf("long line: %v", err)
	}
	many := strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 end\r\n"
	if _, err := readReply(bufio.NewReader(strings.NewReader(many))); err == nil {
		t.Error("endless reply accepted")
	}
	if _, err := readReply(bufio.NewReader(strings.NewReader("250-partial\r\n250 cut"))); err == nil {
		t.Error("truncated reply accepted")
	}
}

func TestResponseString(t *testing.T) {
	cases := []struct {
		r    Response
		want string
	}{
		{Response{Code: 250, Enhanced: "2.0.0", Text: "OK ids=1"}, "250 2.0.0 OK ids=1"},
		{Response{Code: 400, Text: InternalPrefix + "failed"}, "400 KumoMTA internal: failed"},
		{Response{Code: 451, Enhanced: "4.7.1", Text: "one\ntwo\r\nthree\rfour"}, "451 4.7.1 one two three four"},
		{Response{Code: 250}, "250 "},
	}
	for _, tc := range cases {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.r, got, tc.want)
		}
	}
}

func TestResponseClasses(t *testing.T) {
	cases := []struct {
		code                          int
		success, transient, permanent bool
	}{
		{250, true, false, false},
		{251, true, false, false},
		{354, false, true, false},
		{421, false, true, false},
		{451, false, true, false},
		{503, false, true, false},
		{550, false, false, true},
		{554, false, false, true},
	}
	for _, tc := range cases {
		r := Response{Code: tc.code}
		if r.Success() != tc.success || r.Transient() != tc.transient || r.Permanent() != tc.permanent {
			t.Errorf("%d: success=%v transient=%v permanent=%v", tc.code, r.Success(), r.Transient(), r.Permanent())
		}
	}
	r := Response{Code: 550, Enhanced: "5.1.10"}
	if c, s, d, ok := r.EnhancedCode(); !ok || c != 5 || s != 1 || d != 10 {
		t.Errorf("EnhancedCode() = %d %d %d %v", c, s, d, ok)
	}
	if _, _, _, ok := (Response{Code: 250}).EnhancedCode(); ok {
		t.Error("EnhancedCode of a response without one")
	}
	if !internal(400, "", "x").Internal() || (Response{Text: "x"}).Internal() {
		t.Error("Internal")
	}
}

func TestResponseError(t *testing.T) {
	cause := errors.New("boom")
	err := error(&ResponseError{Response: Response{Code: 421, Enhanced: "4.4.2", Text: "bye"}, Err: cause})
	wrapped := errors.Join(errors.New("context"), err)
	r, ok := ResponseOf(wrapped)
	if !ok || r.Code != 421 || !errors.Is(wrapped, cause) {
		t.Errorf("ResponseOf = %+v, %v", r, ok)
	}
	if err.Error() != "egress: 421 4.4.2 bye" {
		t.Errorf("Error() = %q", err.Error())
	}
	if _, ok := ResponseOf(cause); ok {
		t.Error("ResponseOf of a plain error")
	}
}

func TestSubjectAndTLSNames(t *testing.T) {
	if got := tlsVersionName(0x0304); got != "TLSv1_3" {
		t.Errorf("version %q", got)
	}
	if got := tlsCipherName(0x1301, 0x0304); got != "TLS13_AES_128_GCM_SHA256" {
		t.Errorf("cipher %q", got)
	}
	if got := tlsCipherName(0xc02f, 0x0303); got != "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" {
		t.Errorf("cipher %q", got)
	}
}
