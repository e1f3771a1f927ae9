package logs

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// refRecord has Record's fields and tags but not its MarshalJSON: it is
// the reference encoding appendRecord must reproduce.
type refRecord Record

// referenceForm applies the normalization documented on Record to a
// shallow copy of r.
func referenceForm(r *Record) refRecord {
	w := refRecord(*r)
	if w.Meta == nil {
		w.Meta = map[string]any{}
	}
	if w.Headers == nil {
		w.Headers = map[string]any{}
	}
	if w.BounceClassification == "" {
		w.BounceClassification = Uncategorized
	}
	if len(w.FeedbackReport) == 0 {
		w.FeedbackReport = nil
	}
	w.Response.Content = singleLine(w.Response.Content)
	return w
}

func referenceJSON(t testing.TB, r *Record) (string, error) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	w := referenceForm(r)
	if err := enc.Encode(&w); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

type textish string

func (t textish) MarshalJSON() ([]byte, error) { return []byte(`"custom:` + string(t) + `"`), nil }

func TestAppendRecordMatchesEncodingJSON(t *testing.T) {
	full := receptionRecord(7)
	full.Type = Feedback
	full.Recipient = Recipients{"a@x", "b@y"}
	full.Site = "ip-1->(alt1|alt2)?.mx.example.net@smtp_client"
	full.PeerAddress.IsSecure = true
	full.EgressPool, full.EgressSource = strPtr("pool0"), strPtr("src<1>")
	full.SourceAddress = &SourceAddress{Address: "10.0.0.1:25", Server: "10.9.9.9:5000", Protocol: "haproxy"}
	full.FeedbackReport = json.RawMessage("{ \"feedback_type\" : \"abuse\",\n \"incidents\": 1 }")
	full.DeliveryProtocol = strPtr("ESMTP")
	full.TLSCipher, full.TLSProtocolVersion = "TLS_AES_128_GCM_SHA256", "TLSv1.3"
	full.TLSPeerSubjectName = []string{"CN=mx", "O=Example"}
	full.ProviderName = "google"
	full.BounceClassification = "SpamBlock"
	full.Meta = map[string]any{
		"s": "x", "b": true, "n": nil, "f": 1.5, "big": 1e21, "small": 1e-7, "f32": float32(0.1),
		"i": 42, "i64": int64(-9), "u": uint(3), "list": []any{"a", 1.0, false, nil, map[string]any{"z": 1.0, "a": "q"}},
		"ss": []string{"p", "q"}, "nilmap": map[string]any(nil), "nillist": []any(nil),
		"num": json.Number("12.5"), "time": time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC),
		"custom": textish("v"), "strmap": map[string]string{"k": "v"},
		"weird":              "quote\" back\\ ctl\x01\b\f\t\n\r <&> \u2028\u2029 bad\xff é 日本",
		"key with \"quote\"": 1.0,
	}
	full.Headers = map[string]any{"Subject": "=?utf-8?q?hi?=", "To": []any{"a", "b"}}

	tests := []struct {
		name string
		rec  *Record
	}{
		{"zero", &Record{}},
		{"reception", receptionRecord(1)},
		{"everything", full},
		{"one empty recipient", &Record{Recipient: Recipients{""}}},
		{"empty recipients", &Record{Recipient: Recipients{}}},
		{"multi-line content", &Record{Response: Response{Code: 421, Content: "a\r\nb\nc\rd", EnhancedCode: &EnhancedCode{4, 7, 0}}}},
		{"more than 16 meta keys", &Record{Meta: manyKeys(40)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want, err := referenceJSON(t, tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := appendRecord(nil, tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Fatalf("appendRecord:\n%s\nencoding/json:\n%s", got, want)
			}
			if !json.Valid(got) {
				t.Fatal("invalid JSON")
			}
		})
	}
}

func manyKeys(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[string(rune('a'+i%26))+strings.Repeat("x", i)] = float64(i)
	}
	return m
}

func TestAppendRecordErrors(t *testing.T) {
	tests := []struct {
		name string
		rec  *Record
		want string
	}{
		{"NaN meta", &Record{Meta: map[string]any{"x": math.NaN()}}, `meta: key "x": unsupported value NaN`},
		{"Inf header", &Record{Headers: map[string]any{"h": []any{math.Inf(1)}}}, "headers: key \"h\": unsupported value +Inf"},
		{"bad feedback", &Record{FeedbackReport: json.RawMessage("{nope")}, "feedback_report:"},
		{"unencodable", &Record{Meta: map[string]any{"c": make(chan int)}}, "unsupported type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := appendRecord(nil, tc.rec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			// Local.Log refuses the record without queueing anything.
			l := openLocal(t, LocalConfig{LogDir: t.TempDir()})
			if err := l.Log(tc.rec); err == nil {
				t.Fatal("Log succeeded")
			}
		})
	}
}

func FuzzAppendRecord(f *testing.F) {
	f.Add("Delivery", "id", "a@b", "c@d", "250 ok\r\nmore", "meta", "value", 1.5, int64(3), true)
	f.Add("", "\x00\xff", "\u2028", "<>&", "\"\\", "", "", math.SmallestNonzeroFloat64, int64(-1), false)
	f.Fuzz(func(t *testing.T, typ, id, sender, rcpt, content, key, val string, fv float64, iv int64, many bool) {
		r := &Record{
			Type: RecordType(typ), ID: id, Sender: sender, Recipient: Recipients{rcpt},
			Response: Response{Code: int(iv), Content: content, Command: &val},
			Size:     iv, Meta: map[string]any{key: val, key + "f": fv, key + "l": []any{val, fv}},
			Headers: map[string]any{val: key},
		}
		if many {
			r.Recipient = append(r.Recipient, sender)
		}
		want, werr := referenceJSON(t, r)
		got, gerr := appendRecord(nil, r)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("errors differ: encoding/json %v, appendRecord %v", werr, gerr)
		}
		if werr == nil && string(got) != want {
			t.Fatalf("appendRecord:\n%s\nencoding/json:\n%s", got, want)
		}
	})
}
