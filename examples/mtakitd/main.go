// Command mtakitd is mtakit's bundled MTA.
//
// With no flags it runs the default policy: ESMTP on 127.0.0.1:2525,
// relaying for loopback clients, a durable badger spool and
// KumoMTA-format logs under ./mtakit-data (flushed every second, so
// records are readable at once), a self-signed certificate for STARTTLS
// generated on first start, and the HTTP API (inject, admin, /metrics) on
// 127.0.0.1:8000.
//
//	go run ./examples/mtakitd
//	go run ./examples/mtakitd -listen 127.0.0.1:2525 -data /var/spool/mtakit
//	go run ./examples/mtakitd dkim-keygen -domain example.com -selector s1
//	go run ./examples/mtakitd queue-summary
//	go run ./examples/mtakitd logs -f
//
// The subcommands queue-summary, bounce, suspend, rebind, flush,
// inspect-message and their -list/-cancel forms call the HTTP API of a
// running mtakitd like KumoMTA's kcli (see cli.go); logs prints and
// follows a log directory like KumoMTA's tailer.
//
// SIGINT or SIGTERM shuts it down gracefully: no new connections, running
// transactions finish, queued mail stays in the spool for the next start.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/mta/metrics"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			os.Exit(2) // the flag package has printed it, with the usage
		}
		fmt.Fprintln(os.Stderr, "mtakitd:", err)
		os.Exit(1)
	}
}

// usageError is a command-line error the flag package has already
// reported on stderr.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// config is the parsed command line.
type config struct {
	listen    string
	http      string
	httpSet   bool // -http given: with -policy, serve it besides the policy's HTTP listeners
	dataDir   string
	smarthost string
	sh        smarthostFlags
	policy    string
	hostname  string
	tlsCert   string
	tlsKey    string
	dkimData  string
	dkimKeys  string
	dsn       bool
	trustAD   bool
	logHook   string
	logSync   bool
	hold      bool
	cpuProf   string
	batch     listener.BatchHandling
	logLevel  slog.Level
	shutdown  time.Duration
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("mtakitd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:2525", "ESMTP listen `address`")
	fs.StringVar(&c.http, "http", "127.0.0.1:8000", "HTTP API listen `address` (inject, admin, /metrics; \"\" disables); clients off loopback need $"+tokenEnv)
	fs.StringVar(&c.dataDir, "data", "mtakit-data", "`directory` for the spool, logs and generated TLS certificate")
	fs.StringVar(&c.smarthost, "smarthost", "", "route all outbound mail to `host:port`")
	c.sh.register(fs)
	fs.StringVar(&c.policy, "policy", "", "run the KumoMTA-style init.lua `file` (its spools, logs, listeners and hooks replace the default policy)")
	fs.StringVar(&c.hostname, "hostname", "", "server `name` for greetings and Received headers (default: os.Hostname)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "STARTTLS certificate `file` (default: self-signed, generated under -data)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "STARTTLS private key `file`")
	fs.StringVar(&c.dkimData, "dkim", "", "KumoMTA dkim_data.toml `file`: DKIM-sign received mail by From domain")
	fs.StringVar(&c.dkimKeys, "dkim-keys", "", "key `directory` for -dkim (default /opt/kumomta/etc/dkim, KumoMTA's)")
	fs.BoolVar(&c.logSync, "log-sync-reception", false, "answer 250 only once the message's Reception log record is fsynced (concurrent receptions share one fsync); see BENCHMARKS.md for the cost")
	fs.StringVar(&c.logHook, "log-hook", "", "POST every log record, batched as JSON, to `URL` (durable queue under -data)")
	fs.BoolVar(&c.trustAD, "dns-trust-ad", false, "the resolvers of /etc/resolv.conf validate DNSSEC and are reached over a trusted path: believe their AD bit, so DANE (enable_dane) can apply")
	fs.BoolVar(&c.dsn, "dsn", false, "send delivery status notifications (RFC 3464) to senders of bounced or expired mail")
	// -hold is for benchmarks and tests: internal/cmd/mtabench measures
	// memory per queued message and spool recovery time with it.
	fs.BoolVar(&c.hold, "hold", false, "testing: receive and queue mail but never deliver it (mta.Options.HoldDelivery)")
	// -cpuprofile is for benchmarks: mtabench -mtakitd-profile profiles
	// the daemon under load with it.
	fs.StringVar(&c.cpuProf, "cpuprofile", "", "testing: write a CPU profile of the whole run (until shutdown) to `file`")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 30*time.Second, "how long to let transactions finish on shutdown")
	level := fs.String("log-level", "info", "operational log `level`: debug, info, warn, error")
	batch := fs.String("batch-handling", string(listener.BifurcateAlways), "how a transaction with several recipients is queued (KumoMTA's batch_handling): `BifurcateAlways` (one message per recipient, sharing one stored body) or BatchByDomain (one message per recipient domain, delivered in one transaction)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: mtakitd [flags]\n       mtakitd check init.lua\n       mtakitd dkim-keygen -domain D -selector S [-type rsa|ed25519] [-bits N] [-out DIR]\n\nflags:\n")
		fs.PrintDefaults()
		fmt.Fprint(stderr, cliUsage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { c.httpSet = c.httpSet || f.Name == "http" })
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	switch c.batch = listener.BatchHandling(*batch); c.batch {
	case listener.BifurcateAlways, listener.BatchByDomain:
	default:
		return nil, fmt.Errorf("-batch-handling %q: want %s or %s", *batch, listener.BifurcateAlways, listener.BatchByDomain)
	}
	for name, v := range map[string]string{"-listen": c.listen, "-http": c.http} {
		if name == "-http" && v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			return nil, fmt.Errorf("%s %q: want host:port: %w", name, v, err)
		}
		if _, err := net.ResolveTCPAddr("tcp", v); err != nil {
			return nil, fmt.Errorf("%s %q: %w", name, v, err)
		}
	}
	if c.smarthost != "" {
		if _, port, err := net.SplitHostPort(c.smarthost); err != nil || port == "" {
			return nil, fmt.Errorf("-smarthost %q: want host:port", c.smarthost)
		}
	}
	if err := c.sh.check(c.smarthost); err != nil {
		return nil, err
	}
	if c.logHook != "" && !validURL(c.logHook) {
		return nil, fmt.Errorf("-log-hook %q: want an http or https URL", c.logHook)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("-tls-cert and -tls-key must be given together")
	}
	if c.dataDir == "" {
		return nil, errors.New("-data must not be empty")
	}
	for name, path := range map[string]string{"-dkim": c.dkimData, "-tls-cert": c.tlsCert, "-tls-key": c.tlsKey, "-policy": c.policy} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return c, nil
}

// checkPortsFree binds and releases the listen addresses, so that a busy
// port is reported before anything is created or opened.
func checkPortsFree(c *config) error {
	for name, addr := range map[string]string{"-listen": c.listen, "-http": c.http} {
		if addr == "" || name == "-listen" && c.policy != "" {
			continue // with -policy, the policy's start_esmtp_listener calls name the addresses
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s %s: %w", name, addr, err)
		}
		ln.Close()
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "dkim-keygen" {
		return runDKIMKeygen(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "check" {
		return runCheck(args[1:], stdout)
	}
	if cmd := cliCommand(firstArg(args)); cmd != nil {
		if err := cmd(args[1:], stdout, stderr); !errors.Is(err, flag.ErrHelp) {
			return err
		}
		return nil
	}
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := checkPortsFree(c); err != nil {
		return err
	}
	if c.cpuProf != "" {
		f, err := os.Create(c.cpuProf)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := metrics.New()
	var (
		srv  *mta.Server
		addr net.Addr

		policyHTTPListeners []luapolicy.HTTPListener
	)
	if c.policy != "" {
		srv, addr, policyHTTPListeners, err = startPolicy(ctx, c, log, m)
	} else {
		srv, addr, err = start(c, log, m)
	}
	if err != nil {
		return err
	}
	if c.policy != "" && len(policyHTTPListeners) > 0 && !c.httpSet {
		c.http = "" // the policy's kumo.start_http_listener replaces the default -http
	}
	httpAddr, stopHTTP, err := serveHTTP(c, srv, m, log)
	if err != nil {
		srv.Close()
		return err
	}
	if c.policy != "" {
		stopPolicyHTTP, err := servePolicyHTTP(policyHTTPListeners, srv, m, log)
		if err != nil {
			stopHTTP(context.Background())
			srv.Close()
			return err
		}
		stopBoth := stopHTTP
		stopHTTP = func(ctx context.Context) error { return errors.Join(stopBoth(ctx), stopPolicyHTTP(ctx)) }
	}
	log.Info("mtakitd ready", "smtp", addr, "http", httpAddr, "data", c.dataDir)
	<-ctx.Done()
	stop()
	log.Info("shutting down", "timeout", c.shutdown)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdown)
	defer cancel()
	return errors.Join(stopHTTP(sctx), srv.Shutdown(sctx))
}

// start opens the spools and logs, builds the server and binds its
// listener. On error everything opened so far is closed again.
func start(c *config, log *slog.Logger, m *metrics.Metrics) (srv *mta.Server, addr net.Addr, err error) {
	if err := os.MkdirAll(c.dataDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("data directory: %w", err)
	}
	var closers []io.Closer
	defer func() {
		if err != nil {
			for _, cl := range closers {
				cl.Close()
			}
		}
	}()
	// One badger database holds both spools, so data and meta of a
	// message become durable with one sync.
	dataSpool, metaSpool, err := badgerspool.OpenPair(filepath.Join(c.dataDir, "spool"), badgerspool.Options{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, dataSpool, metaSpool)
	logSink, err := logs.OpenLocal(logs.LocalConfig{LogDir: filepath.Join(c.dataDir, "logs"), MaxSegmentDuration: time.Minute, FlushInterval: time.Second, SyncReception: c.logSync, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers, logSink)
	sink, err := withLogHook(c, logSink, log)
	if err != nil {
		return nil, nil, err
	}
	closers = append(closers[:len(closers)-1], sink)

	tlsCfg, err := tlsConfig(c)
	if err != nil {
		return nil, nil, err
	}
	opts := mta.Options{
		Hostname:   c.hostname,
		DataSpool:  dataSpool,
		MetaSpool:  metaSpool,
		Log:        m.Sink(sink),
		LogHeaders: []string{"Subject", "Message-ID"},
		Logger:     log,
		Classifier: bounce.DefaultClassifier(),
		DSN:        c.dsn,
		// -hold: queue everything, deliver nothing (benchmarks only).
		HoldDelivery: c.hold,
	}
	if c.trustAD {
		r, err := egress.NewResolver(egress.ResolverOptions{Logger: log, TrustAD: true})
		if err != nil {
			return nil, nil, fmt.Errorf("-dns-trust-ad: %w", err)
		}
		opts.Resolver = r
	}
	if c.smarthost != "" {
		if err := useSmarthost(&opts, c.smarthost, &c.sh); err != nil {
			return nil, nil, err
		}
	}
	if c.dkimData != "" {
		signer, err := dkim.Load(dkim.LoadOptions{KeyDir: c.dkimKeys}, c.dkimData)
		if err != nil {
			return nil, nil, err
		}
		// Load reads keys lazily; check them now so a missing key is a
		// start-up error, not a rejected message.
		if err := signer.Check(); err != nil {
			return nil, nil, err
		}
		opts.Signer = signer
	}
	srv, err = mta.New(opts)
	if err != nil {
		return nil, nil, err
	}
	m.Watch(srv)
	// From here the server owns the spools and the log.
	closers = []io.Closer{srv}
	addr, err = srv.ListenSMTP(listener.Config{Addr: c.listen, TLS: tlsCfg, BatchHandling: c.batch})
	if err != nil {
		return nil, nil, err
	}
	return srv, addr, nil
}

func tlsConfig(c *config) (*tls.Config, error) {
	if c.tlsCert != "" {
		return listener.LoadTLS(c.tlsCert, c.tlsKey)
	}
	host := c.hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if host != "" && !strings.EqualFold(host, "localhost") {
		hosts = append([]string{host}, hosts...)
	}
	dir := filepath.Join(c.dataDir, "tls")
	return listener.EnsureSelfSigned(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), hosts...)
}

// useSmarthost routes every queue to one host (KumoMTA's mx_list) and
// allows that host even on loopback, which the default prohibited_hosts
// refuse so that broken DNS cannot loop mail back into this server. The
// -smarthost-* flags set its TLS mode, AUTH credentials and CAs.
func useSmarthost(opts *mta.Options, hostport string, sh *smarthostFlags) error {
	secured := shaping.Default()
	tlsCfg, err := sh.apply(&secured)
	if err != nil {
		return err
	}
	if tlsCfg != nil {
		opts.TLS = tlsCfg
	}
	list := []string{hostport}
	opts.Policy.QueueConfig = func(string, string, string, string, string) (mta.QueueConfig, error) {
		return mta.QueueConfig{Protocol: mta.Protocol{MXList: list}}, nil
	}
	site := egress.MXListSiteName(list)
	opts.Shaper = shaping.PathFunc(func(_ context.Context, _, pathSite, _ string) (shaping.PathConfig, error) {
		pc := shaping.Default()
		if pathSite == site {
			pc = secured
			pc.ProhibitedHosts = []netip.Prefix{} // empty, not nil: nil means the default set
		}
		return pc, nil
	})
	return nil
}
