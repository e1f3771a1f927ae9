package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/mta/metrics"
	"github.com/mtakit/mtakit/spool/badgerspool"
)

// startPolicy runs an init.lua policy (-policy): the spools, logs,
// listeners and hooks come from the policy. -hostname, -dsn, -hold and
// -dkim-keys apply; when the policy defines no spool, the badger spool
// under -data is used. It returns the first ESMTP listener's address.
//
// Until ctx ends, the policy is reloaded on SIGHUP and when init.lua or a
// file it read changes (checked every 2 seconds); a policy that fails to
// load is logged and the running one kept.
func startPolicy(ctx context.Context, c *config, log *slog.Logger, m *metrics.Metrics) (*mta.Server, net.Addr, []luapolicy.HTTPListener, error) {
	live, err := luapolicy.LoadLive(c.policy, luapolicy.Options{Logger: log, DKIMKeyDir: c.dkimKeys})
	if err != nil {
		return nil, nil, nil, err
	}
	p := live.Policy()
	base := mta.Options{Hostname: c.hostname, Logger: log, DSN: c.dsn, HoldDelivery: c.hold}
	if len(p.Spools()) == 0 {
		if err := os.MkdirAll(c.dataDir, 0o755); err != nil {
			return nil, nil, nil, fmt.Errorf("data directory: %w", err)
		}
		d, m, err := badgerspool.OpenPair(filepath.Join(c.dataDir, "spool"), badgerspool.Options{Logger: log})
		if err != nil {
			return nil, nil, nil, err
		}
		base.DataSpool, base.MetaSpool = d, m
		log.Info("the policy defines no spool; using the -data spool", "dir", filepath.Join(c.dataDir, "spool"))
	}
	if lc := p.LogConfig(); lc != nil {
		cfg := lc.Local
		cfg.SyncReception = cfg.SyncReception || c.logSync
		local, err := logs.OpenLocal(cfg)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("kumo.configure_local_logs: %w", err)
		}
		base.Log = m.Sink(local)
	} else {
		if c.logSync {
			log.Warn("-log-sync-reception: the policy configures no local log (kumo.configure_local_logs); nothing to sync")
		}
		base.Log = m.Sink(logs.Discard)
	}
	srv, addrs, err := live.Start(base)
	if err != nil {
		if base.DataSpool != nil {
			base.DataSpool.Close()
			base.MetaSpool.Close()
		}
		if base.Log != nil {
			base.Log.Close()
		}
		return nil, nil, nil, err
	}
	m.Watch(srv)
	report := func(err error) {
		if err != nil {
			log.Error("policy reload failed; the running policy stays in force", "err", err)
			return
		}
		log.Info("policy reloaded", "policy", c.policy, "epoch", live.Epoch())
	}
	go live.Watch(ctx, 2*time.Second, report)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				report(live.Reload())
			}
		}
	}()
	if len(addrs) == 0 {
		log.Warn("the policy starts no ESMTP listener (kumo.start_esmtp_listener in the init event)")
		return srv, nil, p.HTTPListeners(), nil
	}
	return srv, addrs[0], p.HTTPListeners(), nil
}

// runCheck implements "mtakitd check init.lua": load the policy and every
// file it reads without opening spools or listeners, print every problem
// and fail unless there is none.
func runCheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mtakitd check", flag.ContinueOnError)
	fs.SetOutput(stdout)
	keys := fs.String("dkim-keys", "", "key `directory` for policy-extras.dkim_sign (default /opt/kumomta/etc/dkim)")
	fs.Usage = func() {
		fmt.Fprintf(stdout, "usage: mtakitd check [-dkim-keys DIR] init.lua\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("check: want exactly one policy file")
	}
	file := fs.Arg(0)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := luapolicy.Load(file, luapolicy.Options{Check: true, Logger: quiet, DKIMKeyDir: *keys, States: 1})
	var ce *luapolicy.CheckError
	switch {
	case errors.As(err, &ce):
		for _, w := range ce.Warnings {
			fmt.Fprintf(stdout, "warning: %s\n", w)
		}
		for _, e := range ce.Errors {
			// An error that joins several problems prints one per line.
			fmt.Fprintf(stdout, "error: %s\n", strings.ReplaceAll(e.Error(), "\n", "\n       "))
		}
		return fmt.Errorf("check: %s: %d error(s)", file, len(ce.Errors))
	case err != nil:
		fmt.Fprintf(stdout, "error: %s\n", err)
		return fmt.Errorf("check: %s: 1 error(s)", file)
	}
	defer p.Close()
	for _, w := range p.Warnings() {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "%s: OK\n", file)
	return nil
}

// servePolicyHTTP starts the HTTP API on the policy's
// kumo.start_http_listener addresses, with their trusted_hosts and
// request_body_limit. It returns a function that stops them all.
func servePolicyHTTP(hs []luapolicy.HTTPListener, srv *mta.Server, m *metrics.Metrics, log *slog.Logger) (func(context.Context) error, error) {
	var started []*httpapi.Listener
	stop := func(ctx context.Context) error {
		var errs []error
		for _, l := range started {
			errs = append(errs, l.Shutdown(ctx))
		}
		return errors.Join(errs...)
	}
	for _, h := range hs {
		if h.UseTLS {
			log.Warn("kumo.start_http_listener use_tls is not supported; serving plain HTTP", "listen", h.Listen, "at", h.Line)
		}
		cfg := httpapi.Config{Server: srv, Metrics: m.Handler(), Hostname: h.Hostname, Logger: log, MaxBodyBytes: h.RequestBodyLimit}
		if len(h.TrustedHosts) > 0 {
			trusted, err := httpapi.ParseTrustedHosts(h.TrustedHosts)
			if err != nil {
				stop(context.Background())
				return nil, fmt.Errorf("%s kumo.start_http_listener trusted_hosts: %w", h.Line, err)
			}
			cfg.TrustedHosts = trusted
		}
		if tok := os.Getenv(tokenEnv); tok != "" {
			cfg.Admin = httpapi.StaticCredentials("", "", tok)
		}
		l, err := httpapi.Listen(h.Listen, cfg)
		if err != nil {
			stop(context.Background())
			return nil, fmt.Errorf("%s kumo.start_http_listener %s: %w", h.Line, h.Listen, err)
		}
		started = append(started, l)
		log.Info("HTTP API listening (kumo.start_http_listener)", "addr", l.Addr())
	}
	return stop, nil
}
