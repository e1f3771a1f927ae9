package egress_test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/shaping"
)

// caSink starts a sink whose STARTTLS certificate for mx.example.test is
// issued by ca; extra adjusts the server TLS configuration.
func caSink(t *testing.T, ca *testCA, extra func(*tls.Config)) *smtpsink.Sink {
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.issue(false, "mx.example.test")}}
	if extra != nil {
		extra(cfg)
	}
	return startSink(t, smtpsink.Options{TLSConfig: cfg, Store: true})
}

func hostOptions(t *testing.T, s *smtpsink.Sink, host string) egress.DialOptions {
	opts := sinkOptions(t, s)
	opts.Hosts[0].Name = host
	return opts
}

func deliverOne(t *testing.T, opts egress.DialOptions) (*egress.Conn, egress.Response) {
	t.Helper()
	c := dial(t, opts)
	res := send(t, c, egress.Envelope{Sender: "s@example.com", Recipients: []string{"a@example.com"}, Data: message("m")})
	return c, res.Recipients[0]
}

func wantDialFailure(t *testing.T, opts egress.DialOptions, want string) egress.Response {
	t.Helper()
	resp, _ := dialErr(t, opts)
	if resp.Code != 400 || !resp.Transient() || !strings.Contains(resp.Text, want) {
		t.Errorf("response %q, want a transient failure mentioning %q", resp, want)
	}
	return resp
}

// TestTLSModesWithCA covers each enable_tls mode against a certificate
// from a test CA: verification uses the CA and the MX host name.
func TestTLSModesWithCA(t *testing.T) {
	ca := newTestCA(t)
	sink := caSink(t, ca, nil)
	cases := []struct {
		name     string
		mode     shaping.TLSMode
		host     string
		trust    bool
		verified bool
		wantFail string
	}{
		{name: "required trusted", mode: shaping.Required, host: "mx.example.test", trust: true, verified: true},
		{name: "opportunistic trusted", mode: shaping.Opportunistic, host: "mx.example.test", trust: true, verified: true},
		{name: "required wrong name", mode: shaping.Required, host: "other.example.test", trust: true,
			wantFail: "certificate is valid for mx.example.test, not other.example.test"},
		{name: "opportunistic wrong name never falls back", mode: shaping.Opportunistic, host: "other.example.test", trust: true,
			wantFail: "TLS handshake with other.example.test/127.0.0.1:"},
		{name: "required unknown CA", mode: shaping.Required, host: "mx.example.test",
			wantFail: "certificate signed by unknown authority"},
		{name: "required insecure unknown CA", mode: shaping.RequiredInsecure, host: "other.example.test"},
		{name: "opportunistic insecure unknown CA", mode: shaping.OpportunisticInsecure, host: "other.example.test"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := hostOptions(t, sink, tc.host)
			opts.Config.EnableTLS = tc.mode
			if tc.trust {
				opts.TLSConfig = &tls.Config{RootCAs: ca.Pool}
			}
			if tc.wantFail != "" {
				wantDialFailure(t, opts, tc.wantFail)
				return
			}
			c, r := deliverOne(t, opts)
			wantCode(t, "delivery", r, 250, "2.0.0")
			ti := c.Info().TLS
			if ti == nil || ti.Verified != tc.verified || !slices.Contains(ti.PeerSubjectName, "CN=mx.example.test") {
				t.Errorf("TLS info %+v", ti)
			}
		})
	}
}

func TestReconnectInClearAfterFailedHandshake(t *testing.T) {
	for _, mode := range []shaping.TLSMode{shaping.Opportunistic, shaping.OpportunisticInsecure} {
		for _, reconnect := range []bool{false, true} {
			sink := startSink(t, smtpsink.Options{TLS: true, Store: true})
			sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage})
			opts := sinkOptions(t, sink)
			opts.TLSConfig = &tls.Config{RootCAs: sink.RootCAs()}
			opts.Config.EnableTLS = mode
			opts.Config.OpportunisticTLSReconnectOnFailedHandshake = reconnect
			if !reconnect {
				wantDialFailure(t, opts, "localhost/127.0.0.1:")
				continue
			}
			c, r := deliverOne(t, opts)
			wantCode(t, string(mode)+" delivery", r, 250, "2.0.0")
			if c.Info().TLS != nil || sink.Messages()[0].TLS {
				t.Errorf("%s: delivered over TLS, want clear text after the failed handshake", mode)
			}
		}
	}
	// Required never reconnects in clear text.
	sink := startSink(t, smtpsink.Options{TLS: true})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage})
	opts := sinkOptions(t, sink)
	opts.TLSConfig = &tls.Config{RootCAs: sink.RootCAs()}
	opts.Config.EnableTLS = shaping.Required
	opts.Config.OpportunisticTLSReconnectOnFailedHandshake = true
	resp := wantDialFailure(t, opts, "TLS handshake with localhost/127.0.0.1:")
	if strings.Contains(resp.Text, "re-connect in the clear") {
		t.Errorf("Required reconnected in clear text: %q", resp)
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	sink := caSink(t, ca, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = ca.Pool
	})
	certPEM, keyPEM := pemPair(t, ca.issue(true, "client.example.test"))
	both := append(append([]byte{}, certPEM...), keyPEM...)
	cases := []struct {
		name      string
		cert, key *shaping.KeySource
		wantFail  string
	}{
		{name: "files", cert: &shaping.KeySource{File: writeFile(t, "c.pem", certPEM)},
			key: &shaping.KeySource{File: writeFile(t, "k.pem", keyPEM)}},
		{name: "key_data, key in the certificate's PEM", cert: &shaping.KeySource{KeyData: string(both), HasData: true}},
		{name: "no client certificate", wantFail: "certificate"},
		{name: "missing file", cert: &shaping.KeySource{File: filepath.Join(t.TempDir(), "absent.pem")},
			wantFail: "invalid egress configuration: tls_certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := hostOptions(t, sink, "mx.example.test")
			opts.Config.EnableTLS = shaping.Required
			opts.TLSConfig = &tls.Config{RootCAs: ca.Pool}
			opts.Config.TLSCertificate, opts.Config.TLSPrivateKey = tc.cert, tc.key
			if tc.wantFail != "" {
				resp, _ := dialErr(t, opts)
				if !strings.Contains(resp.Text, tc.wantFail) {
					t.Errorf("response %q, want it to mention %q", resp, tc.wantFail)
				}
				return
			}
			_, r := deliverOne(t, opts)
			wantCode(t, "delivery", r, 250, "2.0.0")
		})
	}
}

func TestCipherListAndVersionFloor(t *testing.T) {
	ca := newTestCA(t)
	sink := caSink(t, ca, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 })
	base := func() egress.DialOptions {
		opts := hostOptions(t, sink, "mx.example.test")
		opts.Config.EnableTLS = shaping.Required
		opts.TLSConfig = &tls.Config{RootCAs: ca.Pool}
		return opts
	}
	for _, tc := range []struct {
		list, rustls string
		want         string
	}{
		{list: "ECDHE-ECDSA-AES256-GCM-SHA384:!RC4", want: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
		{list: "ECDHE-ECDSA-CHACHA20-POLY1305", want: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
		{rustls: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", want: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
	} {
		opts := base()
		opts.Config.OpenSSLCipherList = tc.list
		if tc.rustls != "" {
			opts.Config.RustlsCipherSuites = []string{"TLS13_AES_128_GCM_SHA256", tc.rustls}
		}
		c, r := deliverOne(t, opts)
		wantCode(t, "delivery", r, 250, "2.0.0")
		if ti := c.Info().TLS; ti == nil || ti.Cipher != tc.want || ti.Version != "TLSv1_2" {
			t.Errorf("%s%s: TLS %+v, want %s", tc.list, tc.rustls, ti, tc.want)
		}
	}
	opts := base()
	opts.Config.OpenSSLOptions = "NO_TLSV1|NO_TLSV1_1|NO_TLSV1_2"
	wantDialFailure(t, opts, "protocol version")

	opts = base()
	opts.Config.OpenSSLCipherList = "HIGH:!aNULL"
	resp, _ := dialErr(t, opts)
	if !strings.Contains(resp.Text, `invalid egress configuration: openssl_cipher_list: "HIGH"`) {
		t.Errorf("got %q", resp)
	}
}

// startTLS upgrades the scripted peer's connection after it said 220.
func (p *peer) startTLS(cfg *tls.Config) error {
	tc := tls.Server(p.conn, cfg)
	_ = tc.SetDeadline(time.Now().Add(clientTimeout))
	if err := tc.Handshake(); err != nil {
		return err
	}
	_ = tc.SetDeadline(time.Time{})
	p.conn, p.r = tc, bufio.NewReader(tc)
	return nil
}

// authServer scripts a host that offers STARTTLS (when cert is set) and
// AUTH with mechs, and reports the credentials it received on got.
func authServer(t *testing.T, cert *tls.Certificate, mechs string, reply string, got chan<- string) egress.DialOptions {
	return scripted(t, func(p *peer) error {
		ehlo := []string{"250-script.test", "250 AUTH " + mechs}
		if cert != nil {
			ehlo = []string{"250-script.test", "250-STARTTLS", "250 AUTH " + mechs}
		}
		if err := p.steps(append([]string{"220 ready", ">EHLO"}, ehlo...)...); err != nil {
			return err
		}
		l, err := p.line()
		if errors.Is(err, io.EOF) {
			return nil // the client gave up without authenticating
		}
		if err != nil {
			return err
		}
		if l == "STARTTLS" {
			if err := p.say("220 go ahead"); err != nil {
				return err
			}
			if err := p.startTLS(&tls.Config{Certificates: []tls.Certificate{*cert}}); err != nil {
				return err
			}
			if err := p.steps(">EHLO", "250-script.test", "250 AUTH "+mechs); err != nil {
				return err
			}
			if l, err = p.line(); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
		}
		var creds string
		switch {
		case strings.HasPrefix(l, "AUTH PLAIN "):
			b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "AUTH PLAIN "))
			if err != nil {
				return err
			}
			creds = "PLAIN " + strings.ReplaceAll(string(b), "\x00", "|")
		case l == "AUTH LOGIN":
			var parts []string
			for _, prompt := range []string{"334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"} {
				if err := p.say(prompt); err != nil {
					return err
				}
				a, err := p.line()
				if err != nil {
					return err
				}
				b, err := base64.StdEncoding.DecodeString(a)
				if err != nil {
					return err
				}
				parts = append(parts, string(b))
			}
			creds = "LOGIN " + strings.Join(parts, "|")
		default:
			got <- "no auth: " + l
			return nil
		}
		if _, ok := p.conn.(*tls.Conn); ok {
			creds = "TLS " + creds
		}
		got <- creds
		if err := p.say(reply); err != nil {
			return err
		}
		if !strings.HasPrefix(reply, "235") {
			return nil
		}
		return p.steps(">QUIT", "221 bye")
	})
}

// TestSMTPAuth: credentials reach the host only over TLS with a verified
// certificate unless the allow_* options say otherwise, and never before
// STARTTLS (the host marks credentials that arrived inside TLS "TLS ").
func TestSMTPAuth(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issue(false, "script.test")
	password := &shaping.KeySource{KeyData: "tiger", HasData: true}
	cases := []struct {
		name       string
		tls        bool
		mode       shaping.TLSMode
		trust      bool
		mechs      string
		reply      string
		allowClear bool
		allowInsec bool
		pw         *shaping.KeySource
		wantCreds  string // "" = the host must see no AUTH at all
		wantFail   string
		wantMech   string
	}{
		{name: "plain over verified TLS", tls: true, trust: true, mechs: "PLAIN LOGIN", reply: "235 2.7.0 ok",
			pw: password, wantCreds: "TLS PLAIN |daniel|tiger", wantMech: "PLAIN"},
		{name: "login only", tls: true, trust: true, mechs: "LOGIN", reply: "235 2.7.0 ok",
			pw: password, wantCreds: "TLS LOGIN daniel|tiger", wantMech: "LOGIN"},
		{name: "password from a file", tls: true, trust: true, mechs: "PLAIN", reply: "235 2.7.0 ok",
			pw: &shaping.KeySource{File: writeFile(t, "pw", []byte("from-file"))}, wantCreds: "TLS PLAIN |daniel|from-file", wantMech: "PLAIN"},
		{name: "refused", tls: true, trust: true, mechs: "PLAIN", reply: "535 5.7.8 bad credentials", pw: password,
			wantCreds: "TLS PLAIN |daniel|tiger",
			wantFail:  "authenticating as daniel via SMTP AUTH PLAIN to script.test/127.0.0.1:"},
		{name: "no STARTTLS: never sent in clear", mechs: "PLAIN", pw: password,
			wantFail: "TLS is not enabled and AUTH PLAIN is required. Skipping (script.test/127.0.0.1:"},
		{name: "no STARTTLS but allowed in clear", mechs: "PLAIN", reply: "235 ok", allowClear: true, pw: password,
			wantCreds: "PLAIN |daniel|tiger", wantMech: "PLAIN"},
		{name: "unverified certificate", tls: true, mode: shaping.OpportunisticInsecure, mechs: "PLAIN", pw: password,
			wantFail: "TLS peer certificate was not validated and AUTH PLAIN requires a valid certificate"},
		{name: "unverified certificate allowed", tls: true, mode: shaping.RequiredInsecure, mechs: "PLAIN", reply: "235 ok",
			allowInsec: true, pw: password, wantCreds: "TLS PLAIN |daniel|tiger", wantMech: "PLAIN"},
		{name: "vault password unsupported", tls: true, trust: true, mechs: "PLAIN",
			pw:       &shaping.KeySource{VaultMount: "secret", VaultPath: "smtp"},
			wantFail: "fetching smtp_auth_plain_password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			var c *tls.Certificate
			if tc.tls {
				c = &cert
			}
			opts := authServer(t, c, tc.mechs, tc.reply, got)
			opts.Config.EnableTLS = tc.mode
			opts.Config.SMTPAuthPlainUsername = "daniel"
			opts.Config.SMTPAuthPlainPassword = tc.pw
			opts.Config.AllowSMTPAuthPlainWithoutTLS = tc.allowClear
			opts.Config.AllowSMTPAuthPlainWithoutValidCertificate = tc.allowInsec
			if tc.trust {
				opts.TLSConfig = &tls.Config{RootCAs: ca.Pool}
			}
			if tc.wantFail != "" {
				resp := wantDialFailure(t, opts, tc.wantFail)
				if strings.Contains(resp.Text, "tiger") || strings.Contains(resp.Text, base64.StdEncoding.EncodeToString([]byte("\x00daniel\x00tiger"))) {
					t.Errorf("the failure text reveals the password: %q", resp)
				}
			} else {
				conn := dial(t, opts)
				if m := conn.Info().AuthMechanism; m != tc.wantMech {
					t.Errorf("AuthMechanism %q, want %q", m, tc.wantMech)
				}
				if err := conn.Close(); err != nil && !errors.Is(err, io.EOF) {
					t.Errorf("Close: %v", err)
				}
			}
			select {
			case creds := <-got:
				if creds != tc.wantCreds {
					t.Errorf("host saw %q, want %q", creds, tc.wantCreds)
				}
			default:
				if tc.wantCreds != "" {
					t.Errorf("host saw no AUTH, want %q", tc.wantCreds)
				}
			}
		})
	}
}

// TestSMTPAuthSink authenticates to a sink that requires AUTH.
func TestSMTPAuthSink(t *testing.T) {
	ca := newTestCA(t)
	sink := startSink(t, smtpsink.Options{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.issue(false, "mx.example.test")}},
		Store:     true,
		Auth: func(user, pass string) error {
			if user != "daniel" || pass != "tiger" {
				return errors.New("bad credentials")
			}
			return nil
		},
	})
	opts := hostOptions(t, sink, "mx.example.test")
	opts.Config.EnableTLS = shaping.Required
	opts.TLSConfig = &tls.Config{RootCAs: ca.Pool}

	// Without credentials the sink refuses the transaction.
	c, r := deliverOne(t, opts)
	wantCode(t, "without AUTH", r, 530, "5.7.0")
	_ = c.Close()

	opts.Config.SMTPAuthPlainUsername = "daniel"
	opts.Config.SMTPAuthPlainPassword = &shaping.KeySource{KeyData: "lion", HasData: true}
	wantDialFailure(t, opts, "authenticating as daniel via SMTP AUTH PLAIN to mx.example.test/127.0.0.1:")

	opts.Config.SMTPAuthPlainPassword = &shaping.KeySource{KeyData: "tiger", HasData: true}
	_, r = deliverOne(t, opts)
	wantCode(t, "with AUTH", r, 250, "2.0.0")
	if msgs := sink.Messages(); len(msgs) != 1 || msgs[0].AuthUser != "daniel" || !msgs[0].TLS {
		t.Errorf("sink messages %+v", msgs)
	}
}

func TestRememberBrokenTLS(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	broken := egress.NewBrokenTLS(func() time.Time { return now })
	sink := startSink(t, smtpsink.Options{TLS: true, Store: true})
	sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage})
	opts := sinkOptions(t, sink)
	opts.TLSConfig = &tls.Config{RootCAs: sink.RootCAs()}
	opts.Config.RememberBrokenTLS = time.Hour
	opts.BrokenTLS = broken
	opts.Site = "site.test"

	wantDialFailure(t, opts, "TLS handshake with localhost/127.0.0.1:")
	if !broken.Broken("site.test") || broken.Broken("other.test") {
		t.Fatal("failed handshake not remembered for the site")
	}
	// Opportunistic now skips STARTTLS; Required still insists.
	c, r := deliverOne(t, opts)
	wantCode(t, "delivery", r, 250, "2.0.0")
	if c.Info().TLS != nil {
		t.Error("used TLS on a site remembered as broken")
	}
	required := opts
	required.Config.EnableTLS = shaping.Required
	wantDialFailure(t, required, "TLS handshake with localhost/127.0.0.1:")

	now = now.Add(time.Hour)
	if broken.Broken("site.test") {
		t.Error("still remembered after remember_broken_tls")
	}
}
