package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/shaping"
	"github.com/mtakit/mtakit/spool"
)

// DefaultRuleDuration is how long a bounce or suspension lasts when the
// request names neither duration nor expires, as in KumoMTA.
const DefaultRuleDuration = 5 * time.Minute

// BounceRequest is the body of POST /api/admin/bounce/v1.
type BounceRequest struct {
	Reason        string `json:"reason"`
	Campaign      string `json:"campaign,omitempty"`
	Tenant        string `json:"tenant,omitempty"`
	Domain        string `json:"domain,omitempty"`
	RoutingDomain string `json:"routing_domain,omitempty"`
	// QueueNames, when set, overrides Campaign, Tenant and Domain.
	QueueNames []string `json:"queue_names,omitempty"`
	// Duration (KumoMTA syntax, "5m", "1 hour") keeps the rule bouncing
	// new arrivals; default 5m. Expires, when set, wins.
	Duration string     `json:"duration,omitempty"`
	Expires  *time.Time `json:"expires,omitempty"`
	// SuppressLogging is not supported: requests setting it are refused.
	SuppressLogging bool `json:"suppress_logging,omitempty"`
}

// BounceResponse answers POST /api/admin/bounce/v1. mtakit bounces the
// queued mail before answering, so TotalBounced is the real count.
type BounceResponse struct {
	ID           string         `json:"id"`
	Bounced      map[string]int `json:"bounced"`
	TotalBounced int            `json:"total_bounced"`
}

// BounceEntry is one rule in GET /api/admin/bounce/v1.
type BounceEntry struct {
	ID            string         `json:"id"`
	Reason        string         `json:"reason"`
	Duration      string         `json:"duration"` // remaining
	Campaign      string         `json:"campaign,omitempty"`
	Tenant        string         `json:"tenant,omitempty"`
	Domain        string         `json:"domain,omitempty"`
	RoutingDomain string         `json:"routing_domain,omitempty"`
	QueueNames    []string       `json:"queue_names,omitempty"`
	Bounced       map[string]int `json:"bounced"`
	TotalBounced  int            `json:"total_bounced"`
}

// CancelRequest is the body of the DELETE admin endpoints.
type CancelRequest struct {
	ID string `json:"id"`
}

// SuspendRequest is the body of POST /api/admin/suspend/v1.
type SuspendRequest struct {
	Reason     string     `json:"reason"`
	Campaign   string     `json:"campaign,omitempty"`
	Tenant     string     `json:"tenant,omitempty"`
	Domain     string     `json:"domain,omitempty"`
	QueueNames []string   `json:"queue_names,omitempty"`
	Duration   string     `json:"duration,omitempty"`
	Expires    *time.Time `json:"expires,omitempty"`
}

// IDResponse answers the suspend endpoints.
type IDResponse struct {
	ID string `json:"id"`
}

// SuspendEntry is one rule in GET /api/admin/suspend/v1.
type SuspendEntry struct {
	ID         string   `json:"id"`
	Reason     string   `json:"reason"`
	Duration   string   `json:"duration"`
	Campaign   string   `json:"campaign,omitempty"`
	Tenant     string   `json:"tenant,omitempty"`
	Domain     string   `json:"domain,omitempty"`
	QueueNames []string `json:"queue_names,omitempty"`
}

// SuspendReadyRequest is the body of POST /api/admin/suspend-ready-q/v1.
type SuspendReadyRequest struct {
	Name     string     `json:"name"`
	Reason   string     `json:"reason"`
	Duration string     `json:"duration,omitempty"`
	Expires  *time.Time `json:"expires,omitempty"`
}

// SuspendReadyEntry is one rule in GET /api/admin/suspend-ready-q/v1.
type SuspendReadyEntry struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Reason   string    `json:"reason"`
	Duration string    `json:"duration"`
	Expires  time.Time `json:"expires"`
}

// RebindRequest is the body of POST /api/admin/rebind/v1.
type RebindRequest struct {
	Reason        string            `json:"reason"`
	Data          map[string]string `json:"data,omitempty"`
	Campaign      string            `json:"campaign,omitempty"`
	Tenant        string            `json:"tenant,omitempty"`
	Domain        string            `json:"domain,omitempty"`
	RoutingDomain string            `json:"routing_domain,omitempty"`
	QueueNames    []string          `json:"queue_names,omitempty"`
	// AlwaysFlush makes matching messages due now even when they stay in
	// their queue: retry at once after fixing a route.
	AlwaysFlush     bool `json:"always_flush,omitempty"`
	SuppressLogging bool `json:"suppress_logging,omitempty"`
	// TriggerRebindEvent is not supported: requests setting it are
	// refused.
	TriggerRebindEvent bool `json:"trigger_rebind_event,omitempty"`
}

// RebindResponse answers POST /api/admin/rebind/v1 (an mtakit
// extension: KumoMTA answers with no count).
type RebindResponse struct {
	Rebound int `json:"rebound"`
}

// InspectResponse answers GET /api/admin/inspect-message/v1.
type InspectResponse struct {
	ID      string         `json:"id"`
	Message InspectMessage `json:"message"`
}

// InspectMessage is the message part of InspectResponse.
type InspectMessage struct {
	Sender      string         `json:"sender"`
	Recipient   []string       `json:"recipient"`
	Queue       string         `json:"queue"`
	Meta        map[string]any `json:"meta"`
	Data        *string        `json:"data,omitempty"`
	Due         *time.Time     `json:"due,omitempty"`
	NumAttempts int            `json:"num_attempts"`
}

// QueueSummary answers GET /api/admin/queue-summary/v1 (mtakit's; kcli
// builds its summary from metrics).
type QueueSummary struct {
	Scheduled []ScheduledQueue `json:"scheduled"`
	Ready     []ReadyQueue     `json:"ready"`
}

// ScheduledQueue is one scheduled queue of a QueueSummary.
type ScheduledQueue struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// ReadyQueue is one ready queue of a QueueSummary.
type ReadyQueue struct {
	Name        string `json:"name"`
	Site        string `json:"site"`
	Source      string `json:"source"`
	Pool        string `json:"pool"`
	Queued      int    `json:"queued"`
	Connections int    `json:"connections"`
	Suspended   bool   `json:"suspended,omitempty"`
	// PathConfig holds the main egress path settings in force, named as
	// in shaping.toml.
	PathConfig PathSummary `json:"path_config"`
}

// PathSummary is the part of a ready queue's egress path configuration
// an operator checks first.
type PathSummary struct {
	ConnectionLimit            int    `json:"connection_limit"`
	MaxDeliveriesPerConnection int    `json:"max_deliveries_per_connection"`
	MaxMessageRate             string `json:"max_message_rate,omitempty"`
	MaxConnectionRate          string `json:"max_connection_rate,omitempty"`
	EnableTLS                  string `json:"enable_tls"`
	IdleTimeout                string `json:"idle_timeout"`
	Suspended                  bool   `json:"suspended,omitempty"` // by shaping automation
}

// ruleDuration resolves a request's duration and expires fields.
func ruleDuration(duration string, expires *time.Time) (time.Duration, error) {
	if expires != nil {
		d := time.Until(*expires)
		if d <= 0 {
			return 0, fmt.Errorf("expires %s is in the past", expires.Format(time.RFC3339))
		}
		return d, nil
	}
	if duration == "" {
		return DefaultRuleDuration, nil
	}
	d, err := shaping.ParseDuration(duration)
	if err != nil {
		return 0, fmt.Errorf("duration: %w", err)
	}
	if d <= 0 {
		return 0, errors.New("duration must be positive")
	}
	return d, nil
}

// FormatDuration writes d rounded to seconds in KumoMTA's (humantime's)
// style: "1h 2m 3s".
func FormatDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d <= 0 {
		return "0s"
	}
	var parts []string
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.d; n > 0 {
			d -= n * u.d
			name := u.name
			if name == "day" && n > 1 {
				name = "days"
			}
			parts = append(parts, strconv.Itoa(int(n))+name)
		}
	}
	return strings.Join(parts, " ")
}

func (a *API) bounce(w http.ResponseWriter, r *http.Request) {
	var req BounceRequest
	if !a.decode(w, r, &req) {
		return
	}
	if req.Reason == "" {
		writeError(w, http.StatusBadRequest, "reason is required")
		return
	}
	if req.SuppressLogging {
		writeError(w, http.StatusBadRequest, "suppress_logging is not supported: every bounced message is logged")
		return
	}
	d, err := ruleDuration(req.Duration, req.Expires)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	m := mta.QueueMatch{Campaign: req.Campaign, Tenant: req.Tenant, Domain: req.Domain, RoutingDomain: req.RoutingDomain, Queues: req.QueueNames}
	rule := a.srv.BounceQueues(m, req.Reason, d)
	writeJSON(w, http.StatusOK, BounceResponse{ID: rule.ID, Bounced: map[string]int{}, TotalBounced: rule.Bounced})
}

func (a *API) bounceList(w http.ResponseWriter, _ *http.Request) {
	_, bounces := a.srv.QueueRules()
	out := make([]BounceEntry, 0, len(bounces))
	for _, b := range bounces {
		out = append(out, BounceEntry{
			ID: b.ID, Reason: b.Reason, Duration: FormatDuration(time.Until(b.Expires)),
			Campaign: b.Match.Campaign, Tenant: b.Match.Tenant, Domain: b.Match.Domain, RoutingDomain: b.Match.RoutingDomain,
			QueueNames: b.Match.Queues, Bounced: map[string]int{}, TotalBounced: b.Bounced,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// cancelRule handles the DELETE of a bounce or scheduled-queue
// suspension; isKind tells whether an ID belongs to this endpoint.
func (a *API) cancelRule(w http.ResponseWriter, r *http.Request, isKind func(id string) bool, cancel func(id string) bool) {
	var req CancelRequest
	if !a.decode(w, r, &req) {
		return
	}
	if req.ID == "" || !isKind(req.ID) || !cancel(req.ID) {
		writeError(w, http.StatusNotFound, "no rule with id %q", req.ID)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (a *API) hasRule(bounce bool) func(string) bool {
	return func(id string) bool {
		sus, bounces := a.srv.QueueRules()
		list := sus
		if bounce {
			list = bounces
		}
		for _, r := range list {
			if r.ID == id {
				return true
			}
		}
		return false
	}
}

func (a *API) bounceCancel(w http.ResponseWriter, r *http.Request) {
	a.cancelRule(w, r, a.hasRule(true), a.srv.CancelQueueRule)
}

func (a *API) suspend(w http.ResponseWriter, r *http.Request) {
	var req SuspendRequest
	if !a.decode(w, r, &req) {
		return
	}
	if req.Reason == "" {
		writeError(w, http.StatusBadRequest, "reason is required")
		return
	}
	d, err := ruleDuration(req.Duration, req.Expires)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	m := mta.QueueMatch{Campaign: req.Campaign, Tenant: req.Tenant, Domain: req.Domain, Queues: req.QueueNames}
	rule := a.srv.SuspendQueues(m, req.Reason, d)
	writeJSON(w, http.StatusOK, IDResponse{ID: rule.ID})
}

func (a *API) suspendList(w http.ResponseWriter, _ *http.Request) {
	sus, _ := a.srv.QueueRules()
	out := make([]SuspendEntry, 0, len(sus))
	for _, s := range sus {
		out = append(out, SuspendEntry{
			ID: s.ID, Reason: s.Reason, Duration: FormatDuration(time.Until(s.Expires)),
			Campaign: s.Match.Campaign, Tenant: s.Match.Tenant, Domain: s.Match.Domain, QueueNames: s.Match.Queues,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) suspendCancel(w http.ResponseWriter, r *http.Request) {
	a.cancelRule(w, r, a.hasRule(false), a.srv.CancelQueueRule)
}

func (a *API) suspendReady(w http.ResponseWriter, r *http.Request) {
	var req SuspendReadyRequest
	if !a.decode(w, r, &req) {
		return
	}
	if req.Name == "" || req.Reason == "" {
		writeError(w, http.StatusBadRequest, "name and reason are required")
		return
	}
	d, err := ruleDuration(req.Duration, req.Expires)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	rule := a.srv.SuspendReadyQueue(req.Name, req.Reason, d)
	writeJSON(w, http.StatusOK, IDResponse{ID: rule.ID})
}

func (a *API) suspendReadyList(w http.ResponseWriter, _ *http.Request) {
	rules := a.srv.ReadyQueueSuspensions()
	out := make([]SuspendReadyEntry, 0, len(rules))
	for _, s := range rules {
		out = append(out, SuspendReadyEntry{ID: s.ID, Name: s.Name, Reason: s.Reason, Duration: FormatDuration(time.Until(s.Expires)), Expires: s.Expires.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) suspendReadyCancel(w http.ResponseWriter, r *http.Request) {
	a.cancelRule(w, r, func(string) bool { return true }, a.srv.CancelReadyQueueSuspension)
}

func (a *API) rebind(w http.ResponseWriter, r *http.Request) {
	var req RebindRequest
	if !a.decode(w, r, &req) {
		return
	}
	if req.Reason == "" {
		writeError(w, http.StatusBadRequest, "reason is required")
		return
	}
	if req.TriggerRebindEvent {
		writeError(w, http.StatusBadRequest, "trigger_rebind_event is not supported")
		return
	}
	meta := make(map[string]any, len(req.Data))
	for k, v := range req.Data {
		meta[k] = v
	}
	n := a.srv.Rebind(mta.RebindRequest{
		Match:       mta.QueueMatch{Campaign: req.Campaign, Tenant: req.Tenant, Domain: req.Domain, RoutingDomain: req.RoutingDomain, Queues: req.QueueNames},
		Meta:        meta,
		AlwaysFlush: req.AlwaysFlush, Reason: req.Reason, SuppressLogging: req.SuppressLogging,
	})
	writeJSON(w, http.StatusOK, RebindResponse{Rebound: n})
}

func (a *API) inspectMessage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, err := spool.ParseID(q.Get("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "id: %v", err)
		return
	}
	wantBody := q.Get("want_body") == "true"
	info, err := a.srv.InspectMessage(r.Context(), id, wantBody)
	if errors.Is(err, mta.ErrUnknownMessage) {
		writeError(w, http.StatusNotFound, "no message %s in the spool", id)
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	msg := InspectMessage{Sender: info.Sender, Recipient: info.Recipients, Queue: info.Queue, Meta: info.Meta, NumAttempts: info.NumAttempts}
	if msg.Meta == nil {
		msg.Meta = map[string]any{}
	}
	if !info.Due.IsZero() {
		due := info.Due.UTC()
		msg.Due = &due
	}
	if wantBody {
		s := string(info.Data)
		msg.Data = &s
	}
	writeJSON(w, http.StatusOK, InspectResponse{ID: id.String(), Message: msg})
}

func (a *API) queueSummary(w http.ResponseWriter, _ *http.Request) {
	sched := a.srv.QueueSummary()
	out := QueueSummary{Scheduled: make([]ScheduledQueue, 0, len(sched)), Ready: []ReadyQueue{}}
	for name, n := range sched {
		out.Scheduled = append(out.Scheduled, ScheduledQueue{Name: name, Count: n})
	}
	sort.Slice(out.Scheduled, func(i, j int) bool { return out.Scheduled[i].Name < out.Scheduled[j].Name })
	suspended := map[string]bool{}
	for _, s := range a.srv.ReadyQueueSuspensions() {
		suspended[s.Name] = true
	}
	for _, rq := range a.srv.ReadyQueues() {
		pc := rq.PathConfig
		out.Ready = append(out.Ready, ReadyQueue{
			Name: rq.Name, Site: rq.Site, Source: rq.Source, Pool: rq.Pool, Queued: rq.Queued, Connections: rq.Connections,
			Suspended: suspended[rq.Name] || pc.Suspended,
			PathConfig: PathSummary{
				ConnectionLimit: pc.ConnectionLimit, MaxDeliveriesPerConnection: pc.MaxDeliveriesPerConnection,
				MaxMessageRate: pc.MaxMessageRate, MaxConnectionRate: pc.MaxConnectionRate,
				EnableTLS: string(pc.EnableTLS), IdleTimeout: pc.IdleTimeout.String(), Suspended: pc.Suspended,
			},
		})
	}
	writeJSON(w, http.StatusOK, out)
}
