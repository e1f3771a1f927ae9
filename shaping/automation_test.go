package shaping_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func kinds(acts []shaping.Action) string {
	s := ""
	for _, a := range acts {
		s += a.Kind
		if a.Name != "" {
			s += ":" + a.Name + "=" + a.Value
		}
		s += " "
	}
	return s
}

// Yahoo's [TSS04] deferral in the community file: the yahoo provider rule
// suspends the path for 2 hours; the text also matches the "default" rule
// that throttles the site to 1 message a minute and 1 connection for 90
// minutes. Both are scoped to the source and site, and end by themselves.
func TestAutomationSuspendAndSetConfigExpire(t *testing.T) {
	opts, _ := testOptions(t)
	clock := newClock()
	opts.Now = clock.Now
	s := mustLoad(t, opts, communityFixture(t))
	ctx := context.Background()

	resp := shaping.Response{Code: 421, Enhanced: "4.7.0", Text: "[TSS04] Messages from 192.0.2.99 temporarily deferred due to unexpected volume or user complaints"}
	acts := s.Observe(ctx, "ip-1", siteYahoo, "yahoo.com", resp)
	if got, want := kinds(acts), "SetConfig:max_message_rate=1/minute SetConfig:connection_limit=1 Suspend "; got != want {
		t.Fatalf("actions %q, want %q", got, want)
	}
	for _, a := range acts {
		if a.Source != "ip-1" || a.Site != siteYahoo || a.Domain != "yahoo.com" {
			t.Errorf("action path %+v", a)
		}
		if a.Kind == shaping.ActionSetConfig && (!a.Rollup || a.Duration != 90*time.Minute) {
			t.Errorf("default rule SetConfig: %+v", a)
		}
		if a.Kind == shaping.ActionSuspend && (a.Duration != 2*time.Hour || !a.Expires.Equal(clock.Now().Add(2*time.Hour))) {
			t.Errorf("Suspend: %+v", a)
		}
	}
	if len(s.ActiveActions()) != 3 {
		t.Errorf("active: %+v", s.ActiveActions())
	}

	check := func(when, source, domain string, suspended bool, rate string, limit int) {
		t.Helper()
		c := pathConfig(t, s, source, siteYahoo, domain)
		if c.Suspended != suspended || c.MaxMessageRate != rate || c.ConnectionLimit != limit {
			t.Errorf("%s: %s/%s: suspended %v rate %q limit %d; want %v %q %d",
				when, source, domain, c.Suspended, c.MaxMessageRate, c.ConnectionLimit, suspended, rate, limit)
		}
	}
	check("at once", "ip-1", "yahoo.com", true, "1/minute", 1)
	check("at once", "ip-1", "foo.com", true, "1/minute", 1) // same site
	check("at once", "ip-2", "yahoo.com", false, "100/s", 10)
	clock.Advance(90*time.Minute - time.Second)
	check("before 90m", "ip-1", "yahoo.com", true, "1/minute", 1)
	clock.Advance(time.Second)
	check("at 90m", "ip-1", "yahoo.com", true, "100/s", 10)
	if n := len(s.ActiveActions()); n != 1 {
		t.Errorf("%d active after 90m", n)
	}
	clock.Advance(30 * time.Minute)
	check("at 2h", "ip-1", "yahoo.com", false, "100/s", 10)
	if n := len(s.ActiveActions()); n != 0 {
		t.Errorf("%d active after 2h", n)
	}
}

// comcast.net's RL0000 rule: trigger {Threshold="2/hr"}: the second match
// within an hour on one path sets max_connection_rate for 2 hours.
func TestAutomationThreshold(t *testing.T) {
	opts, _ := testOptions(t)
	clock := newClock()
	opts.Now = clock.Now
	s := mustLoad(t, opts, communityFixture(t))
	ctx := context.Background()
	rl := shaping.Response{Code: 421, Text: "RL0000 rate limited"}

	if a := s.Observe(ctx, "ip-1", siteComcast, "comcast.net", rl); len(a) != 0 {
		t.Fatalf("first match acted: %s", kinds(a))
	}
	// Another source's match does not count for ip-1.
	if a := s.Observe(ctx, "ip-2", siteComcast, "comcast.net", rl); len(a) != 0 {
		t.Fatalf("other source acted: %s", kinds(a))
	}
	clock.Advance(61 * time.Minute)
	if a := s.Observe(ctx, "ip-1", siteComcast, "comcast.net", rl); len(a) != 0 {
		t.Fatalf("match an hour later acted: %s", kinds(a))
	}
	clock.Advance(time.Minute)
	a := s.Observe(ctx, "ip-1", siteComcast, "xfinity.com", rl) // same site
	if got := kinds(a); got != "SetConfig:max_connection_rate=10000/h " {
		t.Fatalf("second match in an hour: %q", got)
	}
	if c := pathConfig(t, s, "ip-1", siteComcast, "comcast.net"); c.MaxConnectionRate != "10000/h" || c.ConnectionLimit != 25 {
		t.Errorf("override not in force: %q %d", c.MaxConnectionRate, c.ConnectionLimit)
	}
	if c := pathConfig(t, s, "ip-2", siteComcast, "comcast.net"); c.MaxConnectionRate != "100/min" {
		t.Errorf("other source overridden: %q", c.MaxConnectionRate)
	}
	clock.Advance(2 * time.Hour)
	if c := pathConfig(t, s, "ip-1", siteComcast, "comcast.net"); c.MaxConnectionRate != "100/min" {
		t.Errorf("override did not expire: %q", c.MaxConnectionRate)
	}
}

// The fancy-regex negative lookahead of the community file's RL000010
// rule, SuspendTenant, and internal responses.
func TestAutomationLookaheadAndInternal(t *testing.T) {
	opts, _ := testOptions(t)
	clock := newClock()
	opts.Now = clock.Now
	s := mustLoad(t, opts, communityFixture(t))
	ctx := context.Background()

	a := s.Observe(ctx, "ip-1", siteComcast, "comcast.net", shaping.Response{Code: 421, Text: "Domain throttled RL000010"})
	if got := kinds(a); got != "SuspendTenant " {
		t.Fatalf("RL000010: %q", got)
	}
	if a[0].Domain != "comcast.net" || a[0].Duration != 5*time.Minute {
		t.Errorf("%+v", a[0])
	}
	// The lookahead (?!.*KumoMTA internal) rejects this text.
	// (ip-3: on ip-1 this second RL0000 match would trip the threshold rule.)
	if a := s.Observe(ctx, "ip-3", siteComcast, "comcast.net", shaping.Response{Code: 421, Text: "relayed: KumoMTA internal RL000010"}); len(a) != 0 {
		t.Errorf("lookahead did not reject: %s", kinds(a))
	}
	// Responses made up by mtakit match no rule without match_internal.
	internal := shaping.Response{Code: 421, Enhanced: "4.4.2", Text: shaping.InternalPrefix + "Messages from 192.0.2.1 temporarily deferred"}
	if a := s.Observe(ctx, "ip-1", siteExample, "example.org", internal); len(a) != 0 {
		t.Errorf("internal response matched: %s", kinds(a))
	}

	s = mustLoad(t, opts, file("internal.toml", `
[["default".automation]]
regex = "failed to connect"
action = "Suspend"
duration = "10m"
match_internal = true

["example.com"]
mx_rollup = false

[["example.com".automation]]
regex = '^421 4\.7\.0 '
action = [{SetConfig={name="connection_limit", value=2}}, {SetDomainConfig={name="max_message_rate", value="5/s"}}, "Bounce"]
duration = "1h"
`))
	a = s.Observe(ctx, "ip-1", "mx.example.org", "example.org", shaping.Response{Code: 400, Text: shaping.InternalPrefix + "failed to connect to any candidate hosts"})
	if kinds(a) != "Suspend " {
		t.Errorf("match_internal: %q", kinds(a))
	}
	// A rule of an mx_rollup=false block acts on the domain only.
	a = s.Observe(ctx, "ip-1", "shared.site", "example.com", shaping.Response{Code: 421, Enhanced: "4.7.0", Text: "try later"})
	if kinds(a) != "SetConfig:connection_limit=2 SetDomainConfig:max_message_rate=5/s Bounce " || a[0].Rollup {
		t.Fatalf("domain rule: %q %+v", kinds(a), a)
	}
	if c := pathConfig(t, s, "ip-1", "shared.site", "example.com"); c.ConnectionLimit != 2 || c.MaxMessageRate != "5/s" {
		t.Errorf("example.com: %d %q", c.ConnectionLimit, c.MaxMessageRate)
	}
	if c := pathConfig(t, s, "ip-1", "shared.site", "other.example"); c.ConnectionLimit != 32 || c.MaxMessageRate != "" {
		t.Errorf("other domain on the site: %d %q", c.ConnectionLimit, c.MaxMessageRate)
	}
	// Operators can lift actions.
	if n := s.CancelActions(func(a shaping.Action) bool { return a.Domain == "example.com" }); n != 3 {
		t.Errorf("cancelled %d", n)
	}
	if c := pathConfig(t, s, "ip-1", "shared.site", "example.com"); c.ConnectionLimit != 32 {
		t.Errorf("after cancel: %d", c.ConnectionLimit)
	}
}

// A regex that backtracks catastrophically gives up after RegexTimeout
// and counts as no match.
func TestAutomationRegexTimeout(t *testing.T) {
	opts, _ := testOptions(t)
	opts.RegexTimeout = 20 * time.Millisecond
	s := mustLoad(t, opts, file("slow.toml", `
[["default".automation]]
regex = '^(a+)+$'
action = "Suspend"
duration = "1h"
`))
	text := ""
	for range 40 {
		text += "a"
	}
	start := time.Now()
	a := s.Observe(context.Background(), "s", "site", "d.example", shaping.Response{Code: 421, Text: text + "!"})
	if len(a) != 0 {
		t.Errorf("acted: %s", kinds(a))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("match took %v", d)
	}
}

// PathConfig must cost under 2µs per call once cached (the engine calls
// it per message).
func BenchmarkPathConfigCached(b *testing.B) {
	s, err := shaping.Load(context.Background(), shaping.Options{
		LookupMX: func(_ context.Context, d string) ([]string, error) { return []string{"mx1." + d, "mx2." + d}, nil },
		SiteName: func(h []string) string { return h[0] },
	}, shaping.DefaultFile())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var domains, sites []string
	for i := range 1000 {
		domains = append(domains, fmt.Sprintf("d%d.example", i))
		sites = append(sites, fmt.Sprintf("mx1.d%d.example", i))
	}
	for i, d := range domains {
		s.PathConfig(ctx, "ip-1", sites[i], d)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			j := i % len(domains)
			i++
			if _, err := s.PathConfig(ctx, "ip-1", sites[j], domains[j]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Actions pass between nodes through OnAction and ImportAction, and
// survive a reload through InheritActions.
func TestActionSharingAndReload(t *testing.T) {
	opts, _ := testOptions(t)
	clock := newClock()
	opts.Now = clock.Now
	var sent []shaping.Action
	optsA := opts
	optsA.OnAction = func(a shaping.Action) { sent = append(sent, a) }
	a := mustLoad(t, optsA, communityFixture(t))
	b := mustLoad(t, opts, communityFixture(t))
	ctx := context.Background()

	acts := a.Observe(ctx, "ip-1", siteYahoo, "yahoo.com", shaping.Response{Code: 421, Text: "[TS04] Messages from 192.0.2.1 temporarily deferred"})
	if len(sent) != 3 || len(acts) != 3 {
		t.Fatalf("sent %d, returned %d", len(sent), len(acts))
	}
	for _, act := range sent {
		if err := b.ImportAction(act); err != nil {
			t.Fatal(err)
		}
	}
	c := pathConfig(t, b, "ip-1", siteYahoo, "yahoo.com")
	if !c.Suspended || c.ConnectionLimit != 1 || c.MaxMessageRate != "1/minute" {
		t.Errorf("imported: suspended %v limit %d rate %q", c.Suspended, c.ConnectionLimit, c.MaxMessageRate)
	}
	if n := len(b.ActiveActions()); n != 3 {
		t.Errorf("%d active on b", n)
	}
	if err := b.ImportAction(shaping.Action{Kind: shaping.ActionSetConfig, Name: "connection_limit", Value: "lots", Expires: clock.Now().Add(time.Hour)}); err == nil {
		t.Error("bad value imported")
	}

	// Reload: a new Shaping inherits a's state.
	a2 := mustLoad(t, opts, communityFixture(t))
	a2.InheritActions(a)
	if c := pathConfig(t, a2, "ip-1", siteYahoo, "yahoo.com"); !c.Suspended || c.ConnectionLimit != 1 {
		t.Errorf("after reload: suspended %v limit %d", c.Suspended, c.ConnectionLimit)
	}
	clock.Advance(2 * time.Hour)
	if c := pathConfig(t, a2, "ip-1", siteYahoo, "yahoo.com"); c.Suspended || c.ConnectionLimit != 10 {
		t.Errorf("inherited actions did not expire: suspended %v limit %d", c.Suspended, c.ConnectionLimit)
	}
}
