package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mtakit/mtakit/dkim"
)

const keygenUsage = `usage: mtakitd dkim-keygen -domain DOMAIN -selector SELECTOR [-type rsa|ed25519] [-bits N] [-out DIR]

Generates a DKIM key pair as DIR/DOMAIN/SELECTOR.key (private, PEM, mode 0600)
and DIR/DOMAIN/SELECTOR.pub (public, PEM), the layout KumoMTA's dkim_sign
helper and dkim_data.toml expect, and prints the DNS TXT record to publish.
Existing key files are never overwritten.

flags:
`

// runDKIMKeygen implements `mtakitd dkim-keygen`. args are the arguments
// after the subcommand name. It writes the result (or, for -h, the usage)
// to stdout and returns an error for bad flags or failures.
func runDKIMKeygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dkim-keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed on -h only
	domain := fs.String("domain", "", "signing `domain` (d=), e.g. example.com (required)")
	selector := fs.String("selector", "", "`selector` (s=), e.g. s1 (required)")
	keyType := fs.String("type", "rsa", "key `type`: rsa or ed25519")
	bits := fs.Int("bits", dkim.DefaultRSABits, fmt.Sprintf("RSA key size in `bits`, %d to %d", dkim.MinRSABits, dkim.MaxRSABits))
	out := fs.String("out", dkim.DefaultKeyDir, "key `directory`; keys go to DIR/DOMAIN/SELECTOR.key")

	usage := func() string {
		var b strings.Builder
		b.WriteString(keygenUsage)
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		return b.String()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			_, werr := io.WriteString(stdout, usage())
			return werr
		}
		return fmt.Errorf("dkim-keygen: %w (run 'mtakitd dkim-keygen -h' for usage)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dkim-keygen: unexpected argument %q (run 'mtakitd dkim-keygen -h' for usage)", fs.Arg(0))
	}
	if *domain == "" || *selector == "" {
		return errors.New("dkim-keygen: -domain and -selector are required (run 'mtakitd dkim-keygen -h' for usage)")
	}
	typ, err := dkim.ParseKeyType(*keyType)
	if err != nil {
		return fmt.Errorf("dkim-keygen: -type: %w", err)
	}
	bitsSet := false
	fs.Visit(func(f *flag.Flag) { bitsSet = bitsSet || f.Name == "bits" })
	opts := dkim.KeyOptions{Type: typ}
	switch {
	case typ == dkim.KeyTypeEd25519 && bitsSet:
		return errors.New("dkim-keygen: -bits applies to RSA keys only; Ed25519 keys have a fixed size")
	case typ == dkim.KeyTypeRSA:
		if *bits < dkim.MinRSABits || *bits > dkim.MaxRSABits {
			return fmt.Errorf("dkim-keygen: -bits %d: RSA keys must have %d to %d bits", *bits, dkim.MinRSABits, dkim.MaxRSABits)
		}
		opts.Bits = *bits
	}
	if *out == "" {
		return errors.New("dkim-keygen: -out must not be empty")
	}

	kf, err := dkim.WriteKeyFiles(dkim.KeygenOptions{Dir: *out, Domain: *domain, Selector: *selector, KeyOptions: opts})
	if err != nil {
		return fmt.Errorf("dkim-keygen: %w", err)
	}
	desc := "Ed25519"
	if typ == dkim.KeyTypeRSA {
		desc = fmt.Sprintf("%d-bit RSA", opts.Bits)
	}
	_, err = fmt.Fprintf(stdout, `Wrote %s private key %s (mode 0600)
Wrote public key %s

Publish this DNS TXT record:
  name:  %s
  value: %s

As a zone file line (strings of at most 255 bytes):
%s
`, desc, kf.KeyPath, kf.PubPath, kf.RecordName, kf.RecordValue, kf.ZoneLine(3600))
	return err
}
