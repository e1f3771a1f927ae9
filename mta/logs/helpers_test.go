package logs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func strPtr(s string) *string { return &s }

// receptionRecord returns a typical Reception record, the kind logged for
// every accepted message.
func receptionRecord(i int) *Record {
	now := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	r := &Record{
		Type:      Reception,
		ID:        fmt.Sprintf("%032x", i),
		Sender:    "bounce-handler@sender.example.com",
		Recipient: Recipients{fmt.Sprintf("user%d@example.org", i)},
		Queue:     "campaign1:tenant1@example.org",
		Size:      4812,
		Response: Response{
			Code:         250,
			EnhancedCode: &EnhancedCode{Class: 2, Subject: 0, Detail: 0},
			Content:      "OK ids=" + fmt.Sprintf("%032x", i),
			Command:      strPtr("."),
		},
		PeerAddress:       &PeerAddress{Name: "client.sender.example.com", Addr: "192.0.2.10"},
		NumAttempts:       0,
		ReceptionProtocol: strPtr("ESMTP"),
		NodeID:            "8f3c2a4e-1b6d-4c7e-9a0f-2d5b8e1c3f7a",
		Meta: map[string]any{
			"tenant":        "tenant1",
			"campaign":      "campaign1",
			"received_from": "192.0.2.10:53012",
			"x_seq":         float64(i),
		},
		Headers:   map[string]any{"Subject": "Your weekly report"},
		SessionID: "0c1b2a3d-4e5f-6071-8293-a4b5c6d7e8f9",
	}
	r.SetTimes(now.Add(time.Duration(i)*time.Millisecond), now)
	return r
}

// wireForm is what a reader gets back for rec: its JSON encoding,
// decoded.
func wireForm(t testing.TB, rec *Record) Record {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var out Record
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	return out
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

func openLocal(t testing.TB, cfg LocalConfig) *Local {
	t.Helper()
	l, err := OpenLocal(cfg)
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func logAll(t testing.TB, l *Local, recs []*Record) {
	t.Helper()
	for _, r := range recs {
		if err := l.Log(r); err != nil {
			t.Fatalf("Log(%s): %v", r.ID, err)
		}
	}
}

func makeRecords(n int) []*Record {
	recs := make([]*Record, n)
	for i := range recs {
		recs[i] = receptionRecord(i)
	}
	return recs
}

// segmentBytes returns the uncompressed content of a segment file,
// tolerating an unfinished zstd frame.
func segmentBytes(t testing.TB, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !isZstd(raw) {
		return raw
	}
	dec, err := zstd.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := io.ReadAll(dec)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatalf("decompress %s: %v", path, err)
	}
	return out
}

var segmentNameRE = regexp.MustCompile(`^\d{8}-\d{6}(\.\d{3}|\.\d{6}|\.\d{9})?`)

func segments(t testing.TB, dir string) []string {
	t.Helper()
	paths, err := ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

func isDone(t testing.TB, path string) bool {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()&0o222 == 0
}

// waitFor polls cond every 10ms until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func baseName(p string) string { return filepath.Base(p) }
