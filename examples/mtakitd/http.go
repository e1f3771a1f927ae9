package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/metrics"
)

// tokenEnv names the environment variable holding the bearer token that
// clients outside loopback must present, for the daemon and the CLI.
const tokenEnv = "MTAKITD_API_TOKEN"

// serveHTTP starts the HTTP API (inject, admin, liveness, /metrics) on
// c.http; "" disables it. Loopback clients are trusted; others need the
// bearer token in $MTAKITD_API_TOKEN, if set. It returns the bound
// address and a function that stops the listener and waits for deferred
// injections.
func serveHTTP(c *config, srv *mta.Server, m *metrics.Metrics, log *slog.Logger) (net.Addr, func(context.Context) error, error) {
	if c.http == "" {
		return nil, func(context.Context) error { return nil }, nil
	}
	cfg := httpapi.Config{Server: srv, Metrics: m.Handler(), Hostname: c.hostname, Logger: log}
	if tok := os.Getenv(tokenEnv); tok != "" {
		cfg.Admin = httpapi.StaticCredentials("", "", tok)
	}
	api, err := httpapi.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", c.http)
	if err != nil {
		return nil, nil, fmt.Errorf("HTTP listener: %w", err)
	}
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP listener stopped", "addr", ln.Addr(), "err", err)
		}
	}()
	stop := func(ctx context.Context) error {
		err := hs.Shutdown(ctx)
		api.Close()
		return err
	}
	return ln.Addr(), stop, nil
}
