package egress

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mtakit/mtakit/shaping"
)

// authenticate runs SMTP AUTH with the path's smtp_auth_plain_username and
// password, after the TLS checks KumoMTA makes: no credentials over clear
// text unless allow_smtp_auth_plain_without_tls, none over TLS with an
// unverified certificate unless
// allow_smtp_auth_plain_without_valid_certificate.
//
// The mechanism is PLAIN with an initial response (RFC 4616), as KumoMTA
// sends; when the host advertises AUTH with LOGIN but not PLAIN, LOGIN is
// used instead.
func (c *Conn) authenticate(cfg *shaping.PathConfig, label string) error {
	user := cfg.SMTPAuthPlainUsername
	if c.info.TLS == nil {
		if !cfg.AllowSMTPAuthPlainWithoutTLS {
			return fmt.Errorf("TLS is not enabled and AUTH PLAIN is required. Skipping (%s)", label)
		}
	} else if !c.info.TLS.Verified && !cfg.AllowSMTPAuthPlainWithoutValidCertificate {
		return fmt.Errorf("TLS peer certificate was not validated and AUTH PLAIN requires a valid certificate. Skipping (%s)", label)
	}
	var password string
	if cfg.SMTPAuthPlainPassword != nil {
		b, err := cfg.SMTPAuthPlainPassword.Get()
		if err != nil {
			return fmt.Errorf("fetching smtp_auth_plain_password: %w", err)
		}
		if !utf8.Valid(b) {
			return errors.New("smtp_auth_plain_password is not UTF8")
		}
		password = string(b)
	}
	mech := "PLAIN"
	if mechs, ok := c.ext["AUTH"]; ok {
		list := strings.Fields(strings.ToUpper(mechs))
		if !slices.Contains(list, "PLAIN") && slices.Contains(list, "LOGIN") {
			mech = "LOGIN"
		}
	}
	var err error
	if mech == "PLAIN" {
		err = c.authPlain(user, password)
	} else {
		err = c.authLogin(user, password)
	}
	if err != nil {
		return fmt.Errorf("authenticating as %s via SMTP AUTH %s to %s: %w", user, mech, label, err)
	}
	c.info.AuthMechanism = mech
	return nil
}

func (c *Conn) authPlain(user, password string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	resp, err := c.roundTripSecret("AUTH PLAIN "+ir, "AUTH PLAIN")
	if err != nil {
		return err
	}
	if resp.Code != 235 {
		return &rejectedError{resp}
	}
	return nil
}

// authLogin is the LOGIN mechanism (draft-murchison-sasl-login): the
// user name and the password, each in answer to a 334 challenge.
func (c *Conn) authLogin(user, password string) error {
	resp, err := c.roundTrip("AUTH LOGIN", c.tmo.auth)
	if err != nil {
		return err
	}
	for _, secret := range []string{user, password} {
		if resp.Code != 334 {
			return &rejectedError{resp}
		}
		resp, err = c.roundTripSecret(base64.StdEncoding.EncodeToString([]byte(secret)), "AUTH LOGIN response")
		if err != nil {
			return err
		}
	}
	if resp.Code != 235 {
		return &rejectedError{resp}
	}
	return nil
}

// roundTripSecret is roundTrip for a line that carries a credential: the
// line is not kept in the response or in errors, shown is used instead.
func (c *Conn) roundTripSecret(line, shown string) (Response, error) {
	_ = c.nc.SetWriteDeadline(time.Now().Add(min(c.tmo.auth, maxWriteTimeout)))
	c.bw.WriteString(line)
	c.bw.WriteString("\r\n")
	if err := c.bw.Flush(); err != nil {
		return Response{}, &ioError{write: true, cmd: shown, timeout: min(c.tmo.auth, maxWriteTimeout), err: err}
	}
	return c.readResponse(shown, c.tmo.auth)
}
