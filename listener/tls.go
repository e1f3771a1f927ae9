package listener

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// LoadTLS returns a server TLS configuration from PEM certificate and key
// files, for Config.TLS.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("listener: load TLS certificate %s / key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// EnsureSelfSigned makes sure certFile and keyFile exist, writing a new
// self-signed ECDSA certificate for hosts (names or IP addresses) when
// either is missing, and returns their TLS configuration. KumoMTA does the
// same when a listener has no certificate configured; peers that relay to
// us usually do not verify, and this keeps STARTTLS available out of the
// box.
func EnsureSelfSigned(certFile, keyFile string, hosts ...string) (*tls.Config, error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	if errors.Is(certErr, fs.ErrNotExist) || errors.Is(keyErr, fs.ErrNotExist) {
		certPEM, keyPEM, err := SelfSignedPEM(hosts...)
		if err != nil {
			return nil, err
		}
		for _, f := range []struct {
			path string
			data []byte
			mode os.FileMode
		}{{certFile, certPEM, 0o644}, {keyFile, keyPEM, 0o600}} {
			if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
				return nil, fmt.Errorf("listener: self-signed certificate: %w", err)
			}
			if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
				return nil, fmt.Errorf("listener: self-signed certificate: %w", err)
			}
		}
	}
	return LoadTLS(certFile, keyFile)
}

// SelfSignedPEM generates a self-signed certificate valid for hosts for
// ten years, returning the PEM certificate and PKCS#8 private key.
func SelfSignedPEM(hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("listener: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("listener: generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "mtakit"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(hosts) > 0 {
		tmpl.Subject.CommonName = hosts[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("listener: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("listener: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}
