// Package httpapi serves mtakit's HTTP API, compatible with KumoMTA's
// (docs/reference/http in KumoMTA): message injection, the admin
// endpoints behind kcli, liveness and, when configured, Prometheus
// metrics. API is an http.Handler; run it with net/http:
//
//	api, _ := httpapi.New(httpapi.Config{Server: srv})
//	go http.Serve(ln, api)
//
// # Endpoints
//
//   - POST /api/inject/v1: InjectRequest → InjectResponse. One message per
//     recipient; content is a raw RFC 5322 message or a Content object
//     built into MIME with go-message (text, AMP and HTML alternatives,
//     inline attachments in multipart/related, others in
//     multipart/mixed; a To header from the recipient, Date and
//     Message-ID). Templates use Jinja syntax ({{ name }}, filters,
//     {% if %}), rendered per recipient by gonja with the request's
//     substitutions, the recipient's, and "email", "name" and
//     "to_header". Each message goes through mta.Server.Inject: the
//     MessageReceived hook (http_message_generated), DKIM signing and the
//     durable spool, before the 200.
//   - POST/GET/DELETE /api/admin/bounce/v1, /api/admin/suspend/v1 and
//     /api/admin/suspend-ready-q/v1: create, list and cancel rules
//     (mta.Server.BounceQueues, SuspendQueues, SuspendReadyQueue).
//   - POST /api/admin/rebind/v1: move matching mail to another queue by
//     setting meta ("queue", "routing_domain", ...), and with
//     always_flush make it due now (mta.Server.Rebind).
//   - GET /api/admin/inspect-message/v1?id=ID&want_body=true.
//   - GET /api/admin/queue-summary/v1: scheduled and ready queues.
//   - GET /api/check-liveness/v1: 200, or 503 while the server refuses
//     mail (mta.Server.Live: memory over the soft limit, spool short of
//     space); inject answers 503 then too. With Config.Metrics, GET
//     /metrics.
//
// # Validation and errors
//
// Request bodies are decoded strictly: unknown fields, trailing data and
// malformed JSON get 400, bodies over Config.MaxBodyBytes 413, and a
// template that does not compile 422, always with a JSON body
// {"error": "..."}. For inject, everything that can be checked before
// spooling (addresses, dialect, content shape, template syntax) is
// checked first, so such a request injects nothing. Failures of single
// recipients after that (a template error at render time, a rejection
// by policy) are reported in the response's fail_count,
// failed_recipients and errors, as KumoMTA does. A template may expand
// to at most twice MaxBodyBytes, and a panic inside the template engine
// (gonja panics on an integer division by zero) is such a recipient
// failure, never a crash. Rendering is not otherwise bounded in time, so
// give inject credentials only to trusted clients.
//
// # Access control
//
// Requests from Config.TrustedHosts (default loopback) pass. Others need
// an Authorization header that Config.Admin (or, for inject,
// Config.Inject) accepts: Basic or Bearer, checked by functions as
// KumoMTA's http_server_validate_auth_* events do. Without credentials an
// untrusted client gets 403; with wrong ones 401; with a malformed
// header 400.
//
// # Deviations from KumoMTA
//
//   - Untrusted requests without credentials get 403, not 401.
//   - template_dialect "Handlebars" is refused (400). Jinja is gonja's
//     implementation of Jinja2, close to KumoMTA's minijinja but not
//     identical in filters; {% include %} and {% extends %} cannot load
//     anything.
//   - deferred_generation answers 200 with success_count 0 after
//     validation and generates in the background. The request is kept in
//     Config.DeferredQueue when one is set (KumoMTA queues it to
//     generator.kumomta.internal), otherwise only in memory.
//     deferred_spool is accepted and ignored: mtakit always spools before
//     answering.
//   - trace_headers: only received_header applies (a Received header "from
//     CLIENT-IP by HOSTNAME with HTTP"); the supplemental header options
//     are accepted and not applied.
//   - Bounce answers after bouncing the queued mail, so total_bounced is
//     the real count; "bounced" per queue is always empty.
//     suppress_logging (bounce) and trigger_rebind_event (rebind) are
//     refused.
//   - Rules live in memory, as in KumoMTA: a restart lifts them.
//   - queue-summary is an mtakit endpoint; kcli's command reads metrics.
package httpapi
