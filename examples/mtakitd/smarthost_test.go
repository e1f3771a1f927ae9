package main

import (
	"crypto/tls"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/listener"
)

// TestSmarthostTLS: a smart host with a self-signed certificate takes
// mail with -smarthost-tls RequiredInsecure, or with Required when
// -smarthost-ca names its certificate.
func TestSmarthostTLS(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := listener.SelfSignedPEM("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"required insecure", []string{"-smarthost-tls", "RequiredInsecure"}},
		{"required with CA file", []string{"-smarthost-tls", "Required", "-smarthost-ca", caFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink, err := smtpsink.Start(smtpsink.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Store: true})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			args := append([]string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-smarthost", sink.Addr(), "-hostname", "mx.test"}, tc.flags...)
			c, err := parseFlags(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			srv, addr, err := start(c, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			msg := "From: a@example.com\r\nSubject: smarthost tls\r\n\r\nbody\r\n"
			cl, err := smtp.Dial(addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if err := cl.SendMail("a@example.com", []string{"r@dest.example"}, strings.NewReader(msg)); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for sink.Count() == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			msgs := sink.Messages()
			if len(msgs) != 1 || !msgs[0].TLS {
				t.Fatalf("sink got %+v, want one message over TLS", msgs)
			}
		})
	}
}
