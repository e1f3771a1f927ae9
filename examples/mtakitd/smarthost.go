package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/mtakit/mtakit/shaping"
)

// smarthostFlags secure the -smarthost route: credentials for SMTP AUTH,
// the TLS mode, and a CA bundle to verify the smart host with.
type smarthostFlags struct {
	authFile string
	tlsMode  string
	caFile   string
}

func (f *smarthostFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.authFile, "smarthost-auth-file", "",
		"`file` holding \"username:password\" for SMTP AUTH to -smarthost (sent only over verified TLS)")
	fs.StringVar(&f.tlsMode, "smarthost-tls", string(shaping.Opportunistic),
		"enable_tls `mode` for -smarthost: Opportunistic, OpportunisticInsecure, Required, RequiredInsecure or Disabled")
	fs.StringVar(&f.caFile, "smarthost-ca", "", "PEM `file` of CA certificates trusted for -smarthost, in addition to the system's")
}

// check validates the flags once parsed.
func (f *smarthostFlags) check(smarthost string) error {
	switch shaping.TLSMode(f.tlsMode) {
	case shaping.Opportunistic, shaping.OpportunisticInsecure, shaping.Required, shaping.RequiredInsecure, shaping.Disabled:
	default:
		return fmt.Errorf("-smarthost-tls %q: want Opportunistic, OpportunisticInsecure, Required, RequiredInsecure or Disabled", f.tlsMode)
	}
	if smarthost == "" && (f.authFile != "" || f.caFile != "" || f.tlsMode != string(shaping.Opportunistic)) {
		return errors.New("-smarthost-auth-file, -smarthost-tls and -smarthost-ca need -smarthost")
	}
	return nil
}

// apply sets the smart host's path configuration and returns the client
// TLS configuration (nil for the defaults).
func (f *smarthostFlags) apply(pc *shaping.PathConfig) (*tls.Config, error) {
	pc.EnableTLS = shaping.TLSMode(f.tlsMode)
	if f.authFile != "" {
		b, err := os.ReadFile(f.authFile)
		if err != nil {
			return nil, fmt.Errorf("-smarthost-auth-file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		user, pass, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("-smarthost-auth-file %s: want one line \"username:password\"", f.authFile)
		}
		pc.SMTPAuthPlainUsername = user
		pc.SMTPAuthPlainPassword = &shaping.KeySource{KeyData: pass, HasData: true}
	}
	if f.caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.caFile)
	if err != nil {
		return nil, fmt.Errorf("-smarthost-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-smarthost-ca %s: no PEM certificate found", f.caFile)
	}
	return &tls.Config{RootCAs: pool}, nil
}
