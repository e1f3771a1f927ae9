package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// DefaultMaxBodyBytes bounds a request body when Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 32 << 20

// Config configures the API handler. Server is required; every other
// field has a working default.
type Config struct {
	// Server is the MTA the API drives.
	Server *mta.Server

	// TrustedHosts lists the client networks that may call every endpoint
	// without credentials (KumoMTA's trusted_hosts). nil means loopback
	// only (127.0.0.0/8 and ::1); an empty non-nil slice trusts nobody.
	TrustedHosts []netip.Prefix

	// Admin authenticates requests from untrusted hosts to the admin
	// endpoints (/api/admin/..., /metrics). nil: such requests get 401.
	Admin *Credentials
	// Inject authenticates requests from untrusted hosts to
	// /api/inject/v1; nil means Admin's credentials apply.
	Inject *Credentials

	// MaxBodyBytes bounds request bodies; larger ones get 413 and nothing
	// is injected. A template may expand to twice this. 0 means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// DeferredQueue, if set, keeps requests accepted with
	// deferred_generation until their messages are spooled, so a crash in
	// between does not lose them: New generates what it finds there (a
	// request cut short is generated again from its start). nil keeps
	// them in memory only. The API does not close it.
	DeferredQueue spool.Spool

	// Metrics, if set, is served at /metrics (see package mta/metrics).
	Metrics http.Handler

	// Live reports whether the server accepts messages, for
	// /api/check-liveness/v1 and before each injection; nil means
	// Server.Live (503 while memory is over the soft limit or the spool
	// is short of space, as KumoMTA).
	Live func() error

	// Hostname names this server in the Received header of injected
	// messages; default os.Hostname().
	Hostname string

	// Logger receives request errors; nil means slog.Default().
	Logger *slog.Logger
}

// Credentials validates the Authorization header of a request, as
// KumoMTA's http_server_validate_auth_basic and
// http_server_validate_auth_bearer events do. A nil function refuses
// that scheme.
type Credentials struct {
	Basic  func(user, password string) bool
	Bearer func(token string) bool
}

// StaticCredentials returns Credentials that accept one user and
// password for Basic auth (none when user is "") and a set of bearer
// tokens. Comparisons take constant time.
func StaticCredentials(user, password string, tokens ...string) *Credentials {
	c := &Credentials{}
	if user != "" {
		c.Basic = func(u, p string) bool {
			return subtle.ConstantTimeCompare([]byte(u), []byte(user))&subtle.ConstantTimeCompare([]byte(p), []byte(password)) == 1
		}
	}
	if len(tokens) > 0 {
		c.Bearer = func(t string) bool {
			ok := 0
			for _, want := range tokens {
				ok |= subtle.ConstantTimeCompare([]byte(t), []byte(want))
			}
			return ok == 1
		}
	}
	return c
}

// API serves mtakit's KumoMTA-compatible HTTP API. It is an http.Handler;
// serve it with net/http. Close waits for deferred generations.
type API struct {
	cfg     Config
	srv     *mta.Server
	log     *slog.Logger
	mux     *http.ServeMux
	trusted []netip.Prefix
	bg      sync.WaitGroup // deferred_generation work
}

// New returns the API for cfg.
func New(cfg Config) (*API, error) {
	if cfg.Server == nil {
		return nil, errors.New("httpapi: Config.Server is required")
	}
	a := &API{cfg: cfg, srv: cfg.Server, log: cfg.Logger, trusted: cfg.TrustedHosts}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.trusted == nil {
		a.trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if a.cfg.MaxBodyBytes <= 0 {
		a.cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if a.cfg.Hostname == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			a.cfg.Hostname = h
		} else {
			a.cfg.Hostname = "localhost"
		}
	}
	injectCreds := cfg.Inject
	if injectCreds == nil {
		injectCreds = cfg.Admin
	}
	m := http.NewServeMux()
	admin := func(h http.HandlerFunc) http.Handler { return a.guard(cfg.Admin, h) }
	m.Handle("POST /api/inject/v1", a.guard(injectCreds, a.inject))
	m.Handle("GET /api/check-liveness/v1", http.HandlerFunc(a.liveness))
	m.Handle("POST /api/admin/bounce/v1", admin(a.bounce))
	m.Handle("GET /api/admin/bounce/v1", admin(a.bounceList))
	m.Handle("DELETE /api/admin/bounce/v1", admin(a.bounceCancel))
	m.Handle("POST /api/admin/suspend/v1", admin(a.suspend))
	m.Handle("GET /api/admin/suspend/v1", admin(a.suspendList))
	m.Handle("DELETE /api/admin/suspend/v1", admin(a.suspendCancel))
	m.Handle("POST /api/admin/suspend-ready-q/v1", admin(a.suspendReady))
	m.Handle("GET /api/admin/suspend-ready-q/v1", admin(a.suspendReadyList))
	m.Handle("DELETE /api/admin/suspend-ready-q/v1", admin(a.suspendReadyCancel))
	m.Handle("POST /api/admin/rebind/v1", admin(a.rebind))
	m.Handle("GET /api/admin/inspect-message/v1", admin(a.inspectMessage))
	m.Handle("GET /api/admin/queue-summary/v1", admin(a.queueSummary))
	if cfg.Metrics != nil {
		m.Handle("GET /metrics", a.guard(cfg.Admin, cfg.Metrics.ServeHTTP))
	}
	a.mux = m
	if err := a.resumeDeferred(); err != nil {
		return nil, err
	}
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Close waits for injections accepted with deferred_generation to be
// spooled. Call it before shutting the mta.Server down.
func (a *API) Close() { a.bg.Wait() }

// guard admits a request from a trusted host, or one whose Authorization
// header creds accept. From an untrusted host, a request without
// credentials gets 403, a malformed header 400 and credentials that creds
// refuse (or no creds at all) 401.
func (a *API) guard(creds *Credentials, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.isTrusted(r) {
			a.audit(r, "trusted host")
			h(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		if auth == "" {
			if creds != nil {
				w.Header().Set("WWW-Authenticate", `Basic realm="mtakit"`)
			}
			writeError(w, http.StatusForbidden, "client %s is not a trusted host and sent no credentials", remoteIP(r))
			return
		}
		scheme, value, _ := strings.Cut(auth, " ")
		var ok bool
		switch {
		case strings.EqualFold(scheme, "Basic"):
			user, pass, good := r.BasicAuth()
			if !good {
				writeError(w, http.StatusBadRequest, "malformed Basic Authorization header")
				return
			}
			ok = creds != nil && creds.Basic != nil && creds.Basic(user, pass)
		case strings.EqualFold(scheme, "Bearer"):
			ok = creds != nil && creds.Bearer != nil && creds.Bearer(strings.TrimSpace(value))
		default:
			writeError(w, http.StatusBadRequest, "unsupported Authorization scheme %q", scheme)
			return
		}
		if !ok {
			a.log.Warn("HTTP API request refused", "method", r.Method, "path", r.URL.Path, "client", remoteIP(r), "scheme", scheme)
			writeError(w, http.StatusUnauthorized, "invalid credentials")
			return
		}
		a.audit(r, scheme)
		h(w, r)
	})
}

// audit logs requests that change state (admin actions, injections) with
// the client and how it was admitted.
func (a *API) audit(r *http.Request, how string) {
	level := slog.LevelInfo
	switch {
	case r.Method == http.MethodGet:
		return
	case r.URL.Path == "/api/inject/v1":
		level = slog.LevelDebug // one per injection: too many for Info
	}
	a.log.Log(r.Context(), level, "HTTP API request", "method", r.Method, "path", r.URL.Path, "client", remoteIP(r), "auth", how)
}

func (a *API) isTrusted(r *http.Request) bool {
	ip, err := netip.ParseAddr(remoteIP(r))
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// live is Config.Live, else the server's.
func (a *API) live() error {
	if a.cfg.Live != nil {
		return a.cfg.Live()
	}
	return a.srv.Live()
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (a *API) liveness(w http.ResponseWriter, _ *http.Request) {
	if err := a.live(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not accepting messages: %v", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "I'm alive\n")
}

// errorBody is the JSON of every error response.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, errorBody{Error: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// decode reads the JSON request body into v strictly: unknown fields,
// trailing data and bodies over the limit are errors. It writes the error
// response itself and reports whether decoding succeeded.
func (a *API) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, a.cfg.MaxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON object")
	}
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF { //nolint:errorlint // io.EOF is returned unwrapped
			if terr == nil {
				err = errors.New("unexpected data after the JSON object")
			} else {
				err = terr
			}
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds %d bytes", tooBig.Limit)
		return false
	}
	writeError(w, http.StatusBadRequest, "invalid JSON request: %v", err)
	return false
}
