package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/mtakit/mtakit/mta"
)

// InjectRequest is the body of POST /api/inject/v1 (KumoMTA's
// InjectV1Request).
type InjectRequest struct {
	// EnvelopeSender is the MAIL FROM address; required ("" is the null
	// reverse-path).
	EnvelopeSender *string `json:"envelope_sender"`
	// Recipients each get one message.
	Recipients []Recipient `json:"recipients"`
	// Content is a JSON string holding a complete RFC 5322 message, or a
	// JSON object in the form of Content from which the message is built.
	Content json.RawMessage `json:"content"`
	// Substitutions are template variables for every recipient;
	// Recipient.Substitutions override them.
	Substitutions map[string]any `json:"substitutions,omitempty"`
	// TemplateDialect is "Jinja" (the default) or "Static" (no
	// templating).
	TemplateDialect string `json:"template_dialect,omitempty"`
	// DeferredGeneration answers at once, after validating the request,
	// compiling its templates and storing it in Config.DeferredQueue, and
	// generates the messages afterwards.
	DeferredGeneration bool `json:"deferred_generation,omitempty"`
	// DeferredSpool is accepted for compatibility; mtakit always spools
	// before answering.
	DeferredSpool bool `json:"deferred_spool,omitempty"`
	// TraceHeaders controls the Received header of generated messages.
	TraceHeaders *TraceHeaders `json:"trace_headers,omitempty"`
}

// Recipient is one recipient of an InjectRequest.
type Recipient struct {
	Email string `json:"email"`
	// Name is the display name, used in the To header built for Content
	// objects and as the template variable "name".
	Name string `json:"name,omitempty"`
	// Substitutions are this recipient's template variables.
	Substitutions map[string]any `json:"substitutions,omitempty"`
	// Metadata is stored in the message's meta under "extra".
	Metadata map[string]any `json:"metadata,omitempty"`
}

// Content describes a message to build (KumoMTA's content object). The
// subject, bodies and header values are templates.
type Content struct {
	Subject     string            `json:"subject,omitempty"`
	From        *Address          `json:"from,omitempty"`
	ReplyTo     *Address          `json:"reply_to,omitempty"`
	TextBody    string            `json:"text_body,omitempty"`
	HTMLBody    string            `json:"html_body,omitempty"`
	AMPHTMLBody string            `json:"amp_html_body,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Attachments []Attachment      `json:"attachments,omitempty"`
}

// Address is a mailbox with an optional display name.
type Address struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

// Attachment is a file attached to a built message. With ContentID it is
// an inline part of the HTML body (multipart/related).
type Attachment struct {
	Data        string `json:"data"`
	ContentType string `json:"content_type"`
	Base64      bool   `json:"base64,omitempty"`
	FileName    string `json:"file_name,omitempty"`
	ContentID   string `json:"content_id,omitempty"`
}

// TraceHeaders selects the trace headers added to injected messages.
type TraceHeaders struct {
	// ReceivedHeader adds a Received header (default true).
	ReceivedHeader *bool `json:"received_header,omitempty"`
	// The supplemental header options are accepted for compatibility and
	// not applied (see the package documentation).
	SupplementalHeader *bool    `json:"supplemental_header,omitempty"`
	HeaderName         string   `json:"header_name,omitempty"`
	IncludeMetaNames   []string `json:"include_meta_names,omitempty"`
}

// InjectResponse is the answer to POST /api/inject/v1.
type InjectResponse struct {
	SuccessCount     int      `json:"success_count"`
	FailCount        int      `json:"fail_count"`
	FailedRecipients []string `json:"failed_recipients"`
	Errors           []string `json:"errors"`
}

// injection is a validated request with its templates compiled.
type injection struct {
	sender  string
	rcpts   []Recipient
	subs    map[string]any
	raw     *template // raw RFC 5322 content, or
	build   *builder  // a message to build
	peer    string
	tracing bool
	limit   int64 // bytes a template may expand to: 2 × MaxBodyBytes
	// admitted: a deferred request, accepted earlier; load shedding
	// must not drop its recipients (mta.Submission.Admitted).
	admitted bool
}

func (a *API) inject(w http.ResponseWriter, r *http.Request) {
	// As KumoMTA: no injection while load shedding or short of disk.
	if err := a.live(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not accepting messages: %v", err)
		return
	}
	var req InjectRequest
	if !a.decode(w, r, &req) {
		return
	}
	inj, code, err := prepareInjection(&req)
	if err != nil {
		writeError(w, code, "%v", err)
		return
	}
	inj.peer = remoteIP(r)
	inj.limit = 2 * a.cfg.MaxBodyBytes
	if req.DeferredGeneration {
		if err := a.deferGeneration(r.Context(), &req, inj); err != nil {
			writeError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		writeJSON(w, http.StatusOK, InjectResponse{FailedRecipients: []string{}, Errors: []string{}})
		return
	}
	writeJSON(w, http.StatusOK, a.generate(r.Context(), inj))
}

// prepareInjection checks everything that can be checked before the first
// message is spooled, so a bad request injects nothing. It returns the
// HTTP status to answer with on error.
func prepareInjection(req *InjectRequest) (*injection, int, error) {
	bad := func(format string, args ...any) (*injection, int, error) {
		return nil, http.StatusBadRequest, fmt.Errorf(format, args...)
	}
	if req.EnvelopeSender == nil {
		return bad("envelope_sender is required")
	}
	if *req.EnvelopeSender != "" && !isAddrSpec(*req.EnvelopeSender) {
		return bad("envelope_sender %q is not an email address", *req.EnvelopeSender)
	}
	if len(req.Recipients) == 0 {
		return bad("recipients: at least one is required")
	}
	for i, rc := range req.Recipients {
		if !isAddrSpec(rc.Email) {
			return bad("recipients[%d].email %q is not an email address", i, rc.Email)
		}
	}
	dialect := req.TemplateDialect
	switch dialect {
	case "":
		dialect = DialectJinja
	case DialectJinja, DialectStatic:
	default:
		return bad("template_dialect %q is not supported (want %q or %q)", dialect, DialectJinja, DialectStatic)
	}
	inj := &injection{sender: *req.EnvelopeSender, rcpts: req.Recipients, subs: req.Substitutions, tracing: true}
	if th := req.TraceHeaders; th != nil && th.ReceivedHeader != nil {
		inj.tracing = *th.ReceivedHeader
	}
	content := bytes.TrimSpace(req.Content)
	var err error
	switch {
	case len(content) == 0 || string(content) == "null":
		return bad("content is required")
	case content[0] == '"':
		var raw string
		if err := json.Unmarshal(content, &raw); err != nil {
			return bad("content: %v", err)
		}
		if inj.raw, err = compileTemplate("content", raw, dialect); err != nil {
			return nil, http.StatusUnprocessableEntity, err
		}
	case content[0] == '{':
		var c Content
		dec := json.NewDecoder(bytes.NewReader(content))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return bad("content: %v", err)
		}
		inj.build, err = newBuilder(&c, dialect)
		var ce *contentError
		if errors.As(err, &ce) {
			return bad("%v", err)
		}
		if err != nil {
			return nil, http.StatusUnprocessableEntity, err
		}
	default:
		return bad("content must be a string (an RFC 5322 message) or an object")
	}
	return inj, 0, nil
}

// generate builds and spools one message per recipient.
func (a *API) generate(ctx context.Context, inj *injection) InjectResponse {
	resp := InjectResponse{FailedRecipients: []string{}, Errors: []string{}}
	for _, rc := range inj.rcpts {
		if err := a.injectOne(ctx, inj, rc); err != nil {
			resp.FailCount++
			resp.FailedRecipients = append(resp.FailedRecipients, rc.Email)
			resp.Errors = append(resp.Errors, fmt.Sprintf("%s: %v", rc.Email, err))
			continue
		}
		resp.SuccessCount++
	}
	return resp
}

func (a *API) injectOne(ctx context.Context, inj *injection, rc Recipient) error {
	vars := make(map[string]any, len(inj.subs)+len(rc.Substitutions)+3)
	maps.Copy(vars, inj.subs)
	maps.Copy(vars, rc.Substitutions)
	vars["email"] = rc.Email
	vars["name"] = rc.Name
	vars["to_header"] = (&mail.Address{Name: rc.Name, Address: rc.Email}).String()
	now := time.Now()
	var data []byte
	if inj.raw != nil {
		text, err := inj.raw.render(vars, inj.limit)
		if err != nil {
			return err
		}
		data = crlf(text)
	} else {
		var err error
		if data, err = inj.build.build(vars, rc, now, inj.limit); err != nil {
			return err
		}
	}
	if inj.tracing {
		rcv := fmt.Sprintf("Received: from %s\r\n\tby %s (mtakit) with HTTP\r\n\tfor <%s>; %s\r\n", inj.peer, a.cfg.Hostname, rc.Email, now.Format(time.RFC1123Z))
		data = append([]byte(rcv), data...)
	}
	sub := &mta.Submission{Sender: inj.sender, Recipients: []string{rc.Email}, Data: data, Protocol: "HTTP", Admitted: inj.admitted}
	if len(rc.Metadata) > 0 {
		sub.Meta = map[string]any{"extra": rc.Metadata}
	}
	_, err := a.srv.Inject(ctx, sub)
	return err
}

// isAddrSpec reports whether s is a bare address local@domain: no
// display name, angle brackets or surrounding space.
func isAddrSpec(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s && strings.Contains(s, "@")
}

// crlf returns text with every line ending in CRLF, ending in one.
func crlf(text string) []byte {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return []byte(strings.ReplaceAll(text, "\n", "\r\n"))
}
