package luapolicy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/luapolicy"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

func writeInit(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "init.lua")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// kumo.set_memory_* reach mta.Options and the running server; the get_
// functions return them, the low threshold defaulting to 80 % of the soft
// limit; a Live reload applies new limits.
func TestMemoryLimitFunctions(t *testing.T) {
	const src = `
local kumo = require 'kumo'
kumo.on('pre_init', function()
  kumo.set_memory_hard_limit(2 * 1024 * 1024 * 1024)
  kumo.set_memory_soft_limit(SOFT)
end)
kumo.on('init', function()
  assert(kumo.get_memory_hard_limit() == 2 * 1024 * 1024 * 1024, 'hard')
  assert(kumo.get_memory_soft_limit() == SOFT, 'soft')
  assert(kumo.get_memory_low_thresh() == math.floor(SOFT / 10) * 8, 'low')
end)
`
	path := writeInit(t, strings.ReplaceAll(src, "SOFT", "1073741824"))
	l, err := luapolicy.LoadLive(path, luapolicy.Options{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.Policy().MemoryLimits(); got != (mta.MemoryLimits{Hard: 2 << 30, Soft: 1 << 30}) {
		t.Fatalf("MemoryLimits = %+v", got)
	}
	opts, err := l.ServerOptions(mta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if opts.MemoryHardLimit != 2<<30 || opts.MemorySoftLimit != 1<<30 || opts.MemoryLowThresh != 0 {
		t.Fatalf("ServerOptions memory: hard %d soft %d low %d", opts.MemoryHardLimit, opts.MemorySoftLimit, opts.MemoryLowThresh)
	}
	srv, _, err := l.Start(mta.Options{Logger: quietLogger, DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if got := srv.MemoryStatus().Limits; got != (mta.MemoryLimits{Hard: 2 << 30, Soft: 1 << 30, LowThresh: (1 << 30) / 10 * 8}) {
		t.Fatalf("server limits %+v", got)
	}
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(src, "SOFT", "536870912")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := srv.MemoryStatus().Limits.Soft; got != 512<<20 {
		t.Fatalf("soft limit after reload %d, want 512 MiB", got)
	}
}

func TestMemoryLimitFunctionErrors(t *testing.T) {
	for _, src := range []string{
		"kumo.on('init', function()\n  kumo.set_memory_soft_limit('1GB')\nend)\n",
		"kumo.on('init', function()\n  kumo.set_memory_soft_limit(-5)\nend)\n",
		"kumo.on('init', function()\n  kumo.set_memory_low_thresh(1.5)\nend)\n",
	} {
		_, err := luapolicy.Load(writeInit(t, src), luapolicy.Options{Logger: quietLogger})
		if err == nil || !strings.Contains(err.Error(), "init.lua:2:") || !strings.Contains(err.Error(), "number of bytes") {
			t.Errorf("Load(%q) = %v, want an error at line 2 asking for bytes", src, err)
		}
	}
}

// PurgeCache empties the memo caches, kumo.memoize's among them, and a
// started server registers it with its memory monitor.
func TestPolicyPurgeCache(t *testing.T) {
	path := writeInit(t, `
local kumo = require 'kumo'
local double = kumo.memoize(function(a) return a * 2 end, { name = 'double', ttl = '1 minute' })
assert(double(1) == 2 and double(2) == 4)
kumo.on('init', function() end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { max_age = '1 day' }
end)
`)
	p, err := luapolicy.Load(path, luapolicy.Options{Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n := p.PurgeCache(); n < 2 {
		t.Fatalf("PurgeCache dropped %d entries, want the memoized 2 at least", n)
	}
	if n := p.PurgeCache(); n != 0 {
		t.Fatalf("second PurgeCache dropped %d entries, want 0", n)
	}
	srv, _, err := p.Start(mta.Options{Logger: quietLogger, DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), MemorySoftLimit: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// A memoized get_queue_config result, purged by the server's monitor.
	if _, err := p.MTAPolicy().QueueConfig("q@d.test", "", "", "d.test", ""); err != nil {
		t.Fatal(err)
	}
	st := srv.SetMemoryLimits(mta.MemoryLimits{Soft: 1})
	if st.State != mta.MemoryOverSoftLimit || st.Purged == 0 {
		t.Fatalf("status %+v, want shedding with entries purged", st)
	}
	if n := p.PurgeCache(); n != 0 {
		t.Fatalf("%d entries left after the server's purge: the policy's caches are not registered", n)
	}
}
