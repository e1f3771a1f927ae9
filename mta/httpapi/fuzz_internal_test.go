package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/emersion/go-message"
)

// FuzzPrepareAndBuild checks that any request body either is refused
// before injection or builds a parseable message for each recipient,
// without panicking.
func FuzzPrepareAndBuild(f *testing.F) {
	seeds := []string{
		`{"envelope_sender":"a@b.c","content":"Subject: {{ x }}\n\nhi","recipients":[{"email":"r@d.e","substitutions":{"x":1}}]}`,
		`{"envelope_sender":"","content":{"subject":"s {{ name }}","text_body":"t","html_body":"<b>{{ email }}</b>","headers":{"X-A":"{{ name|upper }}"},"attachments":[{"data":"aGk=","base64":true,"content_type":"text/plain","file_name":"a.txt","content_id":"c"}]},"recipients":[{"email":"r@d.e","name":"N"}]}`,
		`{"envelope_sender":"a@b.c","content":"{% for i in range(3) %}{{ i }}{% endfor %}","template_dialect":"Static","recipients":[{"email":"r@d.e"}]}`,
		`{"envelope_sender":"a@b.c","content":{"amp_html_body":"{{ a.b.c }}"},"recipients":[{"email":"r@d.e"}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req InjectRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		inj, code, err := prepareInjection(&req)
		if err != nil {
			if code < 400 || code > 499 {
				t.Fatalf("refused with status %d: %v", code, err)
			}
			return
		}
		for _, rc := range inj.rcpts {
			vars := map[string]any{"email": rc.Email, "name": rc.Name}
			for k, v := range inj.subs {
				vars[k] = v
			}
			if inj.build == nil {
				if _, err := inj.raw.render(vars, 1<<20); err != nil {
					continue
				}
				continue
			}
			data, err := inj.build.build(vars, rc, time.Unix(0, 0), 1<<20)
			if err != nil {
				continue // a per-recipient failure, reported in the response
			}
			if _, err := message.Read(bytes.NewReader(data)); err != nil {
				t.Fatalf("built message does not parse: %v\n%s", err, data)
			}
		}
	})
}
