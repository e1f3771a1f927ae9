package main

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/mtakit/mtakit/shaping"
)

// Limits are the per-destination settings of BackoffShaper.
type Limits struct {
	Connections int    // connection_limit
	MessageRate string // max_message_rate, e.g. "10/s"; "" for none
}

// BackoffShaper is a Shaper written in Go: fixed limits per destination
// domain, and a back-off that reacts to responses through Observe — a 421
// or a 4xx mentioning "rate" suspends the site for Pause, after which it
// resumes by itself. It is what shaping.Shaping does from shaping.toml,
// reduced to what a program with its own rules might need.
type BackoffShaper struct {
	Default Limits
	Domains map[string]Limits // by recipient domain
	Pause   time.Duration
	// Base adjusts every path config (loopback delivery in tests, say).
	Base func(*shaping.PathConfig)

	mu        sync.Mutex
	suspended map[string]time.Time // site -> until
}

// PathConfig implements shaping.Shaper.
func (s *BackoffShaper) PathConfig(_ context.Context, source, site, domain string) (shaping.PathConfig, error) {
	pc := shaping.Default()
	lim, ok := s.Domains[domain]
	if !ok {
		lim = s.Default
	}
	if lim.Connections > 0 {
		pc.ConnectionLimit = lim.Connections
	}
	pc.MaxMessageRate = lim.MessageRate
	if s.Base != nil {
		s.Base(&pc)
	}
	s.mu.Lock()
	until, held := s.suspended[site]
	if held && time.Now().After(until) {
		delete(s.suspended, site)
		held = false
	}
	s.mu.Unlock()
	pc.Suspended = held
	return pc, nil
}

// Observe implements shaping.Shaper: it sees every response from site.
func (s *BackoffShaper) Observe(_ context.Context, source, site, domain string, r shaping.Response) []shaping.Action {
	if !(r.Code == 421 || r.Code >= 400 && r.Code < 500 && strings.Contains(strings.ToLower(r.Text), "rate")) {
		return nil
	}
	until := time.Now().Add(s.Pause)
	s.mu.Lock()
	if s.suspended == nil {
		s.suspended = map[string]time.Time{}
	}
	s.suspended[site] = until
	s.mu.Unlock()
	return []shaping.Action{{Kind: shaping.ActionSuspend, Duration: s.Pause, Reason: "backoff: " + r.Text,
		Source: source, Site: site, Domain: domain, Rollup: true, Expires: until}}
}
