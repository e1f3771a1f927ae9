package listener

import (
	"context"
	"encoding/base64"
	"errors"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

func refuse550(msg string) error {
	return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: msg}
}

// Each hook refuses with its own reply at its own phase, and the session
// goes on where SMTP lets it: a refused EHLO must be repeated, a refused
// MAIL leaves no transaction, a refused RCPT only drops that recipient.
func TestHooksRefuseEachPhase(t *testing.T) {
	h := &memHandler{}
	addr := startTCP(t, Config{Hooks: Hooks{
		EHLO: func(_ context.Context, s *SessionInfo, domain string, ext []string) ([]string, error) {
			if domain == "bad.test" {
				return nil, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "go away"}
			}
			return append(ext, "X-HOOKED"), nil
		},
		MailFrom: func(_ context.Context, s *SessionInfo, sender string) error {
			if strings.HasSuffix(sender, "@spam.test") {
				return refuse550("sender refused")
			}
			return nil
		},
		RcptTo: func(_ context.Context, s *SessionInfo, rcpt string) error {
			if strings.HasPrefix(rcpt, "nobody@") {
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try later"}
			}
			return nil
		},
	}}, h)
	tp, _, _ := dialSMTP(t, addr)
	steps := []struct {
		line string
		code int
	}{
		{"EHLO bad.test", 550},
		{"MAIL FROM:<a@ok.test>", 502}, // the refused EHLO does not count
		{"EHLO good.test", 250},
		{"MAIL FROM:<a@spam.test>", 550},
		{"RCPT TO:<b@x.test>", 502}, // no transaction
		{"MAIL FROM:<a@ok.test>", 250},
		{"RCPT TO:<nobody@x.test>", 450},
		{"RCPT TO:<b@x.test>", 250},
		{"DATA", 354},
		{"Subject: t\r\n\r\nhi\r\n.", 250},
	}
	for _, st := range steps {
		code, msg := cmd(t, tp, st.line)
		if code != st.code {
			t.Fatalf("%q: %d %q, want %d", st.line, code, msg, st.code)
		}
		if st.line == "EHLO good.test" && !strings.Contains(msg, "X-HOOKED") {
			t.Errorf("EHLO extensions not replaced by the hook: %q", msg)
		}
	}
	if len(h.msgs) != 1 || len(h.msgs[0].Recipients) != 1 || h.msgs[0].Recipients[0].Address != "b@x.test" {
		t.Fatalf("stored %+v", h.msgs)
	}
	var codes []int
	for _, r := range h.rejected {
		codes = append(codes, r.code)
	}
	if want := []int{550, 550, 450}; !equalInts(codes, want) {
		t.Errorf("rejections logged %v, want %v", codes, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A Connect refusal replaces the greeting and closes the connection,
// whether transient (421) or permanent (554).
func TestConnectHookRefuses(t *testing.T) {
	for _, code := range []int{421, 554} {
		addr := startTCP(t, Config{Hooks: Hooks{Connect: func(_ context.Context, s *SessionInfo) error {
			if s.Meta(MetaReceivedFrom) == nil || s.PeerAddr.Addr().String() != "127.0.0.1" {
				return errors.New("no peer in the session")
			}
			return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 7, 1}, Message: "not from you"}
		}}}, &memHandler{})
		tp, got, msg := dialSMTP(t, addr)
		if got != code || !strings.Contains(msg, "not from you") {
			t.Fatalf("greeting %d %q, want %d", got, msg, code)
		}
		if _, err := tp.ReadLine(); err == nil {
			t.Errorf("%d: connection still open after the refusal", code)
		}
	}
}

// An error that is not an SMTP reply (a failing policy) answers 451 at
// every phase, and the listener keeps serving.
func TestHookErrorsAreTemporary(t *testing.T) {
	boom := errors.New("policy crashed")
	var fail atomic.Value // the phase that fails
	fail.Store("")
	at := func(phase string) error {
		if fail.Load() == phase {
			return boom
		}
		return nil
	}
	addr := startTCP(t, Config{Hooks: Hooks{
		Connect: func(context.Context, *SessionInfo) error { return at("connect") },
		EHLO: func(_ context.Context, _ *SessionInfo, _ string, ext []string) ([]string, error) {
			return ext, at("ehlo")
		},
		MailFrom: func(context.Context, *SessionInfo, string) error { return at("mail") },
		RcptTo:   func(context.Context, *SessionInfo, string) error { return at("rcpt") },
	}}, &memHandler{})
	for _, phase := range []string{"connect", "ehlo", "mail", "rcpt"} {
		fail.Store(phase)
		tp, code, msg := dialSMTP(t, addr)
		if phase == "connect" {
			if code != 451 {
				t.Errorf("connect: %d %q, want 451", code, msg)
			}
			continue
		}
		var got int
		for _, line := range []string{"EHLO c.test", "MAIL FROM:<a@x.test>", "RCPT TO:<b@x.test>"} {
			got, msg = cmd(t, tp, line)
			if got != 250 {
				break
			}
		}
		if got != 451 || !strings.Contains(msg, "4.3.0") {
			t.Errorf("%s: %d %q, want 451 4.3.0", phase, got, msg)
		}
	}
	fail.Store("")
	tp, code, _ := dialSMTP(t, addr)
	if code != 220 {
		t.Fatalf("greeting after the failures: %d", code)
	}
	if code, _ := cmd(t, tp, "EHLO c.test"); code != 250 {
		t.Fatalf("EHLO after the failures: %d", code)
	}
}

// Values hooks set on the connection meta, with the predefined ones, are
// in every message's Meta, and they live across STARTTLS (go-smtp starts a
// new Session there, KumoMTA keeps its conn_meta).
func TestConnMetaReachesMessages(t *testing.T) {
	h := &memHandler{}
	var n atomic.Int64
	addr := startTCP(t, Config{TLS: tlsConfig(t), Meta: map[string]any{"x_preset": "p"}, Hooks: Hooks{
		Connect: func(_ context.Context, s *SessionInfo) error {
			s.SetMeta("x_conn", n.Add(1))
			return nil
		},
		EHLO: func(_ context.Context, s *SessionInfo, d string, ext []string) ([]string, error) {
			s.SetMeta("x_ehlo", d)
			return ext, nil
		},
	}}, h)
	c, tp := dialTLS(t, addr, true)
	for i := range 2 {
		for _, line := range []string{"MAIL FROM:<a@x.test>", "RCPT TO:<b@x.test>", "DATA"} {
			sendLines(t, c, line)
		}
		expectReply(t, tp, 250)
		expectReply(t, tp, 250)
		expectReply(t, tp, 354)
		sendLines(t, c, "Subject: t\r\n\r\nhi\r\n.")
		expectReply(t, tp, 250)
		_ = i
	}
	if len(h.msgs) != 2 {
		t.Fatalf("%d messages", len(h.msgs))
	}
	for _, m := range h.msgs {
		md := m.Meta
		if md["x_conn"] != int64(1) || md["x_ehlo"] != "c.test" || md["x_preset"] != "p" ||
			md[MetaEHLODomain] != "c.test" || md[MetaReceptionProtocol] != "ESMTP" ||
			md[MetaReceivedFrom] != m.Session.PeerAddr.String() || md[MetaTLSCipher] == nil || md[MetaTLSVersion] == nil {
			t.Errorf("message meta %v", md)
		}
	}
	// Meta is a copy: a later SetMeta does not change stored messages.
	h.msgs[0].Session.SetMeta("x_conn", "changed")
	if h.msgs[1].Meta["x_conn"] != int64(1) {
		t.Error("message meta shares the connection's map")
	}
}

func plainResp(authz, authc, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte(authz + "\x00" + authc + "\x00" + pw))
}

func authPlainHook(calls *atomic.Int64) func(context.Context, *SessionInfo, string, string, string) (bool, error) {
	return func(_ context.Context, s *SessionInfo, authz, authc, pw string) (bool, error) {
		calls.Add(1)
		if pw == "explode" {
			return false, errors.New("password database down")
		}
		return authc == "scott" && pw == "tiger" && (authz == "scott" || authz == "relay-bot"), nil
	}
}

// AUTH PLAIN is offered and accepted only after STARTTLS; bad credentials
// get 535, good ones 235 and the identities in the message meta; a failing
// check gets a transient 454.
func TestAuthPlainOnlyOverTLS(t *testing.T) {
	var calls atomic.Int64
	h := &memHandler{}
	addr := startTCP(t, Config{TLS: tlsConfig(t), Hooks: Hooks{AuthPlain: authPlainHook(&calls)}}, h)

	// In clear text: not offered, refused without asking the hook.
	tp, _, _ := dialSMTP(t, addr)
	if code, msg := cmd(t, tp, "EHLO c.test"); code != 250 || strings.Contains(msg, "AUTH") {
		t.Fatalf("EHLO before STARTTLS: %d %q", code, msg)
	}
	if code, msg := cmd(t, tp, "AUTH PLAIN "+plainResp("", "scott", "tiger")); code == 235 || code/100 != 5 {
		t.Fatalf("AUTH without TLS: %d %q", code, msg)
	}
	if calls.Load() != 0 {
		t.Fatal("hook called for AUTH in clear text")
	}

	c, tp2 := dialTLS(t, addr, true)
	_ = c
	if code, msg := cmd(t, tp2, "EHLO c.test"); code != 250 || !strings.Contains(msg, "AUTH PLAIN") {
		t.Fatalf("EHLO after STARTTLS: %d %q", code, msg)
	}
	for _, tc := range []struct {
		resp string
		code int
	}{
		{plainResp("", "scott", "lion"), 535},
		{plainResp("", "scott", "explode"), 454},
		{plainResp("", "scott", "tiger"), 235},
	} {
		if code, msg := cmd(t, tp2, "AUTH PLAIN "+tc.resp); code != tc.code {
			t.Fatalf("AUTH %q: %d %q, want %d", tc.resp, code, msg, tc.code)
		}
	}
	if code, _ := cmd(t, tp2, "AUTH PLAIN "+plainResp("", "scott", "tiger")); code != 503 {
		t.Errorf("second AUTH: %d, want 503", code)
	}
	for _, line := range []string{"MAIL FROM:<a@x.test>", "RCPT TO:<b@x.test>", "DATA", "Subject: t\r\n\r\nhi\r\n."} {
		want := 250
		if line == "DATA" {
			want = 354
		}
		if code, msg := cmd(t, tp2, line); code != want {
			t.Fatalf("%q: %d %q", line, code, msg)
		}
	}
	if len(h.msgs) != 1 || h.msgs[0].Meta[MetaAuthnID] != "scott" || h.msgs[0].Meta[MetaAuthzID] != "scott" {
		t.Fatalf("messages %+v", h.msgs)
	}
}

// AllowInsecureAuth offers AUTH without TLS.
func TestAllowInsecureAuth(t *testing.T) {
	var calls atomic.Int64
	addr := startTCP(t, Config{AllowInsecureAuth: true, Hooks: Hooks{AuthPlain: authPlainHook(&calls)}}, &memHandler{})
	tp, _, _ := dialSMTP(t, addr)
	if code, msg := cmd(t, tp, "EHLO c.test"); code != 250 || !strings.Contains(msg, "AUTH PLAIN") {
		t.Fatalf("EHLO: %d %q", code, msg)
	}
	if code, msg := cmd(t, tp, "AUTH PLAIN "+plainResp("", "scott", "tiger")); code != 235 {
		t.Fatalf("AUTH: %d %q", code, msg)
	}
}

// relay_from_authz: a sender domain whose RelayFromAuthz names the
// session's authz id may relay anywhere; the same client unauthenticated
// (or authenticated as someone else) gets the relay-denied reply. The
// lookup sees the session in its context.
func TestRelayFromAuthz(t *testing.T) {
	var calls atomic.Int64
	var sawSession atomic.Bool
	domains := DomainLookupFunc(func(ctx context.Context, domain, l string) (*ListenerDomain, error) {
		if ContextSession(ctx) != nil {
			sawSession.Store(true)
		}
		return DomainMap{"corp.test": {RelayFromAuthz: []string{"relay-bot"}}}.LookupListenerDomain(ctx, domain, l)
	})
	cfg := Config{TLS: tlsConfig(t), RelayHosts: []netip.Prefix{}, Domains: domains, Hooks: Hooks{AuthPlain: authPlainHook(&calls)}}
	addr := startTCP(t, cfg, &memHandler{})
	try := func(tp *textproto.Conn) int {
		t.Helper()
		if code, msg := cmd(t, tp, "MAIL FROM:<app@corp.test>"); code != 250 {
			t.Fatalf("MAIL: %d %q", code, msg)
		}
		code, _ := cmd(t, tp, "RCPT TO:<someone@elsewhere.test>")
		cmd(t, tp, "RSET")
		return code
	}
	_, tp := dialTLS(t, addr, true)
	if code := try(tp); code != 550 {
		t.Errorf("unauthenticated: %d, want 550", code)
	}
	if code, _ := cmd(t, tp, "AUTH PLAIN "+plainResp("", "scott", "tiger")); code != 235 {
		t.Fatal("AUTH failed")
	}
	if code := try(tp); code != 550 {
		t.Errorf("authz scott: %d, want 550", code)
	}
	_, tp = dialTLS(t, addr, true)
	if code, _ := cmd(t, tp, "AUTH PLAIN "+plainResp("relay-bot", "scott", "tiger")); code != 235 {
		t.Fatal("AUTH as relay-bot failed")
	}
	if code := try(tp); code != 250 {
		t.Errorf("authz relay-bot: %d, want 250", code)
	}
	if !sawSession.Load() {
		t.Error("the domain lookup did not see the session")
	}
}
