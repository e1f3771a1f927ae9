package shaping_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/shaping"
)

// TestSecurityKeys: the transport security keys of make_egress_path load
// into typed fields.
func TestSecurityKeys(t *testing.T) {
	opts, _ := testOptions(t)
	s := mustLoad(t, opts, file("sec.toml", `
["default"]
enable_mta_sts = false
enable_dane = true
opportunistic_tls_reconnect_on_failed_handshake = true
smtp_auth_plain_username = "daniel"
smtp_auth_plain_password = {key_data = "tiger"}
allow_smtp_auth_plain_without_tls = true
allow_smtp_auth_plain_without_valid_certificate = true
tls_certificate = "/etc/mtakit/client.pem"
tls_private_key = {vault_mount = "secret", vault_path = "tls/key"}
openssl_cipher_list = "ECDHE-RSA-AES128-GCM-SHA256"
openssl_options = "NO_TLSV1|NO_TLSV1_1"
rustls_cipher_suites = ["TLS13_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
tls_prefer_openssl = true
`))
	c := pathConfig(t, s, "s", "site", "example.org")
	if c.EnableMTASTS || !c.EnableDANE || !c.OpportunisticTLSReconnectOnFailedHandshake ||
		c.SMTPAuthPlainUsername != "daniel" || !c.AllowSMTPAuthPlainWithoutTLS || !c.AllowSMTPAuthPlainWithoutValidCertificate ||
		c.OpenSSLCipherList != "ECDHE-RSA-AES128-GCM-SHA256" || c.OpenSSLOptions != "NO_TLSV1|NO_TLSV1_1" ||
		strings.Join(c.RustlsCipherSuites, ",") != "TLS13_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" {
		t.Errorf("%+v", c)
	}
	if pw, err := c.SMTPAuthPlainPassword.Get(); err != nil || string(pw) != "tiger" {
		t.Errorf("password %q, %v", pw, err)
	}
	if c.TLSCertificate.File != "/etc/mtakit/client.pem" || c.TLSPrivateKey.VaultPath != "tls/key" {
		t.Errorf("key sources %v %v", c.TLSCertificate, c.TLSPrivateKey)
	}
	if _, ok := c.Other["tls_prefer_openssl"]; !ok || c.Other["enable_dane"] != nil {
		t.Errorf("Other = %v", c.Other)
	}
	if d := shaping.Default(); !d.EnableMTASTS || d.EnableDANE {
		t.Errorf("defaults: enable_mta_sts %v enable_dane %v, want true false", d.EnableMTASTS, d.EnableDANE)
	}
}

func TestKeySource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("from file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ks       *shaping.KeySource
		want     string
		wantErr  error
		wantText string
	}{
		{ks: &shaping.KeySource{File: path}, want: "from file", wantText: path},
		{ks: &shaping.KeySource{KeyData: "", HasData: true}, want: "", wantText: "{key_data=<redacted>}"},
		{ks: &shaping.KeySource{VaultMount: "m", VaultPath: "p"}, wantErr: shaping.ErrKeySourceUnsupported, wantText: "{vault_mount=m, vault_path=p}"},
		{ks: &shaping.KeySource{EventName: "get_key"}, wantErr: shaping.ErrKeySourceUnsupported, wantText: "{event_name=get_key}"},
		{ks: &shaping.KeySource{File: filepath.Join(t.TempDir(), "absent")}, wantErr: os.ErrNotExist},
	} {
		b, err := tc.ks.Get()
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%v: err %v, want %v", tc.ks, err, tc.wantErr)
			}
		} else if err != nil || string(b) != tc.want {
			t.Errorf("%v: %q, %v", tc.ks, b, err)
		}
		if tc.wantText != "" && tc.ks.String() != tc.wantText {
			t.Errorf("String() = %q, want %q", tc.ks.String(), tc.wantText)
		}
	}
}
