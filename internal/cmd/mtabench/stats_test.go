package main

import (
	"bytes"
	"io"
	"net/mail"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{
		"512": 512, "1k": 1024, "2k": 2048, "2K": 2048, "10kb": 10240, "100KiB": 102400,
		"100k": 102400, "1m": 1 << 20, "1MB": 1 << 20, " 3k ": 3072, "256m": 256 << 20,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "0", "1.5k", "2g", "10x", "257m", "kb"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int]string{512: "512", 1024: "1k", 102400: "100k", 1 << 20: "1m", 1500: "1500"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
		if n%1024 == 0 {
			if back, err := parseSize(formatSize(n)); err != nil || back != n {
				t.Errorf("parseSize(formatSize(%d)) = %d, %v", n, back, err)
			}
		}
	}
}

func TestParseLists(t *testing.T) {
	ints, err := parseInts("1, 2,64")
	if err != nil || len(ints) != 3 || ints[0] != 1 || ints[2] != 64 {
		t.Errorf("parseInts = %v, %v", ints, err)
	}
	for _, bad := range []string{"", "1,,2", "0", "-3", "a"} {
		if _, err := parseInts(bad); err == nil {
			t.Errorf("parseInts(%q): want an error", bad)
		}
	}
	sizes, err := parseSizes("1k,100k")
	if err != nil || len(sizes) != 2 || sizes[1] != 102400 {
		t.Errorf("parseSizes = %v, %v", sizes, err)
	}
	if _, err := parseSizes("1k,x"); err == nil {
		t.Error("parseSizes(1k,x): want an error")
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var d []time.Duration
		for _, n := range ns {
			d = append(d, time.Duration(n)*time.Millisecond)
		}
		return d
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	for _, c := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2), 50, 1 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 75, 3 * time.Millisecond},
		{ms(1, 2, 3, 4), 76, 4 * time.Millisecond},
		{ms(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{ms(1, 2, 3, 4), 0, 1 * time.Millisecond},
		{hundred, 50, 50 * time.Millisecond},
		{hundred, 99, 99 * time.Millisecond},
		{hundred, 99.5, 100 * time.Millisecond},
	} {
		if got := percentile(c.in, c.p); got != c.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Error("median sorted its argument")
	}
}

func TestLogfmtValue(t *testing.T) {
	line := `time=2026-01-02T15:04:05.000Z level=INFO msg="spool recovered" messages=200000 duration=2.031s`
	for key, want := range map[string]string{"msg": "spool recovered", "messages": "200000", "duration": "2.031s", "level": "INFO"} {
		if got, ok := logfmtValue(line, key); !ok || got != want {
			t.Errorf("logfmtValue(%s) = %q, %v; want %q", key, got, ok, want)
		}
	}
	if _, ok := logfmtValue(line, "smtp"); ok {
		t.Error("found a missing key")
	}
	ready := `time=x level=INFO msg="mtakitd ready" smtp=127.0.0.1:41234 data="/tmp/a b"`
	if got, _ := logfmtValue(ready, "smtp"); got != "127.0.0.1:41234" {
		t.Errorf("smtp = %q", got)
	}
	if got, _ := logfmtValue(ready, "data"); got != "/tmp/a b" {
		t.Errorf("data = %q", got)
	}
}

func TestSMTPSinkCount(t *testing.T) {
	if n, err := smtpSinkCount("sess=86 quit=86 mesg=2000\r"); err != nil || n != 2000 {
		t.Errorf("got %d, %v", n, err)
	}
	if _, err := smtpSinkCount("sess=1 quit=1"); err == nil {
		t.Error("want an error without mesg=")
	}
}

func TestStatusField(t *testing.T) {
	status := []byte("Name:\tmtakitd\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\nRssAnon:\t   40000 kB\n")
	for field, want := range map[string]int64{"VmHWM": 123456, "VmRSS": 65432, "RssAnon": 40000} {
		if got, err := statusField(status, field); err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", field, got, err, want)
		}
	}
	if _, err := statusField(status, "VmSwap"); err == nil {
		t.Error("want an error for a missing field")
	}
}

func TestMakeMessage(t *testing.T) {
	hdr := len(makeMessage("r1", 42, 0))
	for _, size := range []int{hdr + 2, hdr + 3, hdr + 77, hdr + 78, hdr + 79, hdr + 80, 1024, 2048, 10 << 10, 100 << 10} {
		m := makeMessage("r1", 42, size)
		if len(m) != size {
			t.Errorf("size %d: got %d bytes", size, len(m))
		}
		msg, err := mail.ReadMessage(bytes.NewReader(m))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got := msg.Header.Get("Message-Id"); got != "<42.r1@mtabench.example>" {
			t.Errorf("Message-ID = %q", got)
		}
		for i, line := range bytes.Split(m, []byte("\r\n")) {
			if len(line) > 78 || bytes.ContainsAny(line, "\r\n") {
				t.Errorf("size %d: line %d is %q", size, i, line)
			}
		}
	}
	if bytes.Equal(makeMessage("r", 1, 4096), makeMessage("r", 2, 4096)) {
		t.Error("messages are not unique")
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-mode", "compare,queue", "-size", "10k", "-target", "mtakit", "-postfix-param", "in_flow_delay=0s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.modes["compare"] || !o.modes["queue"] || o.modes["sweep"] || o.size != 10240 || len(o.targets) != 1 || o.pfParams[0] != "in_flow_delay=0s" {
		t.Errorf("parsed %+v", o)
	}
	o, err = parseFlags([]string{"-mode", "all"}, io.Discard)
	if err != nil || len(o.modes) != 6 || len(o.targets) != 2 || o.rcpts != 1 || o.halfN != o.n {
		t.Errorf("-mode all: %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"-mode", "single,half", "-rcpts", "10", "-mtakitd-args", " -batch-handling  by-domain ", "-half-n", "300"}, io.Discard)
	if err != nil || !o.modes["single"] || !o.modes["half"] || o.rcpts != 10 || o.halfN != 300 ||
		len(o.mtaArgs) != 2 || o.mtaArgs[0] != "-batch-handling" || o.mtaArgs[1] != "by-domain" {
		t.Errorf("parsed %+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{"-mode", "fast"}, {"-target", "exim"}, {"-size", "0"}, {"-n", "0"}, {"-sweep-conns", "1,x"},
		{"-postfix-param", "novalue"}, {"extra"}, {"-rcpts", "0"}, {"-rate", "-1"}, {"-single-n", "0"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q): want an error", bad)
		}
	}
}

func TestRcptsFor(t *testing.T) {
	one := rcptsFor(7, 1)
	if len(one) != 1 || one[0] != rcptFor(7) {
		t.Errorf("rcptsFor(7, 1) = %q", one)
	}
	seen := map[string]bool{}
	for seq := range 12 {
		rs := rcptsFor(seq, 10)
		if len(rs) != 10 || rs[0] != rcptFor(seq) {
			t.Fatalf("rcptsFor(%d, 10) = %q", seq, rs)
		}
		for _, r := range rs {
			if seen[r] {
				t.Fatalf("recipient %s repeated", r)
			}
			seen[r] = true
		}
	}
}

// smtp-sink -v logs of two interleaved sessions: the count is known only
// when no transaction is open, and is then every RCPT seen.
func TestRcptCounter(t *testing.T) {
	log := []struct {
		line string
		n    int
		done bool
	}{
		{"smtp-sink: connect (AF_INET 127.0.0.1)", 0, false},
		{"smtp-sink: EHLO mta", 0, false},
		{"smtp-sink: MAIL FROM:<a@b>", 0, false},
		{"smtp-sink: RCPT TO:<1@x>", 0, false},
		{"smtp-sink: MAIL FROM:<a@b>", 0, false}, // second session
		{"smtp-sink: RCPT TO:<2@x>", 0, false},
		{"smtp-sink: RCPT TO:<3@x>", 0, false},
		{"smtp-sink: DATA", 0, false},
		{"smtp-sink: .", 0, false}, // first session done, second still open
		{"smtp-sink: DATA", 0, false},
		{"smtp-sink: .", 3, true},
		{"smtp-sink: RSET", 0, false},
		{"smtp-sink: mail FROM:<a@b>", 0, false},
		{"smtp-sink: rcpt TO:<4@x>", 0, false},
		{"smtp-sink: DATA", 0, false},
		{"smtp-sink: .", 4, true},
		{"smtp-sink: QUIT", 0, false},
		{"smtp-sink: disconnect", 0, false},
		{"RCPT TO:<not-a-log-line@x>", 0, false},
	}
	var c rcptCounter
	for _, l := range log {
		n, done := c.line(l.line)
		if n != l.n || done != l.done {
			t.Errorf("after %q: %d, %v; want %d, %v", l.line, n, done, l.n, l.done)
		}
	}
	if c.dots != 3 || c.rcpts != 4 {
		t.Errorf("dots %d rcpts %d", c.dots, c.rcpts)
	}
}
