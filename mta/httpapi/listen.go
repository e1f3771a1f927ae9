package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Listener is an API served on a TCP address, what KumoMTA's
// kumo.start_http_listener starts.
type Listener struct {
	api *API
	ln  net.Listener
	hs  *http.Server
}

// Listen binds addr and serves the API for cfg on it in the background.
func Listen(addr string, cfg Config) (*Listener, error) {
	api, err := New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	l := &Listener{api: api, ln: ln, hs: &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(api.log.Handler(), slog.LevelWarn),
	}}
	go func() {
		if err := l.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			api.log.Error("HTTP listener stopped", "addr", ln.Addr(), "err", err)
		}
	}()
	api.log.Info("HTTP listener started", "addr", ln.Addr())
	return l, nil
}

// Addr returns the bound address (useful with port 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Shutdown stops accepting requests, lets those in progress finish until
// ctx expires, and waits for deferred injections. Call it before the
// mta.Server's Shutdown.
func (l *Listener) Shutdown(ctx context.Context) error {
	err := l.hs.Shutdown(ctx)
	l.api.Close()
	if err != nil {
		return fmt.Errorf("httpapi: shutdown: %w", err)
	}
	return nil
}

// ParseTrustedHosts parses KumoMTA trusted_hosts entries: IP addresses
// ("127.0.0.1", "::1") and CIDR networks ("10.0.0.0/8").
func ParseTrustedHosts(entries []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("httpapi: trusted host %q: %w", e, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, fmt.Errorf("httpapi: trusted host %q: %w", e, err)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
