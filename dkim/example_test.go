package dkim_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mtakit/mtakit/dkim"
)

// A single signer: the Go equivalent of kumo.dkim.ed25519_signer.
func ExampleNewEd25519Signer() {
	key, err := dkim.GenerateKey(dkim.KeyOptions{Type: dkim.KeyTypeEd25519})
	if err != nil {
		log.Fatal(err)
	}
	signer, err := dkim.NewEd25519Signer(dkim.Options{
		Domain:     "example.com",
		Selector:   "s1",
		Key:        key, // or KeyFile: "/opt/kumomta/etc/dkim/example.com/s1.key"
		Headers:    []string{"From", "To", "Subject", "Date"},
		OverSign:   true,
		Expiration: 7 * 24 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	msg := []byte("From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello\r\n")
	field, err := signer.Sign(msg)
	if err != nil {
		log.Fatal(err)
	}
	signed := append(field, msg...) // what the server spools and sends
	fmt.Println(strings.HasPrefix(string(signed), "DKIM-Signature: a=ed25519-sha256;"))
	fmt.Println(strings.Contains(string(field), "h=From:From:To:To:Subject:Subject:Date;"))
	// Output:
	// true
	// true
}

// Signing with several keys: the signatures come back newest first, as if
// each had been prepended in turn.
func ExampleMulti() {
	rsaKey, _ := dkim.GenerateKey(dkim.KeyOptions{Type: dkim.KeyTypeRSA, Bits: 1024})
	edKey, _ := dkim.GenerateKey(dkim.KeyOptions{Type: dkim.KeyTypeEd25519})
	rsaSigner, err := dkim.NewRSASigner(dkim.Options{Domain: "example.com", Selector: "rsa1", Key: rsaKey})
	if err != nil {
		log.Fatal(err)
	}
	edSigner, err := dkim.NewEd25519Signer(dkim.Options{Domain: "example.com", Selector: "ed1", Key: edKey})
	if err != nil {
		log.Fatal(err)
	}
	both := dkim.Multi{rsaSigner, edSigner}
	fields, err := both.Sign([]byte("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.Count(string(fields), "DKIM-Signature: "))
	// Output: 2
}

// Loading KumoMTA's dkim_data.toml and signing by From domain.
func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "dkim-example")
	defer os.RemoveAll(dir)
	keyDir := filepath.Join(dir, "keys")
	// The equivalent of KumoMTA's openssl procedure.
	if _, err := dkim.WriteKeyFiles(dkim.KeygenOptions{
		Dir: keyDir, Domain: "example.com", Selector: "s1",
		KeyOptions: dkim.KeyOptions{Type: dkim.KeyTypeEd25519},
	}); err != nil {
		log.Fatal(err)
	}
	conf := filepath.Join(dir, "dkim_data.toml")
	os.WriteFile(conf, []byte(`
[base]
selector = "s1"
headers = ["From", "To", "Subject", "Date", "Message-ID"]
over_sign = true

[domain."example.com"]
algo = "ed25519"
`), 0o600)

	data, err := dkim.Load(dkim.LoadOptions{KeyDir: keyDir}, conf)
	if err != nil {
		log.Fatal(err)
	}
	if err := data.Check(); err != nil { // every key loads
		log.Fatal(err)
	}
	fields, err := data.Sign([]byte("From: news@example.com\r\nTo: a@example.net\r\n\r\nHi\r\n"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.Count(string(fields), "DKIM-Signature: "), strings.Contains(string(fields), "d=example.com;"))

	// Unconfigured domains are not signed.
	fields, _ = data.Sign([]byte("From: someone@example.org\r\n\r\nHi\r\n"))
	fmt.Println(len(fields))

	// No From header: the server replies as KumoMTA does.
	_, err = data.Sign([]byte("To: a@example.net\r\n\r\nHi\r\n"))
	var reject *dkim.RejectError
	if errors.As(err, &reject) {
		fmt.Println(reject.Code, reject.EnhancedCode)
	}
	// Output:
	// 1 true
	// 0
	// 552 [5 6 0]
}

// Generating a key pair and the DNS record to publish, like
// `mtakitd dkim-keygen`.
func ExampleWriteKeyFiles() {
	dir, _ := os.MkdirTemp("", "dkim-keygen")
	defer os.RemoveAll(dir)
	kf, err := dkim.WriteKeyFiles(dkim.KeygenOptions{
		Dir: dir, Domain: "example.com", Selector: "s1",
		KeyOptions: dkim.KeyOptions{Type: dkim.KeyTypeRSA, Bits: 2048},
	})
	if err != nil {
		log.Fatal(err)
	}
	rel := func(p string) string { r, _ := filepath.Rel(dir, p); return r }
	fmt.Println(rel(kf.KeyPath), rel(kf.PubPath))
	fmt.Println(kf.RecordName)
	fmt.Println(kf.RecordValue[:40])
	fmt.Println(len(dkim.SplitTXT(kf.RecordValue)), "strings in the zone file")
	// Output:
	// example.com/s1.key example.com/s1.pub
	// s1._domainkey.example.com
	// v=DKIM1; k=rsa; h=sha256; p=MIIBIjANBgkq
	// 2 strings in the zone file
}

func ExampleFromDomain() {
	d, err := dkim.FromDomain([]byte("Subject: x\r\nFrom: \"News\" <news@Mail.Example.COM>\r\n\r\n"))
	fmt.Println(d, err)
	_, err = dkim.FromDomain([]byte("Subject: x\r\n\r\n"))
	fmt.Println(errors.Is(err, dkim.ErrNoFromHeader))
	// Output:
	// mail.example.com <nil>
	// true
}
