package luapolicy_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

const benchPolicy = `
local kumo = require 'kumo'
local signer_params = { domain = 'example.com', selector = 's1', headers = { 'From', 'To', 'Subject' }, key = '@KEY@' }
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('tenant', msg:get_first_named_header_value('X-Tenant') or 'default')
  if '@SIGN@' == 'yes' then
    msg:dkim_sign(kumo.dkim.rsa_sha256_signer(signer_params))
  end
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { egress_pool = tenant, retry_interval = '5 minutes' }
end)
`

// goRouting is the Go equivalent of benchPolicy's handlers.
func goRouting(signer dkim.Signer) mta.Policy {
	return mta.Policy{
		MessageReceived: func(_ context.Context, m *mta.Message) error {
			t, ok := m.Header("X-Tenant")
			if !ok {
				t = "default"
			}
			m.SetMeta(mta.MetaTenant, t)
			if signer != nil {
				sig, err := signer.Sign(m.Data())
				if err != nil {
					return err
				}
				m.PrependRaw(sig)
			}
			return nil
		},
		QueueConfig: func(_, _, tenant, _, _ string) (mta.QueueConfig, error) {
			return mta.QueueConfig{EgressPool: tenant, RetryInterval: 5 * 60e9}, nil
		},
	}
}

func benchSetup(b *testing.B, sign bool) (*luapolicy.Policy, dkim.Signer) {
	b.Helper()
	dir := b.TempDir()
	kf, err := dkim.WriteKeyFiles(dkim.KeygenOptions{Dir: dir, Domain: "example.com", Selector: "s1"})
	if err != nil {
		b.Fatal(err)
	}
	flag := "no"
	var signer dkim.Signer
	if sign {
		flag = "yes"
		signer, err = dkim.NewRSASigner(dkim.Options{Domain: "example.com", Selector: "s1", Headers: []string{"From", "To", "Subject"}, KeyFile: kf.KeyPath})
		if err != nil {
			b.Fatal(err)
		}
	}
	src := strings.NewReplacer("@KEY@", kf.KeyPath, "@SIGN@", flag).Replace(benchPolicy)
	path := filepath.Join(dir, "init.lua")
	os.WriteFile(path, []byte(src), 0o644)
	p, err := luapolicy.Load(path, luapolicy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p, signer
}

const benchMessage = "From: Sender <sender@example.com>\r\nTo: rcpt@dest.test\r\nSubject: benchmark\r\nX-Tenant: acme\r\n\r\nHello.\r\n"

// captureMessage returns an *mta.Message as a hook receives it.
func captureMessage(b *testing.B) *mta.Message {
	var got *mta.Message
	srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), HoldDelivery: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Policy: mta.Policy{MessageReceived: func(_ context.Context, m *mta.Message) error { got = m; return nil }}})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.test"}, Data: []byte(benchMessage)}); err != nil {
		b.Fatal(err)
	}
	return got
}

// BenchmarkHook is the cost of one message hook call: a Lua
// smtp_server_message_received that reads a header and sets meta, against
// the same hook in Go.
func BenchmarkHook(b *testing.B) {
	p, _ := benchSetup(b, false)
	msg := captureMessage(b)
	ctx := context.Background()
	b.Run("lua", func(b *testing.B) {
		for b.Loop() {
			if err := p.MessageReceived(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	hook := goRouting(nil).MessageReceived
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			hook(ctx, msg)
		}
	})
}

// uncached numbers the tuples of BenchmarkQueueConfig/lua-uncached so
// that no run finds another's results in the memo.
var uncached int

// BenchmarkQueueConfig compares get_queue_config in Lua, memoized (the
// steady state) and uncached (a new tuple each call), with Go.
func BenchmarkQueueConfig(b *testing.B) {
	p, _ := benchSetup(b, false)
	b.Run("lua-memoized", func(b *testing.B) {
		for b.Loop() {
			p.QueueConfig("t@example.net", "", "t", "example.net", "")
		}
	})
	b.Run("lua-uncached", func(b *testing.B) {
		for b.Loop() {
			uncached++
			p.QueueConfig("", "", "t"+strconv.Itoa(uncached), "example.net", "")
		}
	})
	qc := goRouting(nil).QueueConfig
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			qc("t@example.net", "", "t", "example.net", "")
		}
	})
}

// BenchmarkReception is reception throughput (Inject into memory spools,
// delivery held) with the routing and DKIM signing policy in Lua and in
// Go, from parallel goroutines.
func BenchmarkReception(b *testing.B) {
	p, signer := benchSetup(b, true)
	run := func(b *testing.B, pol mta.Policy) {
		srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), HoldDelivery: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Policy: pol})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		sub := &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.test"}, Data: []byte(benchMessage)}
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := srv.Inject(context.Background(), sub); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("lua", func(b *testing.B) { run(b, p.MTAPolicy()) })
	b.Run("go", func(b *testing.B) { run(b, goRouting(signer)) })
}
