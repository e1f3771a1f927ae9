package main

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta/metrics"
)

// TestBatchHandlingFlag: with -batch-handling BatchByDomain the recipients
// of one transaction reach the smart host in one transaction per domain;
// by default (BifurcateAlways) in one transaction each.
func TestBatchHandlingFlag(t *testing.T) {
	rcpts := []string{"a@one.example", "b@two.example", "c@one.example", "d@two.example"}
	for _, tc := range []struct {
		flag string
		want [][]string // recipients of each transaction at the sink, sorted
	}{
		{"", [][]string{{"a@one.example"}, {"b@two.example"}, {"c@one.example"}, {"d@two.example"}}},
		{"BatchByDomain", [][]string{{"a@one.example", "c@one.example"}, {"b@two.example", "d@two.example"}}},
	} {
		t.Run("mode="+tc.flag, func(t *testing.T) {
			sink, err := smtpsink.Start(smtpsink.Options{Store: true})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			args := []string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-http", "", "-smarthost", sink.Addr(), "-hostname", "mx.test"}
			if tc.flag != "" {
				args = append(args, "-batch-handling", tc.flag)
			}
			c, err := parseFlags(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			srv, addr, err := start(c, slog.New(slog.DiscardHandler), metrics.New())
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			msg := "From: s@example.com\r\nSubject: batch\r\n\r\nbody\r\n"
			cl, err := smtp.Dial(addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if err := cl.SendMail("s@example.com", rcpts, strings.NewReader(msg)); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for srv.QueuedCount() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			var got [][]string
			for _, m := range sink.Messages() {
				to := slices.Clone(m.To)
				slices.Sort(to)
				got = append(got, to)
				if !strings.HasSuffix(string(m.Data), msg) {
					t.Errorf("content changed:\n%s", m.Data)
				}
			}
			slices.SortFunc(got, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("transactions at the sink %v, want %v", got, tc.want)
			}
		})
	}
}
