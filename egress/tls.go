package egress

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// startTLS sends STARTTLS and performs the handshake, verifying the
// certificate against host when verify is set, or against the usable TLSA
// records dane when there are any (DANE replaces PKIX verification).
func (c *Conn) startTLS(host string, base *tls.Config, verify bool, dane []TLSA) error {
	resp, err := c.roundTrip("STARTTLS", c.tmo.startTLS)
	if err != nil {
		return err
	}
	if resp.Code != 220 {
		return &rejectedError{resp}
	}
	if c.br.Buffered() > 0 {
		// Data pipelined after the 220 would be taken as coming from
		// inside the TLS session (CVE-2011-0411-style injection).
		return errors.New("peer sent data after its STARTTLS reply")
	}
	cfg := base.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = strings.TrimSuffix(host, ".")
	}
	cfg.InsecureSkipVerify = !verify
	if len(dane) > 0 {
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = daneVerifier(dane, cfg.ServerName)
	}
	tc := tls.Client(c.raw, cfg)
	_ = c.raw.SetDeadline(time.Now().Add(c.tmo.startTLS))
	err = tc.Handshake()
	_ = c.raw.SetDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("handshake timed out after %v: %w", c.tmo.startTLS, err)
		}
		return err
	}
	c.nc = tc
	c.br = bufio.NewReaderSize(tc, readBufferSize)
	c.bw.Reset(tc)
	st := tc.ConnectionState()
	c.info.TLS = &TLSInfo{
		Version:  tlsVersionName(st.Version),
		Cipher:   tlsCipherName(st.CipherSuite, st.Version),
		Verified: verify || len(dane) > 0,
		DANE:     len(dane) > 0,
		State:    st,
	}
	if len(st.PeerCertificates) > 0 {
		c.info.TLS.PeerSubjectName = subjectName(st.PeerCertificates[0])
	}
	return nil
}

// tlsVersionName names a version as rustls does (KumoMTA's
// tls_protocol_version).
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1_3"
	case tls.VersionTLS12:
		return "TLSv1_2"
	case tls.VersionTLS11:
		return "TLSv1_1"
	case tls.VersionTLS10:
		return "TLSv1_0"
	}
	return tls.VersionName(v)
}

// tlsCipherName names a suite as rustls does: the IANA name, with TLS 1.3
// suites prefixed "TLS13_" instead of "TLS_".
func tlsCipherName(id, version uint16) string {
	name := tls.CipherSuiteName(id)
	if version == tls.VersionTLS13 && strings.HasPrefix(name, "TLS_") {
		return "TLS13_" + name[len("TLS_"):]
	}
	return name
}

// subjectShortNames maps subject attribute OIDs to OpenSSL short names.
var subjectShortNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "street",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.17":                   "postalCode",
	"2.5.4.42":                   "GN",
	"1.2.840.113549.1.9.1":       "emailAddress",
	"0.9.2342.19200300.100.1.25": "DC",
}

// subjectName lists the certificate's subject entries as "SN=value", in
// certificate order, as KumoMTA's tls_peer_subject_name.
func subjectName(cert *x509.Certificate) []string {
	var out []string
	for _, atv := range cert.Subject.Names {
		s, ok := atv.Value.(string)
		if !ok {
			continue
		}
		name := subjectShortNames[atv.Type.String()]
		if name == "" {
			name = atv.Type.String()
		}
		out = append(out, name+"="+s)
	}
	return out
}
