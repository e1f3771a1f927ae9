package egress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// TLSA is one DANE TLSA record (RFC 6698).
type TLSA struct {
	// Usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE. SMTP uses only
	// 2 and 3 (RFC 7672 section 3.1).
	Usage uint8
	// Selector: 0 the full certificate, 1 its SubjectPublicKeyInfo.
	Selector uint8
	// MatchingType: 0 exact, 1 SHA-256, 2 SHA-512.
	MatchingType uint8
	// Data is the certificate association data.
	Data []byte
}

// usable reports whether SMTP DANE can use the record (RFC 7672 section
// 3.1 and KumoMTA's tlsa_is_usable).
func (r TLSA) usable() bool {
	return (r.Usage == 2 || r.Usage == 3) && r.Selector <= 1 && r.MatchingType <= 2
}

// matches reports whether cert matches the record's selector and
// matching type.
func (r TLSA) matches(cert *x509.Certificate) bool {
	data := cert.Raw
	if r.Selector == 1 {
		data = cert.RawSubjectPublicKeyInfo
	}
	switch r.MatchingType {
	case 0:
		return bytes.Equal(data, r.Data)
	case 1:
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], r.Data)
	case 2:
		sum := sha512.Sum512(data)
		return bytes.Equal(sum[:], r.Data)
	}
	return false
}

// TLSAResult is the outcome of a TLSA lookup.
type TLSAResult struct {
	// Records are the TLSA records found (usable or not).
	Records []TLSA
	// Secure reports that the answer (records, or their absence) was
	// DNSSEC-validated by a trusted resolver.
	Secure bool
}

// TLSAResolver looks up the TLSA records of a mail host's SMTP port
// ("_port._tcp.host"). *Resolver implements it. A name without TLSA
// records gives an empty result and no error; an error means the answer
// could not be had (SERVFAIL, which a validating resolver also gives for
// bogus data, or a timeout).
type TLSAResolver interface {
	LookupTLSA(ctx context.Context, host string, port int) (TLSAResult, error)
}

// LookupTLSA looks up _port._tcp.host TLSA.
func (r *Resolver) LookupTLSA(ctx context.Context, host string, port int) (TLSAResult, error) {
	name, err := fqdn("_" + strconv.Itoa(port) + "._tcp." + strings.TrimSuffix(host, "."))
	if err != nil {
		return TLSAResult{}, fmt.Errorf("egress: lookup TLSA for %s:%d: %w", host, port, err)
	}
	set, err := r.lookup(ctx, name, dns.TypeTLSA)
	if err != nil {
		return TLSAResult{}, fmt.Errorf("egress: lookup TLSA for %s:%d: %w", host, port, err)
	}
	return TLSAResult{Records: append([]TLSA(nil), set.tlsa...), Secure: set.secure}, nil
}

// DANE outcomes, named as KumoMTA's dane_result_count metric labels them.
const (
	// DANEOK: usable TLSA records; the certificate was checked against
	// them and TLS was required.
	DANEOK = "ok"
	// DANEUnusable: TLSA records exist but none is usable; STARTTLS was
	// required without certificate checks (RFC 7672 section 2.2).
	DANEUnusable = "unusable"
	// DANENotApplicable: the host has no secure TLSA records.
	DANENotApplicable = "not_applicable"
	// DANEInsecureChain: the MX or address records were not
	// DNSSEC-secure, so DANE does not apply.
	DANEInsecureChain = "insecure_chain"
)

// daneState is the DANE outcome for one candidate host.
type daneState struct {
	result string // one of the DANE* labels; "" when DANE is off
	tlsa   []TLSA // usable records (result DANEOK)
}

// daneFor applies enable_dane to one host, as KumoMTA: DANE applies when
// the MX selection (DialOptions.MXSecure) and the host's addresses
// (MXHost.Secure) were DNSSEC-validated; then the secure TLSA records of
// _port._tcp.<host> decide. A TLSA lookup that fails defers the host
// rather than fall back to weaker TLS (downgrade resistance).
func (d *dialer) daneFor(ctx context.Context, host string, secure bool) (daneState, error) {
	if !d.opts.Config.EnableDANE || d.opts.DANE == nil {
		return daneState{}, nil
	}
	if !d.opts.MXSecure || !secure {
		return daneState{result: DANEInsecureChain}, nil
	}
	res, err := d.opts.DANE.LookupTLSA(ctx, host, d.port)
	if err != nil {
		return daneState{}, fmt.Errorf("DANE TLSA lookup for %s could not be securely resolved: %w", host, err)
	}
	if !res.Secure || len(res.Records) == 0 {
		return daneState{result: DANENotApplicable}, nil
	}
	var usable []TLSA
	for _, r := range res.Records {
		if r.usable() {
			usable = append(usable, r)
		}
	}
	if len(usable) == 0 {
		return daneState{result: DANEUnusable}, nil
	}
	return daneState{result: DANEOK, tlsa: usable}, nil
}

// errDANEMismatch is the handshake failure of a certificate that matches
// no TLSA record.
var errDANEMismatch = errors.New("DANE: no TLSA record matches the peer certificate")

// verifyDANE checks the peer's chain against usable TLSA records (RFC 7672
// section 3.1): a DANE-EE(3) record must match the leaf certificate, with
// no name or validity checks; a DANE-TA(2) record must match a
// certificate of the chain the peer sent, which then anchors a normal
// chain verification of the leaf for host (validity dates included).
func verifyDANE(records []TLSA, host string, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("DANE: the peer sent no certificate")
	}
	var taErr error
	for _, r := range records {
		switch r.Usage {
		case 3:
			if r.matches(certs[0]) {
				return nil
			}
		case 2:
			for i, c := range certs[1:] {
				if !r.matches(c) {
					continue
				}
				roots := x509.NewCertPool()
				roots.AddCert(c)
				inter := x509.NewCertPool()
				for _, ic := range certs[1 : i+1] {
					inter.AddCert(ic)
				}
				_, err := certs[0].Verify(x509.VerifyOptions{
					DNSName: strings.TrimSuffix(host, "."), Roots: roots, Intermediates: inter,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
				})
				if err == nil {
					return nil
				}
				taErr = err
			}
		}
	}
	if taErr != nil {
		return fmt.Errorf("%w (DANE-TA chain: %v)", errDANEMismatch, taErr)
	}
	return errDANEMismatch
}

// daneVerifier returns a VerifyConnection callback enforcing verifyDANE.
func daneVerifier(records []TLSA, host string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		return verifyDANE(records, host, cs.PeerCertificates)
	}
}
