package mta_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// Messages received over SMTP are signed once, before spooling, and the
// spooled bytes verify with go-msgauth and with dkimpy; so do the
// messages of each recipient of one transaction, which share a stored
// body and (signed in the same second) a signature.
func TestReceivedMessagesAreSigned(t *testing.T) {
	keyDir := t.TempDir()
	txt := map[string]string{}
	for _, k := range []struct {
		sel string
		typ dkim.KeyType
	}{{"rsa1", dkim.KeyTypeRSA}, {"ed1", dkim.KeyTypeEd25519}} {
		kf, err := dkim.WriteKeyFiles(dkim.KeygenOptions{Dir: keyDir, Domain: "example.com", Selector: k.sel, KeyOptions: dkim.KeyOptions{Type: k.typ}})
		if err != nil {
			t.Fatal(err)
		}
		txt[kf.RecordName] = kf.RecordValue
	}
	conf := filepath.Join(t.TempDir(), "dkim_data.toml")
	os.WriteFile(conf, []byte(`[base]
additional_signatures = ["ed"]
[domain."example.com"]
selector = "rsa1"
[signature."ed"]
domain = "example.com"
selector = "ed1"
algo = "ed25519"
`), 0o644)
	signer, err := dkim.Load(dkim.LoadOptions{KeyDir: keyDir}, conf)
	if err != nil {
		t.Fatal(err)
	}

	data := spool.NewMemory()
	ts := startServer(t, data, spool.NewMemory(), func(o *mta.Options, _ *listener.Config) { o.Signer = signer })
	rc := dialRaw(t, ts.addr)
	ehlo(rc)
	ids := sendMail(t, rc, "a@example.com", []string{"b@example.net", "c@example.org"},
		"From: Alice <alice@example.com>\r\nTo: b@example.net\r\nSubject: signed\r\n\r\n.leading dot\r\nh\xc3\xa9llo\r\n")

	rc.expectCmd("MAIL FROM:<a@example.com>", 250)
	rc.expectCmd("RCPT TO:<b@example.net>", 250)
	rc.expectCmd("DATA", 354)
	rc.send("Subject: no from\r\n\r\nx\r\n.\r\n")
	if msg := rc.expect(552); !strings.HasPrefix(msg, "5.6.0 DKIM signing requires a From header") {
		t.Errorf("unsigned message reply %q", msg)
	}

	if len(ids) != 2 {
		t.Fatalf("ids %v", ids)
	}
	for _, sid := range ids {
		id, _ := spool.ParseID(sid)
		info, err := ts.srv.InspectMessage(context.Background(), id, true)
		if err != nil {
			t.Fatal(err)
		}
		verifyBoth(t, txt, info.Data)
	}
}

func verifyBoth(t *testing.T, txt map[string]string, msg []byte) {
	t.Helper()
	if n := bytes.Count(msg, []byte("DKIM-Signature:")); n != 2 {
		t.Fatalf("want 2 signatures, got %d:\n%s", n, msg)
	}
	vs, err := msgdkim.VerifyWithOptions(bytes.NewReader(msg), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return []string{txt[name]}, nil },
	})
	if err != nil || len(vs) != 2 {
		t.Fatalf("verify: %v (%d results)", err, len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("go-msgauth: %s: %v", v.Domain, v.Err)
		}
	}
	for _, r := range dkimpy(t, txt, msg) {
		if !r.Pass {
			t.Errorf("dkimpy: s=%s failed: %s", r.S, r.Error)
		}
	}
}

type dkimpyResult struct {
	S     string `json:"s"`
	Pass  bool   `json:"pass"`
	Error string `json:"error"`
}

// dkimpy verifies msg with the independent verifier shared with package
// dkim's tests (see dkim/testdata/dkimpy_verify.py).
func dkimpy(t *testing.T, txt map[string]string, msg []byte) []dkimpyResult {
	t.Helper()
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-I", "-c", "import dkim, nacl").CombinedOutput(); err != nil {
		if os.Getenv("MTAKIT_REQUIRE_DKIMPY") == "1" {
			t.Fatalf("dkimpy unavailable (install python3-dkim): %v %s", err, out)
		}
		t.Skipf("dkimpy unavailable (install python3-dkim): %v", err)
	}
	dir := t.TempDir()
	zone, _ := json.Marshal(txt)
	os.WriteFile(filepath.Join(dir, "dns.json"), zone, 0o600)
	os.WriteFile(filepath.Join(dir, "m.eml"), msg, 0o600)
	out, err := exec.Command(python, "-I", "../dkim/testdata/dkimpy_verify.py", filepath.Join(dir, "dns.json"), filepath.Join(dir, "m.eml")).Output()
	if err != nil {
		t.Fatalf("dkimpy_verify.py: %v", err)
	}
	var res []struct {
		Signatures []dkimpyResult `json:"signatures"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 || len(res[0].Signatures) != 2 {
		t.Fatalf("dkimpy output %s (%v)", out, err)
	}
	return res[0].Signatures
}
