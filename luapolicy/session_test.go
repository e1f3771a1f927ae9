package luapolicy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
)

// sessionClient says EHLO as helo and, with auth set, upgrades with
// STARTTLS and authenticates with AUTH PLAIN (authz, authc, password).
func sessionClient(t *testing.T, addr, helo string, auth []string) *smtp.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var c *smtp.Client
	if auth == nil {
		c = smtp.NewClient(conn)
	} else {
		// go-smtp's client says EHLO localhost before STARTTLS, then
		// (Hello) helo.
		if c, err = smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello(helo); err != nil {
		t.Fatalf("EHLO %s: %v", helo, err)
	}
	if auth != nil {
		if err := c.Auth(sasl.NewPlainClient(auth[0], auth[1], auth[2])); err != nil {
			t.Fatalf("AUTH %v: %v", auth, err)
		}
	}
	return c
}

// transaction sends one message from sender to rcpt; it returns the
// error of the first command refused.
func transaction(c *smtp.Client, sender, rcpt, subject string) error {
	if err := c.Mail(sender, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		c.Reset()
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nhello\r\n", sender, rcpt, subject)
	return w.Close()
}

// testdata/session/init.lua, a policy written from KumoMTA's event
// documentation, over real SMTP: each session event fires with its
// arguments, kumo.reject answers at its phase, a handler that raises an
// error answers 451 and the server goes on, AUTH PLAIN is checked by the
// policy (only after STARTTLS), conn_meta values reach the message meta,
// and listener_domains.toml's relay_from_authz lets only the authenticated
// client relay.
func TestSessionEventsThroughPolicy(t *testing.T) {
	e := newPolicyEnv(t, "testdata/session")
	p, err := luapolicy.Load(filepath.Join(e.dir, "init.lua"), luapolicy.Options{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for _, w := range p.Warnings() {
		if strings.Contains(w, "does not fire") || strings.Contains(w, "relay_from_authz") {
			t.Errorf("warning: %s", w)
		}
	}
	srv, addrs, err := p.Start(mta.Options{Hostname: "mx.session.test", Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	addr := addrs[0].String()

	// smtp_server_connection_accepted refuses the second listener's
	// connections before the banner.
	tp, err := textproto.Dial("tcp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	code, msg, _ := tp.ReadResponse(0)
	tp.Close()
	if code != 421 || !strings.Contains(msg, "not accepting mail here") {
		t.Errorf("closed listener greeted with %d %q", code, msg)
	}

	// smtp_server_ehlo refuses one name, fails for another, and adds an
	// extension otherwise.
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("bad.actor"); smtpCode(err) != 550 {
		t.Errorf("EHLO bad.actor: %v, want 550", err)
	}
	c.Close()
	c, _ = smtp.Dial(addr)
	if err := c.Hello("broken.test"); smtpCode(err) != 451 {
		t.Errorf("EHLO with a failing handler: %v, want 451", err)
	}
	c.Close()

	c = sessionClient(t, addr, "client.test", nil)
	if ok, _ := c.Extension("X-SESSION-TEST"); !ok {
		t.Error("smtp_server_ehlo's extension is not advertised")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered before STARTTLS")
	}
	// smtp_server_mail_from and smtp_server_mail_rcpt_to.
	if err := transaction(c, "x@spammer.test", "a@dest.test", "spam"); smtpCode(err) != 550 || !strings.Contains(err.Error(), "spammer.test is not accepted") {
		t.Errorf("MAIL FROM spammer.test: %v", err)
	}
	if err := transaction(c, "crash@example.com", "a@dest.test", "crash"); smtpCode(err) != 451 {
		t.Errorf("MAIL FROM with a failing handler: %v, want 451", err)
	}
	if err := transaction(c, "sender@example.com", "nobody@dest.test", "nobody"); smtpCode(err) != 550 || !strings.Contains(err.Error(), "no such user") {
		t.Errorf("RCPT TO nobody: %v", err)
	}
	if err := transaction(c, "sender@example.com", "a@dest.test", "anonymous"); err != nil {
		t.Fatalf("plain transaction: %v", err)
	}
	// Not authenticated: corp.test may not relay.
	if err := transaction(c, "app@corp.test", "a@www.dest.test", "denied"); smtpCode(err) != 550 || !strings.Contains(err.Error(), "relaying not permitted") {
		t.Errorf("unauthenticated relay: %v, want 550 relaying not permitted", err)
	}
	c.Quit()

	// smtp_server_auth_plain: a wrong password is refused with 535.
	badConn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := smtp.NewClientStartTLS(badConn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := bad.Extension("AUTH"); !ok {
		t.Error("AUTH not offered after STARTTLS")
	}
	if err := bad.Auth(sasl.NewPlainClient("", "relay", "wrong")); smtpCode(err) != 535 {
		t.Errorf("AUTH with a wrong password: %v, want 535", err)
	}
	bad.Close()

	// Authenticated as relay: relay_from_authz lets corp.test relay.
	c = sessionClient(t, addr, "auth.client.test", []string{"", "relay", "secret"})
	if err := transaction(c, "app@corp.test", "a@www.dest.test", "relayed"); err != nil {
		t.Fatalf("authenticated relay: %v", err)
	}
	// scott authenticates but is not listed.
	c2 := sessionClient(t, addr, "scott.client.test", []string{"", "scott", "tiger"})
	if err := transaction(c2, "app@corp.test", "a@www.dest.test", "scott"); smtpCode(err) != 550 {
		t.Errorf("relay as scott: %v, want 550", err)
	}
	c.Quit()
	c2.Quit()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 2); err != nil {
		t.Fatalf("sink got %d messages: %v", e.sink.Count(), err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	recs, err := logs.ReadDir(e.logDir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]any{}
	for _, r := range recs {
		if r.Type == logs.Reception {
			got[r.Sender] = r.Meta
		}
	}
	anon, relayed := got["sender@example.com"], got["app@corp.test"]
	if anon == nil || anon["x_seen"] != "client.test|anonymous" || anon["x_sender"] != "sender@example.com" ||
		!strings.HasPrefix(fmt.Sprint(anon["x_peer"]), "127.0.0.1:") || anon["authn_id"] != nil {
		t.Errorf("Reception meta of the anonymous message: %v", anon)
	}
	if relayed == nil || relayed["x_seen"] != "auth.client.test|relay" || relayed["authn_id"] != "relay" || relayed["authz_id"] != "relay" {
		t.Errorf("Reception meta of the relayed message: %v", relayed)
	}
}
