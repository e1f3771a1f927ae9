package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/mtakit/mtakit/internal/smtpsink"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

func TestInjectRawTemplatedPerRecipient(t *testing.T) {
	var hookCalls int
	e := startEnv(t, envOpts{options: func(o *mta.Options) {
		o.Policy.MessageReceived = func(_ context.Context, m *mta.Message) error {
			hookCalls++ // http_message_generated
			m.SetMeta(mta.MetaTenant, "acme")
			return nil
		}
	}})
	req := map[string]any{
		"envelope_sender": "bounces@example.com",
		"content":         "Subject: hello {{ name }}\nFrom: news@example.com\nTo: {{ to_header }}\n\nDear {{ name }}, your code is {{ code }}.\n{% if vip %}VIP{% endif %}\n",
		"substitutions":   map[string]any{"code": "GLOBAL"},
		"recipients": []map[string]any{
			{"email": "alice@dest.test", "name": "Alice", "substitutions": map[string]any{"code": "A-1", "vip": true}},
			{"email": "bob@dest.test", "name": "Bob"},
		},
	}
	var resp httpapi.InjectResponse
	if code := e.call(t, "POST", "/api/inject/v1", req, &resp); code != 200 {
		t.Fatalf("status %d: %+v", code, resp)
	}
	if resp.SuccessCount != 2 || resp.FailCount != 0 || len(resp.FailedRecipients) != 0 || len(resp.Errors) != 0 {
		t.Fatalf("response %+v", resp)
	}
	if hookCalls != 2 {
		t.Errorf("MessageReceived called %d times, want 2", hookCalls)
	}
	// Spooled before the 200: every message has its Reception record.
	recs := e.log.OfType(logs.Reception)
	if len(recs) != 2 {
		t.Fatalf("%d Reception records, want 2", len(recs))
	}
	for _, r := range recs {
		if r.ReceptionProtocol == nil || *r.ReceptionProtocol != "HTTP" || !strings.HasPrefix(r.Queue, "acme@") {
			t.Errorf("reception record %+v", r)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 2); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"alice@dest.test": {"Subject: hello Alice", `To: "Alice" <alice@dest.test>`, "Dear Alice, your code is A-1.", "VIP", "Received: from 127.0.0.1"},
		"bob@dest.test":   {"Subject: hello Bob", "Dear Bob, your code is GLOBAL."},
	}
	for _, m := range e.sink.Messages() {
		data := string(m.Data)
		for _, s := range want[m.To[0]] {
			if !strings.Contains(data, s) {
				t.Errorf("message to %s lacks %q:\n%s", m.To[0], s, data)
			}
		}
		if strings.Contains(data, "\r\n") && strings.Count(data, "\n") != strings.Count(data, "\r\n") {
			t.Errorf("message to %s has bare LF", m.To[0])
		}
		if m.To[0] == "bob@dest.test" && strings.Contains(data, "VIP") {
			t.Errorf("bob got the VIP line")
		}
		if m.From != "bounces@example.com" {
			t.Errorf("MAIL FROM %q", m.From)
		}
	}
}

func TestInjectBuilderMIME(t *testing.T) {
	e := startEnv(t, envOpts{})
	png := []byte("\x89PNG fake image bytes")
	req := map[string]any{
		"envelope_sender": "bounces@example.com",
		"recipients":      []map[string]any{{"email": "carol@dest.test", "name": "Carol Ünïcode", "metadata": map[string]any{"crm": "42"}}},
		"substitutions":   map[string]any{"product": "Widget"},
		"content": map[string]any{
			"subject":   "Your {{ product }} order",
			"from":      map[string]any{"email": "shop@example.com", "name": "Shop"},
			"reply_to":  map[string]any{"email": "help@example.com"},
			"text_body": "Hi {{ name }}, thanks for the {{ product }}.",
			"html_body": "<p>Hi {{ name }}, <img src=\"cid:logo\"> {{ product | upper }}</p>",
			"headers":   map[string]any{"X-Campaign": "spring-{{ product | lower }}"},
			"attachments": []map[string]any{
				{"data": base64.StdEncoding.EncodeToString(png), "base64": true, "content_type": "image/png", "content_id": "logo", "file_name": "logo.png"},
				{"data": "a,b\n1,2\n", "content_type": "text/csv", "file_name": "order.csv"},
			},
		},
	}
	var resp httpapi.InjectResponse
	if code := e.call(t, "POST", "/api/inject/v1", req, &resp); code != 200 || resp.SuccessCount != 1 {
		t.Fatalf("status %d: %+v", code, resp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	data := e.sink.Messages()[0].Data
	mr, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := mr.Header.Subject()
	to, _ := mr.Header.AddressList("To")
	from, _ := mr.Header.AddressList("From")
	if subj != "Your Widget order" || len(to) != 1 || to[0].Name != "Carol Ünïcode" || len(from) != 1 || from[0].Address != "shop@example.com" {
		t.Errorf("headers: subject %q to %v from %v", subj, to, from)
	}
	if got := mr.Header.Get("X-Campaign"); got != "spring-widget" {
		t.Errorf("X-Campaign %q", got)
	}
	if mr.Header.Get("Message-Id") == "" || mr.Header.Get("Date") == "" {
		t.Error("no Message-ID or Date")
	}
	if ct, _, _ := mr.Header.ContentType(); ct != "multipart/mixed" {
		t.Errorf("top content type %q", ct)
	}
	parts := map[string]string{}
	var attachName string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		switch h := p.Header.(type) {
		case *mail.InlineHeader:
			ct, _, _ := h.ContentType()
			parts[ct] = string(b)
		case *mail.AttachmentHeader:
			attachName, _ = h.Filename()
			parts["attachment"] = string(b)
		}
	}
	wantParts := map[string]string{
		"text/plain": "Hi Carol Ünïcode, thanks for the Widget.",
		"text/html":  `<p>Hi Carol Ünïcode, <img src="cid:logo"> WIDGET</p>`,
		"image/png":  string(png),
		"attachment": "a,b\r\n1,2\r\n",
	}
	for ct, want := range wantParts {
		if got := strings.TrimRight(parts[ct], "\r\n"); got != strings.TrimRight(want, "\r\n") && !(ct == "attachment" && strings.ReplaceAll(got, "\r", "") == strings.TrimRight(strings.ReplaceAll(want, "\r", ""), "\n")) {
			t.Errorf("part %s = %q, want %q", ct, got, want)
		}
	}
	if attachName != "order.csv" {
		t.Errorf("attachment file name %q", attachName)
	}
	if !bytes.Contains(data, []byte("multipart/related")) || !bytes.Contains(data, []byte("multipart/alternative")) || !bytes.Contains(data, []byte("Content-Id: <logo>")) {
		t.Errorf("MIME structure:\n%s", data)
	}
}

func TestInjectRejectsBadRequests(t *testing.T) {
	e := startEnv(t, envOpts{hold: true, cfg: func(c *httpapi.Config) { c.MaxBodyBytes = 4096 }})
	good := `"recipients":[{"email":"a@dest.test"},{"email":"b@dest.test"}]`
	tests := []struct {
		name string
		body string
		code int
		want string
	}{
		{"not JSON", `{"envelope_sender": `, 400, "invalid JSON"},
		{"unknown field", `{"envelope_sender":"s@x.test","content":"Subject: x\n\nx",` + good + `,"colour":"red"}`, 400, "colour"},
		{"unknown content field", `{"envelope_sender":"s@x.test","content":{"text_body":"x","fonts":1},` + good + `}`, 400, "fonts"},
		{"trailing data", `{"envelope_sender":"s@x.test","content":"Subject: x\n\nx",` + good + `} {}`, 400, "after the JSON"},
		{"oversized", `{"envelope_sender":"s@x.test","content":"` + strings.Repeat("x", 5000) + `",` + good + `}`, 413, "exceeds"},
		{"no sender", `{"content":"Subject: x\n\nx",` + good + `}`, 400, "envelope_sender"},
		{"no recipients", `{"envelope_sender":"s@x.test","content":"x","recipients":[]}`, 400, "recipients"},
		{"bad second recipient", `{"envelope_sender":"s@x.test","content":"x","recipients":[{"email":"a@dest.test"},{"email":"nope"}]}`, 400, "recipients[1]"},
		{"recipient with display name", `{"envelope_sender":"s@x.test","content":"x","recipients":[{"email":"Bob <b@dest.test>"}]}`, 400, "recipients[0]"},
		{"sender with brackets", `{"envelope_sender":"<s@x.test>","content":"x",` + good + `}`, 400, "envelope_sender"},
		{"no content", `{"envelope_sender":"s@x.test",` + good + `}`, 400, "content is required"},
		{"content number", `{"envelope_sender":"s@x.test","content":42,` + good + `}`, 400, "content must be"},
		{"empty builder", `{"envelope_sender":"s@x.test","content":{"subject":"x"},` + good + `}`, 400, "text_body"},
		{"bad base64", `{"envelope_sender":"s@x.test","content":{"attachments":[{"data":"!!","base64":true,"content_type":"image/png"}]},` + good + `}`, 400, "base64"},
		{"handlebars", `{"envelope_sender":"s@x.test","content":"x","template_dialect":"Handlebars",` + good + `}`, 400, "Handlebars"},
		{"template syntax", `{"envelope_sender":"s@x.test","content":"Subject: {{ name \n\nx",` + good + `}`, 422, "template"},
		{"builder template syntax", `{"envelope_sender":"s@x.test","content":{"text_body":"{% if %}"},` + good + `}`, 422, "template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out struct{ Error string }
			code := e.call(t, "POST", "/api/inject/v1", tc.body, &out)
			if code != tc.code || !strings.Contains(out.Error, tc.want) {
				t.Errorf("got %d %q, want %d with %q", code, out.Error, tc.code, tc.want)
			}
		})
	}
	if n := e.srv.QueuedCount(); n != 0 {
		t.Errorf("%d messages queued by bad requests, want 0", n)
	}
	if n := len(e.log.OfType(logs.Reception)); n != 0 {
		t.Errorf("%d Reception records, want 0", n)
	}
}

func TestInjectPerRecipientFailure(t *testing.T) {
	e := startEnv(t, envOpts{hold: true, options: func(o *mta.Options) {
		o.Policy.MessageReceived = func(_ context.Context, m *mta.Message) error {
			if strings.HasPrefix(m.Recipients()[0], "blocked") {
				return mta.Reject(550, "5.7.1 blocked by policy")
			}
			return nil
		}
	}})
	var resp httpapi.InjectResponse
	body := map[string]any{"envelope_sender": "", "content": "Subject: x\n\nx", "template_dialect": "Static",
		"recipients": []map[string]any{{"email": "ok@dest.test"}, {"email": "blocked@dest.test"}}}
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 {
		t.Fatalf("status %d", code)
	}
	if resp.SuccessCount != 1 || resp.FailCount != 1 || fmt.Sprint(resp.FailedRecipients) != "[blocked@dest.test]" || len(resp.Errors) != 1 || !strings.Contains(resp.Errors[0], "blocked by policy") {
		t.Errorf("response %+v", resp)
	}
	if n := e.srv.QueuedCount(); n != 1 {
		t.Errorf("%d queued, want 1", n)
	}
}

func TestInjectDeferredGeneration(t *testing.T) {
	e := startEnv(t, envOpts{hold: true})
	var resp httpapi.InjectResponse
	body := map[string]any{"envelope_sender": "s@example.com", "content": "Subject: {{ n }}\n\nx", "deferred_generation": true,
		"recipients": []map[string]any{{"email": "a@dest.test", "substitutions": map[string]any{"n": 1}}, {"email": "b@dest.test"}}}
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 || resp.SuccessCount != 0 {
		t.Fatalf("status %d %+v", code, resp)
	}
	waitFor(t, "deferred generation", func() bool { return e.srv.QueuedCount() == 2 })
}

func TestInjectSinkFault(t *testing.T) {
	// A recipient the destination refuses is bounced after injection:
	// injection itself succeeded.
	e := startEnv(t, envOpts{})
	e.sink.MustAddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchLocalPart("gone"), Code: 550, Text: "no such user"})
	var resp httpapi.InjectResponse
	body := map[string]any{"envelope_sender": "s@example.com", "content": "Subject: x\n\nx", "recipients": []map[string]any{{"email": "gone@dest.test"}}}
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != http.StatusOK || resp.SuccessCount != 1 {
		t.Fatalf("status %d %+v", code, resp)
	}
	waitFor(t, "bounce record", func() bool { return len(e.log.OfType(logs.Bounce)) == 1 })
}

// A template that makes the engine panic (gonja divides by zero) fails
// that recipient and leaves the server running.
func TestInjectTemplatePanicIsARecipientFailure(t *testing.T) {
	e := startEnv(t, envOpts{hold: true, cfg: func(c *httpapi.Config) { c.MaxBodyBytes = 64 << 10 }})
	var resp httpapi.InjectResponse
	body := map[string]any{"envelope_sender": "s@example.com", "content": "Subject: {{ n % 0 }}\n\nx",
		"recipients": []map[string]any{{"email": "a@dest.test", "substitutions": map[string]any{"n": 1}}}}
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 || resp.FailCount != 1 || !strings.Contains(resp.Errors[0], "template") {
		t.Fatalf("status %d %+v", code, resp)
	}
	body["content"] = "Subject: x\n\n{% for i in range(1000) %}{{ big }}{% endfor %}"
	body["substitutions"] = map[string]any{"big": strings.Repeat("x", 10000)}
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 || resp.FailCount != 1 || !strings.Contains(resp.Errors[0], "exceeds twice") {
		t.Fatalf("status %d %+v", code, resp)
	}
	body["deferred_generation"] = true
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 {
		t.Fatalf("deferred: status %d", code)
	}
	e.api.Close() // waits for the deferred generation, which must not crash
	if n := e.srv.QueuedCount(); n != 0 {
		t.Errorf("%d queued", n)
	}
}

func countEntries(t *testing.T, q spool.Spool) int {
	t.Helper()
	n := 0
	if err := q.Enumerate(context.Background(), func(spool.ID, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// A deferred request is kept in the deferred queue until generated, and
// one left there by a previous run is generated at start.
func TestDeferredQueue(t *testing.T) {
	q := spool.NewMemory()
	left := `{"peer":"192.0.2.1","request":{"envelope_sender":"s@example.com","content":"Subject: {{ n }}\n\nx","recipients":[{"email":"a@dest.test","substitutions":{"n":"left over"}},{"email":"b@dest.test"}]}}`
	if err := q.Store(context.Background(), spool.NewID(), []byte(left)); err != nil {
		t.Fatal(err)
	}
	if err := q.Store(context.Background(), spool.NewID(), []byte(`{"request":{"recipients":[]}}`)); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOpts{hold: true, cfg: func(c *httpapi.Config) { c.DeferredQueue = q }})
	waitFor(t, "left-over request generated", func() bool { return e.srv.QueuedCount() == 2 })
	waitFor(t, "deferred queue emptied", func() bool { return countEntries(t, q) == 0 })

	body := map[string]any{"envelope_sender": "s@example.com", "content": "Subject: x\n\nx", "deferred_generation": true,
		"recipients": []map[string]any{{"email": "c@dest.test"}}}
	var resp httpapi.InjectResponse
	if code := e.call(t, "POST", "/api/inject/v1", body, &resp); code != 200 {
		t.Fatalf("status %d", code)
	}
	waitFor(t, "deferred request generated", func() bool { return e.srv.QueuedCount() == 3 })
	e.api.Close()
	if n := countEntries(t, q); n != 0 {
		t.Errorf("%d requests left in the deferred queue", n)
	}
	ids := e.srv.QueuedIDs("dest.test")
	found := false
	for _, id := range ids {
		info, err := e.srv.InspectMessage(context.Background(), id, true)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(info.Data), "Subject: left over") && strings.Contains(string(info.Data), "from 192.0.2.1") {
			found = true
		}
	}
	if !found {
		t.Error("left-over request not generated with its substitutions and peer")
	}
}

// While the server sheds load (memory over the soft limit), inject and
// check-liveness answer 503 and nothing is spooled, as in KumoMTA; a
// deferred request accepted earlier is still generated: it was answered
// 200, and dropping its recipients would lose mail.
func TestInjectWhileLoadShedding(t *testing.T) {
	q := spool.NewMemory()
	left := `{"peer":"192.0.2.1","request":{"envelope_sender":"s@example.com","content":"Subject: x\n\nx","recipients":[{"email":"a@dest.test"}]}}`
	if err := q.Store(context.Background(), spool.NewID(), []byte(left)); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, envOpts{hold: true, options: func(o *mta.Options) { o.MemorySoftLimit = 1 },
		cfg: func(c *httpapi.Config) { c.DeferredQueue = q }})
	waitFor(t, "the admitted deferred request generated", func() bool { return e.srv.QueuedCount() == 1 })
	body := map[string]any{"envelope_sender": "s@example.com", "content": "Subject: x\n\nx", "recipients": []map[string]any{{"email": "b@dest.test"}}}
	if code := e.call(t, "POST", "/api/inject/v1", body, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("inject while shedding: %d, want 503", code)
	}
	if code := e.call(t, "GET", "/api/check-liveness/v1", nil, nil); code != http.StatusServiceUnavailable {
		t.Fatalf("liveness while shedding: %d, want 503", code)
	}
	if e.srv.QueuedCount() != 1 {
		t.Fatalf("%d queued, want only the deferred one", e.srv.QueuedCount())
	}
	e.srv.SetMemoryLimits(mta.MemoryLimits{Soft: 1 << 62})
	if code := e.call(t, "POST", "/api/inject/v1", body, nil); code != http.StatusOK {
		t.Fatalf("inject after recovery: %d", code)
	}
}
