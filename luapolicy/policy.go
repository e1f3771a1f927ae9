package luapolicy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/mta/queues"
	"github.com/mtakit/mtakit/shaping"
)

// Options configures Load. The zero value is ready to use.
type Options struct {
	// Logger receives kumo.log_* output and warnings; nil means
	// slog.Default().
	Logger *slog.Logger

	// States bounds the number of Lua states kept to run event handlers
	// (each has evaluated init.lua; one goroutine uses a state at a time).
	// 0 means 2 × GOMAXPROCS.
	States int

	// Check makes Load go on after a bad parameter or a helper file that
	// fails to load, so that every such problem is reported at once, and
	// makes it load every key and certificate the policy names. Load then
	// returns a *CheckError listing all problems (and no Policy) unless
	// the policy is clean. A Lua syntax or runtime error still ends the
	// evaluation. Nothing is opened or bound either way: Load never opens
	// spools or listeners.
	Check bool

	// Resolver, if set, is used for the MX lookups that
	// policy-extras.shaping makes when it loads shaping files (mx_rollup)
	// and by ServerOptions when the base options have none. Otherwise a
	// resolver is built from kumo.dns.configure_resolver, or from the
	// system's resolv.conf.
	Resolver *egress.Resolver

	// Timeout bounds the evaluation of init.lua and its init event, and
	// each call of a lookup handler that has no context of its own
	// (get_queue_config, get_egress_source, get_egress_pool), so that a
	// policy stuck in a loop fails instead of hanging. 0 means 1 minute.
	Timeout time.Duration

	// DKIMKeyDir replaces /opt/kumomta/etc/dkim as the directory in which
	// policy-extras.dkim_sign looks for DOMAIN/SELECTOR.key files.
	DKIMKeyDir string
}

// CheckError lists every problem found by a Load with Options.Check.
type CheckError struct {
	File     string
	Errors   []error
	Warnings []string
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", e.File, len(e.Errors))
	for _, err := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(strings.ReplaceAll(err.Error(), "\n", "\n    "))
	}
	return b.String()
}

// Unwrap returns the individual errors.
func (e *CheckError) Unwrap() []error { return e.Errors }

// SpoolConfig is one kumo.define_spool call.
type SpoolConfig struct {
	Name  string // "data" or "meta"
	Path  string
	Kind  string // "LocalDisk" or "RocksDB", as written; both open a badger spool
	Flush bool
}

// LogConfig is the kumo.configure_local_logs call.
type LogConfig struct {
	Local   logs.LocalConfig
	Headers []string // headers = {...}
	Meta    []string // meta = {...}
}

// HTTPListener is one kumo.start_http_listener call. mtakit's HTTP API is
// built separately; the policy only records it.
type HTTPListener struct {
	Listen           string
	Hostname         string
	UseTLS           bool
	TLSCertificate   string // path, "" = self-signed
	TLSPrivateKey    string
	RequestBodyLimit int64
	TrustedHosts     []string
	Line             string // "init.lua:12:" where it was called
}

// Policy is a loaded init.lua: the configuration its init event produced
// and the event handlers that implement mtakit's interfaces. It is safe
// for concurrent use. Close releases its Lua states.
type Policy struct {
	file  string
	dir   string
	opts  Options
	log   *slog.Logger
	proto *lua.FunctionProto

	states chan *state
	slots  chan struct{} // one token per state that may still be created

	mu          sync.Mutex
	errs        []error
	warnings    []string
	warned      map[string]bool
	tracked     map[string]bool // files the policy read (for Live.Watch)
	spools      []SpoolConfig
	logCfg      *LogConfig
	classifier  *bounce.Classifier
	esmtp       []ListenerConfig
	http        []HTTPListener
	logHooks    []LogHook
	resolver    *egress.ResolverOptions
	events      map[string]int  // number of handlers per event (primary state)
	poolNames   map[string]bool // pool names known at load time
	extraShaper extraShaper     // set by policy-extras.shaping

	// Set by the policy-extras helpers of the primary state.
	sources        *egress.Sources
	queues         *queues.Config
	shapingHelpers []*shapingHelper
	resolverObj    *egress.Resolver
	// When a helper's handler is the only handler of its event, the hooks
	// call the Go implementation directly.
	directShaper  *shaping.Shaping
	directQueues  *queues.Config
	directDomains domainTable

	// caches shared by all states
	files       fileCache
	signers     ttlCache[signerValue]
	constructed ttlCache[any]

	queueMemo  ttlCache[*queueConfigValue]
	pathMemo   ttlCache[*pathValue]
	domainMemo ttlCache[*listener.ListenerDomain]
	sourceMemo ttlCache[*sourceValue]
	poolMemo   ttlCache[*poolValue]
	pools      sync.Map // name -> *lazyPool

	memos     memoRegistry     // kumo.memoize caches of every state (memory.go)
	memLimits mta.MemoryLimits // kumo.set_memory_* (memory.go)

	poolMapOnce sync.Once
	poolMapVal  map[string]egress.Pool
}

// ListenerConfig is one kumo.start_esmtp_listener call: the listener
// configuration and where in init.lua it was made.
type ListenerConfig struct {
	listener.Config
	Line string
}

// Load evaluates the policy file path and its init event and returns the
// loaded Policy. Errors name the file and line (a Lua error, an unknown
// kumo function, an unknown parameter or a bad value, a helper's data file
// that does not load). With opts.Check every such problem is collected
// into a *CheckError.
func Load(path string, opts Options) (*Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("luapolicy: %w", err)
	}
	return load(path, string(src), opts)
}

// LoadString evaluates a policy given as text; name is used as its file
// name in errors and to resolve relative paths.
func LoadString(name, src string, opts Options) (*Policy, error) {
	return load(name, src, opts)
}

func load(path, src string, opts Options) (*Policy, error) {
	chunk, err := parse.Parse(strings.NewReader(src), path)
	if err != nil {
		return nil, checkFail(path, opts, syntaxError(path, err))
	}
	proto, err := lua.Compile(chunk, path)
	if err != nil {
		return nil, checkFail(path, opts, fmt.Errorf("luapolicy: %s: %v", path, err))
	}
	n := opts.States
	if n <= 0 {
		n = 2 * runtime.GOMAXPROCS(0)
	}
	p := &Policy{
		file:      path,
		dir:       filepath.Dir(path),
		opts:      opts,
		log:       opts.Logger,
		proto:     proto,
		states:    make(chan *state, n),
		slots:     make(chan struct{}, n),
		events:    map[string]int{},
		poolNames: map[string]bool{},
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	for range n - 1 {
		p.slots <- struct{}{}
	}
	p.track(path)
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout())
	defer cancel()
	s, err := p.newStateCtx(ctx, true)
	if err == nil {
		s.L.SetContext(ctx)
		err = s.runInit()
		s.L.RemoveContext()
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("luapolicy: %s: the init event did not finish within %v (a loop?): %w", path, p.timeout(), err)
		}
	}
	if err == nil {
		err = p.finishHelpers(s)
	}
	if err == nil && opts.Check {
		for _, fn := range s.handlers["validate_config"] {
			if _, verr := s.call(fn); verr != nil {
				p.addError(fmt.Errorf("validate_config: %w", verr))
			}
		}
	}
	if err != nil {
		p.addError(err)
	}
	p.mu.Lock()
	errs := p.errs
	p.mu.Unlock()
	if opts.Check {
		if len(errs) == 0 {
			p.checkResources()
			p.mu.Lock()
			errs = p.errs
			p.mu.Unlock()
		}
		if len(errs) > 0 {
			if s != nil {
				s.L.Close()
			}
			return nil, &CheckError{File: path, Errors: errs, Warnings: p.Warnings()}
		}
	} else if len(errs) > 0 {
		if s != nil {
			s.L.Close()
		}
		return nil, errs[0]
	}
	for k, fns := range s.handlers {
		p.events[k] = len(fns)
	}
	p.states <- s
	return p, nil
}

func checkFail(path string, opts Options, err error) error {
	if opts.Check {
		return &CheckError{File: path, Errors: []error{err}}
	}
	return err
}

func (p *Policy) timeout() time.Duration {
	if p.opts.Timeout > 0 {
		return p.opts.Timeout
	}
	return time.Minute
}

// File returns the policy file name.
func (p *Policy) File() string { return p.file }

// Warnings returns the warnings issued while loading: parameters mtakit
// accepts but does not implement, and similar.
func (p *Policy) Warnings() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.warnings...)
}

func (p *Policy) addError(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

func (p *Policy) warn(msg string) {
	p.mu.Lock()
	p.warnings = append(p.warnings, msg)
	p.mu.Unlock()
	p.log.Warn(msg, "policy", p.file)
}

// track records files the policy reads.
func (p *Policy) track(paths ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tracked == nil {
		p.tracked = map[string]bool{}
	}
	for _, f := range paths {
		p.tracked[f] = true
	}
}

// Files returns the files the policy read while loading: init.lua and the
// data files of helpers and kumo.toml_load / json_load.
func (p *Policy) Files() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return sortedKeys(p.tracked)
}

// HasHandler reports whether the policy registered a handler for event.
func (p *Policy) HasHandler(event string) bool { return p.events[event] > 0 }

// Close releases the Lua states. Hooks called afterwards fail.
func (p *Policy) Close() {
	for {
		select {
		case s := <-p.states:
			s.L.Close()
		default:
			return
		}
	}
}

// acquire returns a state for the calling goroutine, creating one when
// none is free and fewer than Options.States exist.
func (p *Policy) acquire(ctx context.Context) (*state, error) {
	select {
	case s := <-p.states:
		return s, nil
	default:
	}
	select {
	case s := <-p.states:
		return s, nil
	case <-p.slots:
		s, err := p.newState(false)
		if err != nil {
			p.slots <- struct{}{}
			return nil, err
		}
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *Policy) release(s *state) {
	if s.L.Context() != nil {
		s.L.RemoveContext()
	}
	if s.L.GetTop() != 0 {
		s.L.SetTop(0)
	}
	p.states <- s
}

// withState runs fn on a pooled state.
func (p *Policy) withState(ctx context.Context, fn func(s *state) error) error {
	if ctx == nil {
		ctx = context.Background()
	}
	s, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer p.release(s)
	if ctx.Done() != nil {
		// Only a cancellable context is worth gopher-lua's per-instruction
		// check.
		s.L.SetContext(ctx)
	}
	return fn(s)
}

// ttlCache memoizes pure lookups per argument tuple for a time to live.
type ttlCache[V any] struct {
	mu sync.Mutex
	m  map[string]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

const maxMemoEntries = 1 << 16

func (c *ttlCache[V]) get(key string, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || now.After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(key string, v V, ttl time.Duration, now time.Time) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxMemoEntries {
		c.m = map[string]ttlEntry[V]{}
	}
	c.m[key] = ttlEntry[V]{v: v, expires: now.Add(ttl)}
}

// fileCache keeps data files read by helpers, so that the states of one
// policy share one parsed copy.
type fileCache struct {
	mu sync.Mutex
	m  map[string]*fileEntry
}

type fileEntry struct {
	once sync.Once
	v    any
	err  error
}

// load returns the value built by build for key, building it once.
func (c *fileCache) load(key string, build func() (any, error)) (any, error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*fileEntry{}
	}
	e, ok := c.m[key]
	if !ok {
		e = &fileEntry{}
		c.m[key] = e
	}
	c.mu.Unlock()
	e.once.Do(func() { e.v, e.err = build() })
	return e.v, e.err
}

// luaError turns an error from a protected call into a Go error. A
// kumo.reject value becomes the *rejectError it carries.
func luaError(err error) error {
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) {
		if ud, ok := apiErr.Object.(*lua.LUserData); ok {
			if r, ok := ud.Value.(*rejectError); ok {
				return r
			}
		}
		msg := apiErr.Object.String()
		if apiErr.Cause != nil && msg == "" {
			msg = apiErr.Cause.Error()
		}
		if tb := apiErr.StackTrace; tb != "" && !strings.Contains(msg, "stack traceback") {
			return &LuaError{Message: msg, Traceback: tb}
		}
		return &LuaError{Message: msg}
	}
	return err
}

// LuaError is an error raised while running policy code; Message starts
// with "file:line:" where Lua knows it.
type LuaError struct {
	Message   string
	Traceback string
}

func (e *LuaError) Error() string { return e.Message }

// syntaxError formats a parse error as "file:line:column: syntax error
// near 'token': message".
func syntaxError(path string, err error) error {
	var pe *parse.Error
	if errors.As(err, &pe) {
		msg := strings.TrimSpace(pe.Message)
		if pe.Pos.Line == parse.EOF {
			return fmt.Errorf("%s: syntax error at end of file: %s", path, msg)
		}
		return fmt.Errorf("%s:%d:%d: syntax error near '%s': %s", path, pe.Pos.Line, pe.Pos.Column, pe.Token, msg)
	}
	return fmt.Errorf("%s: %v", path, err)
}
