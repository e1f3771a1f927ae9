package httpapi

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
)

// contentError is a content object that cannot make a message, whatever
// the substitutions: a 400, not a template error.
type contentError struct{ msg string }

func (e *contentError) Error() string { return "content: " + e.msg }

// builder makes a MIME message from a Content object for each recipient.
type builder struct {
	c                        *Content
	subject, text, html, amp *template
	headers                  map[string]*template
	attachments              []attachment
}

type attachment struct {
	Attachment
	data []byte
}

// newBuilder validates c and compiles its templates. Attachments are not
// templates, as in KumoMTA.
func newBuilder(c *Content, dialect string) (*builder, error) {
	b := &builder{c: c, headers: make(map[string]*template, len(c.Headers))}
	if c.TextBody == "" && c.HTMLBody == "" && c.AMPHTMLBody == "" && len(c.Attachments) == 0 {
		return nil, &contentError{"needs text_body, html_body, amp_html_body or attachments"}
	}
	for _, a := range []*Address{c.From, c.ReplyTo} {
		if a != nil && !strings.Contains(a.Email, "@") {
			return nil, &contentError{fmt.Sprintf("%q is not an email address", a.Email)}
		}
	}
	for name := range c.Headers {
		if !validHeaderName(name) {
			return nil, &contentError{fmt.Sprintf("invalid header name %q", name)}
		}
	}
	for i, a := range c.Attachments {
		at := attachment{Attachment: a, data: []byte(a.Data)}
		if a.Base64 {
			d, err := base64.StdEncoding.DecodeString(a.Data)
			if err != nil {
				return nil, &contentError{fmt.Sprintf("attachments[%d]: data is not base64: %v", i, err)}
			}
			at.data = d
		}
		if _, _, err := mime.ParseMediaType(a.ContentType); err != nil {
			return nil, &contentError{fmt.Sprintf("attachments[%d]: content_type %q: %v", i, a.ContentType, err)}
		}
		b.attachments = append(b.attachments, at)
	}
	var err error
	compile := func(name, src string) *template {
		if err != nil {
			return nil
		}
		var t *template
		t, err = compileTemplate(name, src, dialect)
		return t
	}
	b.subject = compile("subject", c.Subject)
	b.text = compile("text_body", c.TextBody)
	b.html = compile("html_body", c.HTMLBody)
	b.amp = compile("amp_html_body", c.AMPHTMLBody)
	for name, v := range c.Headers {
		b.headers[name] = compile("headers."+name, v)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// part is a node of the MIME tree: a leaf with a body, or a multipart.
type part struct {
	header message.Header
	body   []byte
	kids   []*part
}

func multipart(kind string, kids ...*part) *part {
	if len(kids) == 1 {
		return kids[0]
	}
	p := &part{kids: kids}
	p.header.SetContentType("multipart/"+kind, nil)
	return p
}

func textPart(ctype, body string) *part {
	p := &part{body: []byte(body)}
	p.header.SetContentType(ctype, map[string]string{"charset": "utf-8"})
	p.header.Set("Content-Transfer-Encoding", "quoted-printable")
	return p
}

// build renders the templates for one recipient and writes the message.
// Layout: multipart/mixed of (multipart/related of (multipart/alternative
// of text, AMP, HTML) and the inline attachments) and the other
// attachments; levels with one member collapse.
func (b *builder) build(vars map[string]any, rc Recipient, now time.Time, limit int64) ([]byte, error) {
	render := func(t *template) (string, error) { return t.render(vars, limit) }
	var alts []*part
	for _, alt := range []struct {
		t     *template
		ctype string
	}{{b.text, "text/plain"}, {b.amp, "text/x-amp-html"}, {b.html, "text/html"}} {
		if alt.t == nil || alt.t.source == "" {
			continue
		}
		s, err := render(alt.t)
		if err != nil {
			return nil, err
		}
		alts = append(alts, textPart(alt.ctype, string(crlf(s))))
	}
	var related, mixed []*part
	if len(alts) > 0 {
		related = append(related, multipart("alternative", alts...))
	}
	for _, a := range b.attachments {
		p := &part{body: a.data}
		ctype, params, _ := mime.ParseMediaType(a.ContentType)
		if a.FileName != "" {
			params["name"] = a.FileName
		}
		p.header.SetContentType(ctype, params)
		p.header.Set("Content-Transfer-Encoding", "base64")
		disp := map[string]string{}
		if a.FileName != "" {
			disp["filename"] = a.FileName
		}
		if a.ContentID != "" {
			p.header.Set("Content-ID", "<"+strings.Trim(a.ContentID, "<>")+">")
			p.header.SetContentDisposition("inline", disp)
			related = append(related, p)
		} else {
			p.header.SetContentDisposition("attachment", disp)
			mixed = append(mixed, p)
		}
	}
	if len(related) > 0 {
		mixed = append([]*part{multipart("related", related...)}, mixed...)
	}
	root := multipart("mixed", mixed...)

	var h mail.Header
	h.SetDate(now)
	if b.c.From != nil {
		h.SetAddressList("From", []*mail.Address{{Name: b.c.From.Name, Address: b.c.From.Email}})
	}
	if b.c.ReplyTo != nil {
		h.SetAddressList("Reply-To", []*mail.Address{{Name: b.c.ReplyTo.Name, Address: b.c.ReplyTo.Email}})
	}
	h.SetAddressList("To", []*mail.Address{{Name: rc.Name, Address: rc.Email}})
	if b.subject.source != "" {
		s, err := render(b.subject)
		if err != nil {
			return nil, err
		}
		h.SetSubject(s)
	}
	names := make([]string, 0, len(b.headers))
	for name := range b.headers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v, err := render(b.headers[name])
		if err != nil {
			return nil, err
		}
		h.SetText(name, strings.ReplaceAll(strings.ReplaceAll(v, "\r", " "), "\n", " "))
	}
	if !h.Has("Message-Id") {
		if err := h.GenerateMessageID(); err != nil {
			return nil, fmt.Errorf("generate Message-ID: %w", err)
		}
	}
	for f := root.header.Fields(); f.Next(); {
		h.Set(f.Key(), f.Value())
	}
	var buf bytes.Buffer
	w, err := message.CreateWriter(&buf, h.Header)
	if err != nil {
		return nil, fmt.Errorf("build message: %w", err)
	}
	if err := writePart(w, root); err != nil {
		return nil, fmt.Errorf("build message: %w", err)
	}
	return buf.Bytes(), nil
}

func writePart(w *message.Writer, p *part) error {
	if len(p.kids) == 0 {
		if _, err := w.Write(p.body); err != nil {
			return err
		}
		return w.Close()
	}
	for _, k := range p.kids {
		kw, err := w.CreatePart(k.header)
		if err != nil {
			return err
		}
		if err := writePart(kw, k); err != nil {
			return err
		}
	}
	return w.Close()
}
