package reports_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/mta/reports"
)

// addSamples seeds a fuzz target with every sample in testdata, in LF
// and CRLF form.
func addSamples(f *testing.F) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(crlf(b))
	}
}

// FuzzParseDSN: ParseDSN never panics, returns a report or an error, and
// a report it returns has recipients, each with an action and a reply
// code a classifier accepts.
func FuzzParseDSN(f *testing.F) {
	addSamples(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := reports.ParseDSN(data)
		if err != nil {
			if d != nil {
				t.Fatal("report and error both returned")
			}
			return
		}
		if len(d.Recipients) == 0 {
			t.Fatal("report without recipients")
		}
		for _, r := range d.Recipients {
			if r.Action == "" || r.Recipient() == "" {
				t.Fatalf("recipient without action or address: %+v", r)
			}
			if rep := r.Reply(); rep.Code < 200 || rep.Code > 599 {
				t.Fatalf("reply code %d out of range", rep.Code)
			}
		}
		_ = d.Original.Correlation()
	})
}

// FuzzParseARF: ParseARF never panics; a report it returns has the
// required fields and encodes to JSON.
func FuzzParseARF(f *testing.F) {
	addSamples(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := reports.ParseARF(data)
		if err != nil {
			if r != nil {
				t.Fatal("report and error both returned")
			}
			if errors.Is(err, reports.ErrNotARF) && strings.Contains(err.Error(), `report-type is "feedback-report"`) {
				t.Fatalf("a feedback-report reported as not ARF: %v", err)
			}
			return
		}
		if r.FeedbackType == "" || r.Version == "" {
			t.Fatalf("report without required fields: %+v", r)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("json: %v", err)
		}
	})
}
