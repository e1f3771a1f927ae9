package shaping

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// InternalPrefix starts the text of responses that mtakit makes up itself
// (connection failures, timeouts). Automation rules skip them unless
// match_internal is set.
const InternalPrefix = "KumoMTA internal: "

// automation is the traffic shaping automation state: KumoMTA's
// tsa-daemon, in process.
type automation struct {
	mu     sync.Mutex
	epoch  atomic.Uint64 // bumped whenever what PathConfig reflects changes
	next   atomic.Int64  // earliest expiry (UnixNano) of an active action
	events map[eventKey][]time.Time
	active map[activeKey]*activeEntry
}

type eventKey struct{ rule, source, site string }

type activeKey struct {
	rule   string
	action int
	source string
	target string // site for Suspend and rollup SetConfig, else domain
}

type activeEntry struct {
	Action
	value any // checked SetConfig value
}

func (a *automation) init() {
	a.events = map[eventKey][]time.Time{}
	a.active = map[activeKey]*activeEntry{}
	a.next.Store(math.MaxInt64)
}

// current returns the epoch, first expiring actions whose time is up.
func (a *automation) current(now time.Time) uint64 {
	if now.UnixNano() >= a.next.Load() {
		a.mu.Lock()
		a.pruneLocked(now)
		a.mu.Unlock()
	}
	return a.epoch.Load()
}

func (a *automation) pruneLocked(now time.Time) {
	next := int64(math.MaxInt64)
	changed := false
	for k, e := range a.active {
		if !now.Before(e.Expires) {
			delete(a.active, k)
			changed = true
			continue
		}
		next = min(next, e.Expires.UnixNano())
	}
	a.next.Store(next)
	if changed {
		a.epoch.Add(1)
	}
}

// overlay merges the SetConfig overrides in force for the path into p:
// those scoped to (source, site) when site is true, else those scoped to
// (source, domain); among overrides of one key the one expiring last
// wins. With site true it also reports whether the path is suspended.
func (a *automation) overlay(k pathKey, p paramSet, site bool) (suspended bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.active) == 0 {
		return false
	}
	var list []*activeEntry
	for _, e := range a.active {
		if e.Source != k.source {
			continue
		}
		switch e.Kind {
		case ActionSuspend:
			if site && e.Site == k.site {
				suspended = true
			}
		case ActionSetConfig, ActionSetDomainConfig:
			if e.Rollup == site && (site && e.Site == k.site || !site && e.Domain == k.domain) {
				list = append(list, e)
			}
		}
	}
	slices.SortFunc(list, func(x, y *activeEntry) int {
		return cmp.Or(x.Expires.Compare(y.Expires), cmp.Compare(x.Name, y.Name))
	})
	for _, e := range list {
		p.mergeFrom(paramSet{e.Name: e.value})
	}
	return suspended
}

// record notes one match of a threshold rule on a path and returns how
// many matches were seen in the threshold's period, this one included.
func (a *automation) record(k eventKey, now time.Time, th *ThrottleSpec) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	series := append(a.events[k], now)
	cut := now.Add(-th.Period)
	i := 0
	for i < len(series) && !series[i].After(cut) {
		i++
	}
	series = series[i:]
	if len(series) > th.Limit {
		series = series[len(series)-th.Limit:] // enough to decide
	}
	a.events[k] = series
	if len(a.events) > 100000 {
		for ek, s := range a.events {
			if len(s) == 0 || !s[len(s)-1].After(cut) {
				delete(a.events, ek)
			}
		}
	}
	return len(series)
}

func (a *automation) activate(key activeKey, e *activeEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active[key] = e
	if n := e.Expires.UnixNano(); n < a.next.Load() {
		a.next.Store(n)
	}
	if e.Kind == ActionSuspend || e.Kind == ActionSetConfig || e.Kind == ActionSetDomainConfig {
		a.epoch.Add(1)
	}
}

// Observe applies the automation rules that concern the path (source,
// site, domain) to a response from it and returns the actions it
// triggers. Rules are those of "default", of matching providers, of the
// site's mx_rollup block and of the domain's mx_rollup=false block. A rule
// matches when one of its regexes matches the response written on one
// line as "CODE [ENHANCED ]TEXT"; responses made up by mtakit
// (InternalPrefix) match only rules with match_internal. A matching rule
// triggers at once, or with trigger {Threshold="N/period"} once N matches
// were seen on the path (source, site) within the period. Each action of a
// triggered rule is in force for the rule's duration, from now; a rule
// triggering again extends it. Suspend and SetConfig take effect in
// PathConfig; all active actions are listed by ActiveActions.
func (s *Shaping) Observe(ctx context.Context, source, site, domain string, resp Response) []Action {
	domain = strings.ToLower(domain)
	r := s.lookup(ctx, source, site, domain)
	if len(r.rules) == 0 {
		return nil
	}
	line := singleLine(resp)
	internal := strings.HasPrefix(resp.Text, InternalPrefix)
	now := s.now()
	var out []Action
	for _, br := range r.rules {
		rule := br.rule
		if internal && !rule.MatchInternal {
			continue
		}
		if !s.matches(rule, line) {
			continue
		}
		if th := rule.Threshold; th != nil {
			if s.auto.record(eventKey{rule.id, source, site}, now, th) < th.Limit {
				continue
			}
		}
		reason := "automation rule: " + regexListString(rule.Regex)
		for i, ra := range rule.Actions {
			act := Action{
				Kind:     ra.Kind,
				Name:     ra.Name,
				Duration: rule.Duration,
				Reason:   reason,
				Source:   source,
				Site:     site,
				Domain:   domain,
				Expires:  now.Add(rule.Duration),
			}
			e := &activeEntry{Action: act}
			target := domain
			switch ra.Kind {
			case ActionSuspend:
				target = site
			case ActionSetConfig, ActionSetDomainConfig:
				e.value, _ = checkParam(ra.Name, ra.Value)
				e.Value = formatValue(ra.Value)
				e.Rollup = ra.Kind == ActionSetConfig && br.rollup
				if e.Rollup {
					target = site
				}
			}
			act = e.Action
			s.auto.activate(activeKey{rule.id, i, source, target}, e)
			if s.opts.OnAction != nil {
				s.opts.OnAction(act)
			}
			s.log.Info("shaping: automation action", "kind", act.Kind, "name", act.Name, "value", act.Value,
				"source", source, "site", site, "domain", domain, "duration", act.Duration,
				"reason", reason, "rule", rule.Origin, "response", line)
			out = append(out, act)
		}
	}
	return out
}

func (s *Shaping) matches(rule *Rule, line string) bool {
	for i, re := range rule.re {
		ok, err := re.MatchString(line)
		if err != nil {
			s.log.Warn("shaping: automation regex failed; counted as no match",
				"regex", rule.Regex[i], "rule", rule.Origin, "err", err)
			continue
		}
		if ok {
			return true
		}
	}
	return false
}

// ActiveActions lists the automation actions in force, soonest to expire
// first.
func (s *Shaping) ActiveActions() []Action {
	now := s.now()
	s.auto.mu.Lock()
	s.auto.pruneLocked(now)
	out := make([]Action, 0, len(s.auto.active))
	for _, e := range s.auto.active {
		out = append(out, e.Action)
	}
	s.auto.mu.Unlock()
	slices.SortFunc(out, func(x, y Action) int {
		return cmp.Or(x.Expires.Compare(y.Expires), cmp.Compare(x.Kind, y.Kind),
			cmp.Compare(x.Source, y.Source), cmp.Compare(x.Site, y.Site),
			cmp.Compare(x.Domain, y.Domain), cmp.Compare(x.Name, y.Name))
	})
	return out
}

// CancelActions ends the active actions for which match returns true
// (an operator lifting a suspension, say) and returns how many it ended.
func (s *Shaping) CancelActions(match func(Action) bool) int {
	s.auto.mu.Lock()
	defer s.auto.mu.Unlock()
	n := 0
	for k, e := range s.auto.active {
		if match(e.Action) {
			delete(s.auto.active, k)
			n++
		}
	}
	if n > 0 {
		s.auto.epoch.Add(1)
	}
	return n
}

// ImportAction puts in force an action triggered elsewhere, typically by
// another node of a fleet (see Options.OnAction), until a.Expires. Kind,
// Source, Site, Domain, Rollup, Expires and, for SetConfig and
// SetDomainConfig, Name and Value (as formatted by Observe) are used. It
// does not call OnAction. An action already expired is ignored.
func (s *Shaping) ImportAction(a Action) error {
	if !contains(actionKinds, a.Kind) {
		return fmt.Errorf("shaping: import action: unknown kind %q", a.Kind)
	}
	if !s.now().Before(a.Expires) {
		return nil
	}
	e := &activeEntry{Action: a}
	target := a.Domain
	switch a.Kind {
	case ActionSuspend:
		target = a.Site
	case ActionSetConfig, ActionSetDomainConfig:
		v, err := valueFromString(a.Name, a.Value)
		if err != nil {
			return fmt.Errorf("shaping: import action: %s %s=%q: %w", a.Kind, a.Name, a.Value, err)
		}
		e.value = v
		if a.Kind == ActionSetDomainConfig {
			e.Rollup = false
		}
		if e.Rollup {
			target = a.Site
		}
	}
	key := activeKey{rule: "import\x00" + a.Kind + "\x00" + a.Name + "\x00" + a.Reason, source: a.Source, target: target}
	s.auto.activate(key, e)
	return nil
}

// valueFromString recovers a checked SetConfig value from its text: as a
// string, or else as the integer, boolean or float it spells.
func valueFromString(name, text string) (any, error) {
	v, err := checkParam(name, text)
	if err == nil {
		return v, nil
	}
	if n, perr := strconv.ParseInt(text, 10, 64); perr == nil {
		return checkParam(name, n)
	}
	if b, perr := strconv.ParseBool(text); perr == nil {
		return checkParam(name, b)
	}
	if f, perr := strconv.ParseFloat(text, 64); perr == nil {
		return checkParam(name, f)
	}
	return nil, err
}

// InheritActions carries the automation state of old (the actions in
// force and the threshold counts) over to s, for a configuration reload.
// Threshold counts carry over for rules defined at the same place of the
// same file.
func (s *Shaping) InheritActions(old *Shaping) {
	if old == nil || old == s {
		return
	}
	old.auto.mu.Lock()
	active := make(map[activeKey]*activeEntry, len(old.auto.active))
	for k, e := range old.auto.active {
		c := *e
		active[k] = &c
	}
	events := make(map[eventKey][]time.Time, len(old.auto.events))
	for k, v := range old.auto.events {
		events[k] = slices.Clone(v)
	}
	old.auto.mu.Unlock()
	for k, e := range active {
		s.auto.activate(k, e)
	}
	s.auto.mu.Lock()
	for k, v := range events {
		s.auto.events[k] = v
	}
	s.auto.mu.Unlock()
}

// singleLine writes a response as KumoMTA's Response::to_single_line:
// "CODE ENHANCED TEXT" with line breaks replaced by spaces.
func singleLine(r Response) string {
	var b strings.Builder
	b.Grow(len(r.Text) + 16)
	b.WriteString(strconv.Itoa(r.Code))
	b.WriteByte(' ')
	if r.Enhanced != "" {
		b.WriteString(r.Enhanced)
		b.WriteByte(' ')
	}
	t := r.Text
	for i := 0; i < len(t); i++ {
		switch c := t[i]; c {
		case '\r':
			if i+1 < len(t) && t[i+1] == '\n' {
				continue
			}
			b.WriteByte(' ')
		case '\n':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// regexListString names a rule's regexes as KumoMTA does in reasons.
func regexListString(list []string) string {
	if len(list) == 1 {
		return list[0]
	}
	return "(" + strings.Join(list, ",") + ")"
}
