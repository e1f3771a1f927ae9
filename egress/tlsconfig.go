package egress

import (
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

// clientTLSConfig builds the base STARTTLS configuration of a path from
// DialOptions.TLSConfig and the path's tls_certificate, tls_private_key,
// openssl_options, openssl_cipher_list and rustls_cipher_suites.
func clientTLSConfig(base *tls.Config, cfg *shaping.PathConfig) (*tls.Config, error) {
	var out *tls.Config
	if base != nil {
		out = base.Clone()
	} else {
		out = &tls.Config{}
	}
	if cfg.TLSCertificate != nil || cfg.TLSPrivateKey != nil {
		cert, err := clientCertificate(cfg.TLSCertificate, cfg.TLSPrivateKey)
		if err != nil {
			return nil, err
		}
		out.Certificates = []tls.Certificate{cert}
	}
	if cfg.OpenSSLOptions != "" {
		lo, hi, err := versionRange(cfg.OpenSSLOptions)
		if err != nil {
			return nil, err
		}
		out.MinVersion, out.MaxVersion = lo, hi
	}
	switch {
	case len(cfg.RustlsCipherSuites) > 0:
		ids, err := rustlsSuites(cfg.RustlsCipherSuites)
		if err != nil {
			return nil, err
		}
		out.CipherSuites = ids
	case cfg.OpenSSLCipherList != "":
		ids, err := opensslSuites(cfg.OpenSSLCipherList)
		if err != nil {
			return nil, err
		}
		out.CipherSuites = ids
	}
	return out, nil
}

// clientCertTTL is how long a loaded client certificate is reused before
// its sources are read again (so that a renewed file is picked up).
const clientCertTTL = 5 * time.Minute

// maxClientCerts bounds the client certificate cache.
const maxClientCerts = 64

// clientCerts caches loaded client certificates by their sources.
var clientCerts = struct {
	sync.Mutex
	m map[[2]string]cachedCert
}{m: map[[2]string]cachedCert{}}

type cachedCert struct {
	cert    tls.Certificate
	expires time.Time
}

// sourceKey identifies a key source by content.
func sourceKey(k *shaping.KeySource) string {
	if k == nil {
		return ""
	}
	return fmt.Sprintf("%q %q %t %q %q %q", k.File, k.KeyData, k.HasData, k.VaultMount, k.VaultPath, k.EventName)
}

// clientCertificate returns the client certificate of the sources,
// cached for clientCertTTL.
func clientCertificate(certSrc, keySrc *shaping.KeySource) (tls.Certificate, error) {
	key := [2]string{sourceKey(certSrc), sourceKey(keySrc)}
	now := time.Now()
	clientCerts.Lock()
	c, ok := clientCerts.m[key]
	clientCerts.Unlock()
	if ok && now.Before(c.expires) {
		return c.cert, nil
	}
	cert, err := loadClientCertificate(certSrc, keySrc)
	if err != nil {
		return tls.Certificate{}, err
	}
	clientCerts.Lock()
	if len(clientCerts.m) >= maxClientCerts {
		clear(clientCerts.m)
	}
	clientCerts.m[key] = cachedCert{cert: cert, expires: now.Add(clientCertTTL)}
	clientCerts.Unlock()
	return cert, nil
}

// loadClientCertificate loads the PEM certificate chain and private key.
// The key may be in the certificate's source when tls_private_key is
// unset.
func loadClientCertificate(certSrc, keySrc *shaping.KeySource) (tls.Certificate, error) {
	if certSrc == nil {
		return tls.Certificate{}, fmt.Errorf("tls_private_key is set without tls_certificate")
	}
	certPEM, err := certSrc.Get()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls_certificate %s: %w", certSrc, err)
	}
	keyPEM := certPEM
	if keySrc != nil {
		if keyPEM, err = keySrc.Get(); err != nil {
			return tls.Certificate{}, fmt.Errorf("tls_private_key %s: %w", keySrc, err)
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate %s: %w", certSrc, err)
	}
	return cert, nil
}

// versionRange turns the NO_TLSV1* names of openssl_options into a
// version range; the other options have no crypto/tls equivalent and are
// ignored. Go's client never offers less than TLS 1.0.
func versionRange(opts string) (lo, hi uint16, err error) {
	versions := []struct {
		opt string
		v   uint16
	}{{"NO_TLSV1", tls.VersionTLS10}, {"NO_TLSV1_1", tls.VersionTLS11}, {"NO_TLSV1_2", tls.VersionTLS12}, {"NO_TLSV1_3", tls.VersionTLS13}}
	off := map[string]bool{}
	for _, o := range strings.Split(opts, "|") {
		off[strings.TrimSpace(o)] = true
	}
	for _, v := range versions {
		if off[v.opt] {
			continue
		}
		if lo == 0 {
			lo = v.v
		}
		hi = v.v
	}
	if lo == 0 {
		return 0, 0, fmt.Errorf("openssl_options %q disables every TLS version", opts)
	}
	// A hole (NO_TLSV1_2 alone) cannot be expressed: the range keeps it.
	return lo, hi, nil
}

// suiteByName maps the IANA names (which rustls uses for TLS 1.2) and the
// OpenSSL names of the TLS 1.2 suites crypto/tls implements to their IDs.
var suiteByName = func() map[string]uint16 {
	m := map[string]uint16{}
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[s.Name] = s.ID
	}
	openssl := map[string]uint16{
		"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		"ECDHE-ECDSA-AES128-SHA256":     tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
		"ECDHE-RSA-AES128-SHA256":       tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
		"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
		"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
		"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
		"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
		"AES128-SHA256":                 tls.TLS_RSA_WITH_AES_128_CBC_SHA256,
		"DES-CBC3-SHA":                  tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA,
		"ECDHE-RSA-DES-CBC3-SHA":        tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA,
	}
	for k, v := range openssl {
		m[k] = v
	}
	return m
}()

// opensslSuites reads an OpenSSL cipher list of explicit suite names
// separated by ':', ',' or spaces. Exclusions ("!RC4", "-x") are
// ignored, since only the named suites are enabled; other keywords
// (HIGH, DEFAULT, ...) are not supported.
func opensslSuites(list string) ([]uint16, error) {
	var ids []uint16
	for _, name := range strings.FieldsFunc(list, func(r rune) bool { return r == ':' || r == ',' || r == ' ' }) {
		if name[0] == '!' || name[0] == '-' {
			continue
		}
		id, ok := suiteByName[strings.TrimPrefix(name, "+")]
		if !ok {
			return nil, fmt.Errorf("openssl_cipher_list: %q is not a TLS 1.2 cipher suite name mtakit knows (keywords such as HIGH are not supported)", name)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("openssl_cipher_list %q names no cipher suite", list)
	}
	return ids, nil
}

// rustlsSuites reads rustls_cipher_suites. TLS 1.3 suites ("TLS13_...")
// are accepted but cannot be restricted: crypto/tls always offers all
// three.
func rustlsSuites(names []string) ([]uint16, error) {
	var ids []uint16
	for _, name := range names {
		if strings.HasPrefix(name, "TLS13_") {
			continue
		}
		id, ok := suiteByName[name]
		if !ok {
			return nil, fmt.Errorf("rustls_cipher_suites: unknown cipher suite %q", name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
