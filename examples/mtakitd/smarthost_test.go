package main

import (
	"crypto/tls"
	"errors"
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
	"github.com/mtakit/mtakit/mta/metrics"
)

// TestSmarthostTLS: a smart host with a self-signed certificate takes
// mail with -smarthost-tls RequiredInsecure, or with Required when
// -smarthost-ca names its certificate; -smarthost-auth-file authenticates
// to a smart host that requires AUTH.
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
	authFile := filepath.Join(dir, "auth")
	if err := os.WriteFile(authFile, []byte("daniel:tiger\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkAuth := func(user, pass string) error {
		if user != "daniel" || pass != "tiger" {
			return errors.New("bad credentials")
		}
		return nil
	}
	for _, tc := range []struct {
		name     string
		flags    []string
		auth     bool
		wantUser string
	}{
		{name: "required insecure", flags: []string{"-smarthost-tls", "RequiredInsecure"}},
		{name: "required with CA file", flags: []string{"-smarthost-tls", "Required", "-smarthost-ca", caFile}},
		{name: "AUTH over verified TLS", flags: []string{"-smarthost-ca", caFile, "-smarthost-auth-file", authFile},
			auth: true, wantUser: "daniel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := smtpsink.Options{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Store: true}
			if tc.auth {
				opts.Auth = checkAuth
			}
			sink, err := smtpsink.Start(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			args := append([]string{"-data", t.TempDir(), "-listen", "127.0.0.1:0", "-smarthost", sink.Addr(), "-hostname", "mx.test"}, tc.flags...)
			c, err := parseFlags(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			srv, addr, err := start(c, slog.New(slog.DiscardHandler), metrics.New())
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
			if len(msgs) != 1 || !msgs[0].TLS || msgs[0].AuthUser != tc.wantUser {
				t.Fatalf("sink got %+v, want one message over TLS", msgs)
			}
		})
	}
}
