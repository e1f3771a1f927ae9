package main

import (
	"context"
	"log/slog"
	"net"
	"os"

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
	l, err := httpapi.Listen(c.http, cfg)
	if err != nil {
		return nil, nil, err
	}
	return l.Addr(), l.Shutdown, nil
}
