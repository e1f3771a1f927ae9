package logs

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRecipientsJSON(t *testing.T) {
	tests := []struct {
		name string
		r    Recipients
		want string
	}{
		{"one", Recipients{"a@example.com"}, `"a@example.com"`},
		{"two", Recipients{"a@example.com", "b@example.com"}, `["a@example.com","b@example.com"]`},
		{"nil", nil, `[]`},
		{"empty", Recipients{}, `[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("Marshal = %s, want %s", b, tc.want)
			}
			// In a record, too.
			rec := Record{Recipient: tc.r}
			if got := mustJSON(t, rec); !strings.Contains(got, `"recipient":`+tc.want+`,`) {
				t.Fatalf("record JSON lacks recipient %s: %s", tc.want, got)
			}
			var back Recipients
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if len(back) != len(tc.r) || (len(back) > 0 && !reflect.DeepEqual(back, tc.r)) {
				t.Fatalf("Unmarshal(%s) = %#v, want %#v", b, back, tc.r)
			}
		})
	}
	var r Recipients
	if err := json.Unmarshal([]byte(`null`), &r); err != nil || r != nil {
		t.Errorf("Unmarshal(null) = %#v, %v; want nil", r, err)
	}
	if err := json.Unmarshal([]byte(`42`), &r); err == nil {
		t.Error("Unmarshal(42) succeeded")
	}
}

func TestSetTimes(t *testing.T) {
	base := time.Date(2025, 9, 12, 11, 8, 1, 0, time.UTC)
	tests := []struct {
		t    time.Time
		want string
	}{
		{base, "2025-09-12T11:08:01Z"},
		{base.Add(440 * time.Millisecond), "2025-09-12T11:08:01.440Z"},
		{base.Add(440526 * time.Microsecond), "2025-09-12T11:08:01.440526Z"},
		{base.Add(440526026), "2025-09-12T11:08:01.440526026Z"},
		{base.Add(440526026).In(time.FixedZone("X", 3600)), "2025-09-12T11:08:01.440526026Z"},
	}
	for _, tc := range tests {
		var r Record
		r.SetTimes(tc.t, tc.t.Add(-time.Hour))
		if r.EventTime != tc.want || r.Timestamp != 1757675281 {
			t.Errorf("SetTimes(%s): event_time %q timestamp %d, want %q 1757675281", tc.t, r.EventTime, r.Timestamp, tc.want)
		}
		if r.Created != 1757675281-3600 || !strings.HasPrefix(r.CreatedTime, "2025-09-12T10:08:01") {
			t.Errorf("SetTimes(%s): created %d %q", tc.t, r.Created, r.CreatedTime)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.EventTime); err != nil {
			t.Errorf("event_time %q is not RFC 3339: %v", r.EventTime, err)
		}
	}
}

func TestSingleLine(t *testing.T) {
	// KumoMTA's rfc5321 remove_crlf test cases.
	tests := map[string]string{
		"hello\r\nthere\r\n":   "hello there ",
		"hello\r":              "hello ",
		"hello\nthere\r\n":     "hello there ",
		"hello\r\nthere\n":     "hello there ",
		"hello\r\r\r\nthere\n": "hello   there ",
		"no breaks":            "no breaks",
	}
	for in, want := range tests {
		if got := singleLine(in); got != want {
			t.Errorf("singleLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRecordMarshalNormalizes(t *testing.T) {
	r := Record{Type: Bounce, Response: Response{Code: 550, Content: "5.1.1 no\r\nsuch user"}}
	var m map[string]any
	if err := json.Unmarshal([]byte(mustJSON(t, r)), &m); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m["meta"], map[string]any{}) || !reflect.DeepEqual(m["headers"], map[string]any{}) {
		t.Errorf("meta/headers = %v/%v, want {}", m["meta"], m["headers"])
	}
	if m["bounce_classification"] != Uncategorized {
		t.Errorf("bounce_classification = %v", m["bounce_classification"])
	}
	if c := m["response"].(map[string]any)["content"]; c != "5.1.1 no such user" {
		t.Errorf("content = %q", c)
	}
	if v, ok := m["feedback_report"]; !ok || v != nil {
		t.Errorf("feedback_report = %v (present %v), want null", v, ok)
	}
	for _, omitted := range []string{"tls_cipher", "tls_protocol_version", "tls_peer_subject_name", "provider_name", "session_id"} {
		if _, ok := m[omitted]; ok {
			t.Errorf("%s present, want omitted when empty", omitted)
		}
	}
	// A pointer marshals the same way.
	if a, b := mustJSON(t, r), mustJSON(t, &r); a != b {
		t.Errorf("value and pointer encodings differ:\n%s\n%s", a, b)
	}
}

// kumoDelivery is a Delivery record as KumoMTA writes it (from
// docs/reference/log_record.md, comments removed).
const kumoDelivery = `{"type":"Delivery","id":"1d98076abbbc11ed940250ebf67f93bd","sender":"user@sender.example.com","recipient":"user@recipient.example.com","queue":"campaign:tenant@domain","site":"source2->(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com.","size":1047,"response":{"code":250,"enhanced_code":{"class":2,"subject":0,"detail":0},"content":"OK ids=8a5475ccbbc611eda12250ebf67f93bd","command":"."},"peer_address":{"name":"gmail-smtp-in.l.google.com.","addr":"142.251.2.27"},"timestamp":1757675281,"event_time":"2025-09-12T11:08:01.440526026Z","created":1757675281,"created_time":"2025-09-12T11:08:01.440526026Z","num_attempts":0,"bounce_classification":"Uncategorized","egress_pool":"pool0","egress_source":"source2","source_address":{"address":"10.0.0.1:53210","server":"10.0.5.1:5000","protocol":"haproxy"},"feedback_report":null,"meta":{"tenant":"tenant"},"headers":{"Subject":"hello"},"delivery_protocol":"ESMTP","reception_protocol":"ESMTP","nodeid":"557f3ad4-2c8c-11ee-976e-782d7e12e173","tls_cipher":"TLS_AES_256_GCM_SHA384","tls_protocol_version":"TLSv1.3","tls_peer_subject_name":["CN=mx.google.com"],"session_id":"0c1b2a3d-4e5f-6071-8293-a4b5c6d7e8f9"}`

func TestKumoRecordRoundTrip(t *testing.T) {
	var r Record
	if err := json.Unmarshal([]byte(kumoDelivery), &r); err != nil {
		t.Fatal(err)
	}
	if r.Type != Delivery || r.Recipient[0] != "user@recipient.example.com" || r.SourceAddress.Protocol != "haproxy" {
		t.Fatalf("decoded %+v", r)
	}
	// Re-encoding gives the same JSON, byte for byte: same names, same
	// order, same formats.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(b.String(), "\n"); got != kumoDelivery {
		t.Fatalf("re-encoded:\n%s\nwant\n%s", got, kumoDelivery)
	}
}
