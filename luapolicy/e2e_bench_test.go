package luapolicy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/queues"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// goHelpersPolicy is testdata/helpers written in Go: the same files read
// by the same packages, the same hooks without Lua.
func goHelpersPolicy(b *testing.B, e *policyEnv) (mta.Options, listener.DomainLookup) {
	qcfg, err := queues.Load(filepath.Join(e.dir, "queues.toml"))
	if err != nil {
		b.Fatal(err)
	}
	dk, err := dkim.Load(dkim.LoadOptions{KeyDir: filepath.Join(e.dir, "keys")}, filepath.Join(e.dir, "dkim_data.toml"))
	if err != nil {
		b.Fatal(err)
	}
	srcs, err := egress.LoadSources(filepath.Join(e.dir, "sources.toml"))
	if err != nil {
		b.Fatal(err)
	}
	files, err := shaping.ReadFiles(shaping.DefaultFilePath, filepath.Join(e.dir, "shaping.toml"))
	if err != nil {
		b.Fatal(err)
	}
	sh, err := shaping.Load(context.Background(), shaping.Options{}, files...)
	if err != nil {
		b.Fatal(err)
	}
	relay := &listener.ListenerDomain{RelayTo: true}
	domains := listener.DomainMap{"dest.test": relay, "*.dest.test": relay}
	return mta.Options{
		Policy: mta.Policy{
			MessageReceived: func(_ context.Context, m *mta.Message) error {
				if err := qcfg.Apply(m); err != nil {
					return err
				}
				sig, err := dk.Sign(m.Data())
				if err != nil {
					return err
				}
				m.PrependRaw(sig)
				return nil
			},
			QueueConfig: qcfg.QueueConfig,
		},
		Shaper:      sh,
		EgressPools: srcs.EgressPools(),
	}, domains
}

// BenchmarkEndToEnd sends b.N messages over SMTP (4 connections) through
// the testdata/helpers policy, in Lua and as the same policy in Go, into
// memory spools and on to a sink on loopback, and reports messages per
// second delivered at the sink.
func BenchmarkEndToEnd(b *testing.B) {
	for _, mode := range []string{"lua", "go"} {
		b.Run(mode, func(b *testing.B) {
			e := newPolicyEnv(b, "testdata/helpers")
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			base := mta.Options{Hostname: "mx.policy.test", DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), Logger: quiet}
			res, err := egress.NewResolver(egress.ResolverOptions{Servers: []string{e.dns.Addr()}, Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			base.Resolver = res
			var (
				opts    mta.Options
				domains listener.DomainLookup
			)
			if mode == "lua" {
				p := e.load(b)
				if opts, err = p.ServerOptions(base); err != nil {
					b.Fatal(err)
				}
				domains = p.DomainLookup()
			} else {
				g, d := goHelpersPolicy(b, e)
				opts, domains = base, d
				opts.Policy, opts.Shaper, opts.EgressPools = g.Policy, g.Shaper, g.EgressPools
			}
			srv, err := mta.New(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			addr, err := srv.ListenSMTP(listener.Config{Addr: "127.0.0.1:0", Domains: domains, RelayHosts: []netip.Prefix{}})
			if err != nil {
				b.Fatal(err)
			}
			const conns = 4
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for c := range conns {
				n := b.N / conns
				if c < b.N%conns {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := sendMany(addr.String(), c, n); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := e.sink.WaitCount(ctx, b.N); err != nil {
				b.Fatalf("sink: %v", err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// sendMany sends n messages on one SMTP connection.
func sendMany(addr string, conn, n int) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("bench.test"); err != nil {
		return err
	}
	tenants := []string{"gold", "default"}
	for i := range n {
		if err := c.Mail("sender@example.com", nil); err != nil {
			return err
		}
		if err := c.Rcpt(fmt.Sprintf("r%d@dest.test", i%8), nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "From: Sender <sender@example.com>\r\nTo: r@dest.test\r\nSubject: bench %d-%d\r\nMessage-ID: <%d.%d@example.com>\r\nX-Tenant: %s\r\n\r\nHello.\r\n",
			conn, i, conn, i, tenants[i%2])
		if err := w.Close(); err != nil {
			return err
		}
	}
	return c.Quit()
}
