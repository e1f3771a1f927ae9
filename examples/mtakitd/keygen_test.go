package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/dkim"
)

func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args   []string
		key    string
		record string
	}{
		{[]string{"-domain", "example.com", "-selector", "s1", "-bits", "1024", "-out", dir}, "example.com/s1.key", "v=DKIM1; k=rsa; h=sha256; p=MIGfMA0G"},
		{[]string{"-domain", "Example.org", "-selector", "ed1", "-type", "ed25519", "-out", dir}, "example.org/ed1.key", "v=DKIM1; k=ed25519; h=sha256; p="},
		{[]string{"-out", dir, "-domain=example.net", "-selector=s2048"}, "example.net/s2048.key", "v=DKIM1; k=rsa; h=sha256; p=MIIBIjAN"},
	} {
		var out bytes.Buffer
		if err := runDKIMKeygen(c.args, &out); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		keyPath := filepath.Join(dir, c.key)
		pubPath := strings.TrimSuffix(keyPath, ".key") + ".pub"
		fi, err := os.Stat(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", keyPath, fi.Mode().Perm())
		}
		if _, err := os.Stat(pubPath); err != nil {
			t.Fatal(err)
		}
		// The printed record is the key's record.
		key, err := dkim.NewKeyCache().Load(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dkim.TXTRecord(key)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(rec, c.record) {
			t.Errorf("record %q, want prefix %q", rec, c.record)
		}
		text := out.String()
		name := strings.TrimSuffix(filepath.Base(c.key), ".key") + "._domainkey." + filepath.Dir(c.key)
		for _, want := range []string{keyPath, pubPath, "name:  " + name + "\n", "value: " + rec + "\n", name + ". 3600 IN TXT \""} {
			if !strings.Contains(text, want) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, want, text)
			}
		}
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, " IN TXT ") {
				for _, s := range strings.Split(line[strings.Index(line, `"`):], `" "`) {
					if len(strings.Trim(s, `"`)) > 255 {
						t.Errorf("zone string over 255 bytes: %d", len(s))
					}
				}
			}
		}
	}
}

func TestDKIMKeygenErrors(t *testing.T) {
	dir := t.TempDir()
	if err := runDKIMKeygen([]string{"-domain", "example.com", "-selector", "s1", "-type", "ed25519", "-out", dir}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-selector", "s1", "-out", dir}, "-domain and -selector are required"},
		{[]string{"-domain", "example.com", "-out", dir}, "-domain and -selector are required"},
		{[]string{"-domain", "example.com", "-selector", "s", "-type", "dsa", "-out", dir}, `unknown key type "dsa"`},
		{[]string{"-domain", "example.com", "-selector", "s", "-type", "ed25519", "-bits", "2048", "-out", dir}, "-bits applies to RSA keys only"},
		{[]string{"-domain", "example.com", "-selector", "s", "-bits", "512", "-out", dir}, "-bits 512"},
		{[]string{"-domain", "example.com", "-selector", "s", "-bits", "many", "-out", dir}, `invalid value "many" for flag -bits`},
		{[]string{"-domain", "example.com", "-selector", "s", "-force", "-out", dir}, "flag provided but not defined: -force"},
		{[]string{"-domain", "example.com", "-selector", "s", "-out", dir, "extra"}, `unexpected argument "extra"`},
		{[]string{"-domain", "../etc", "-selector", "s", "-out", dir}, `domain "../etc" has an empty label`},
		{[]string{"-domain", "example.com", "-selector", "s1", "-type", "ed25519", "-out", dir}, "already exists"},
		{[]string{"-domain", "example.com", "-selector", "s", "-out", ""}, "-out must not be empty"},
	} {
		var out bytes.Buffer
		err := runDKIMKeygen(c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: wrote output on error: %s", c.args, out.String())
		}
	}

	var out bytes.Buffer
	if err := runDKIMKeygen([]string{"-h"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "usage: mtakitd dkim-keygen") || !strings.Contains(out.String(), "-selector selector") {
		t.Errorf("usage:\n%s", out.String())
	}
}
