package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/mta/logs"
)

// The kcli-style subcommands: each calls the HTTP API of a running
// mtakitd and prints a table, or the API's JSON with -json.

type cliFunc func(args []string, stdout, stderr io.Writer) error

// cliCommand returns the subcommand called name, or nil.
func cliCommand(name string) cliFunc {
	return map[string]cliFunc{
		"queue-summary":          cmdQueueSummary,
		"bounce":                 cmdBounce,
		"bounce-list":            cmdBounceList,
		"bounce-cancel":          cancelCmd("bounce-cancel", "/api/admin/bounce/v1"),
		"suspend":                cmdSuspend,
		"suspend-list":           cmdSuspendList,
		"suspend-cancel":         cancelCmd("suspend-cancel", "/api/admin/suspend/v1"),
		"suspend-ready-q":        cmdSuspendReady,
		"suspend-ready-q-list":   cmdSuspendReadyList,
		"suspend-ready-q-cancel": cancelCmd("suspend-ready-q-cancel", "/api/admin/suspend-ready-q/v1"),
		"rebind":                 cmdRebind(false),
		"flush":                  cmdRebind(true),
		"inspect-message":        cmdInspect,
		"logs":                   cmdLogs,
	}[name]
}

const cliUsage = `
subcommands (call the HTTP API of a running mtakitd; -h on each for flags):
  queue-summary                     scheduled and ready queues
  bounce -reason R [match]          bounce queued mail now and new arrivals for -duration
  bounce-list | bounce-cancel ID
  suspend -reason R [match]         hold delivery of matching scheduled queues
  suspend-list | suspend-cancel ID
  suspend-ready-q -name Q -reason R hold one ready queue (source->site@smtp_client)
  suspend-ready-q-list | suspend-ready-q-cancel ID
  rebind -reason R -set k=v [match] move matching mail (e.g. -set routing_domain=D)
  flush [match]                     make matching mail due now
  inspect-message [-body] ID
  logs [-f] [DIR]                   print log records (default DIR: mtakit-data/logs)
match: -domain D -tenant T -campaign C -routing-domain R -queue NAME (repeatable)
`

// client talks to the API.
type client struct {
	base  string
	token string
	json  bool
	out   io.Writer
}

// cliFlags returns a flag set with the flags every API subcommand has.
func cliFlags(name string, stderr io.Writer) (*flag.FlagSet, *client) {
	c := &client{}
	fs := flag.NewFlagSet("mtakitd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := os.Getenv("MTAKITD_ENDPOINT")
	if endpoint == "" {
		endpoint = os.Getenv("KUMO_KCLI_ENDPOINT") // kcli's variable
	}
	if endpoint == "" {
		endpoint = "http://127.0.0.1:8000"
	}
	fs.StringVar(&c.base, "endpoint", endpoint, "`URL` of mtakitd's HTTP API ($MTAKITD_ENDPOINT)")
	fs.StringVar(&c.token, "token", os.Getenv(tokenEnv), "bearer `token` ($"+tokenEnv+")")
	fs.BoolVar(&c.json, "json", false, "print the API's JSON instead of a table")
	return fs, c
}

// apiError is an error answer of the API.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg) }

// call sends in as JSON (nil: no body) and decodes the answer into out.
// With -json the answer is also printed.
func (c *client) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.base, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is mtakitd running with -http? %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &apiError{resp.StatusCode, e.Error}
	}
	if c.json {
		var pretty bytes.Buffer
		if json.Indent(&pretty, b, "", "  ") == nil {
			b = append(pretty.Bytes(), '\n')
		}
		c.out.Write(b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// parse parses args and sets the output; it returns flag.ErrHelp for -h.
func (c *client) parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	c.out = stdout
	return fs.Parse(args)
}

// matchFlags adds the queue selection flags.
type matchFlags struct {
	domain, tenant, campaign, routing string
	queues                            stringList
}

func (m *matchFlags) add(fs *flag.FlagSet, routing bool) {
	fs.StringVar(&m.domain, "domain", "", "match recipient `domain`")
	fs.StringVar(&m.tenant, "tenant", "", "match `tenant`")
	fs.StringVar(&m.campaign, "campaign", "", "match `campaign`")
	if routing {
		fs.StringVar(&m.routing, "routing-domain", "", "match routing `domain`")
	}
	fs.Var(&m.queues, "queue", "match scheduled queue `name` exactly (repeatable; overrides the others)")
}

func (m *matchFlags) empty() bool {
	return m.domain == "" && m.tenant == "" && m.campaign == "" && m.routing == "" && len(m.queues) == 0
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func table(w io.Writer, header string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdQueueSummary(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("queue-summary", stderr)
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	var s httpapi.QueueSummary
	if err := c.call("GET", "/api/admin/queue-summary/v1", nil, &s); err != nil || c.json {
		return err
	}
	rows := make([][]string, 0, len(s.Scheduled))
	total := 0
	for _, q := range s.Scheduled {
		rows = append(rows, []string{q.Name, fmt.Sprint(q.Count)})
		total += q.Count
	}
	table(stdout, "SCHEDULED QUEUE\tCOUNT", rows)
	fmt.Fprintf(stdout, "%d messages in %d scheduled queues\n\n", total, len(s.Scheduled))
	rows = rows[:0]
	for _, q := range s.Ready {
		state := ""
		if q.Suspended {
			state = "suspended"
		}
		pc := q.PathConfig
		limits := fmt.Sprintf("conn=%d rate=%s tls=%s", pc.ConnectionLimit, orDash(pc.MaxMessageRate), pc.EnableTLS)
		rows = append(rows, []string{q.Name, q.Pool, fmt.Sprint(q.Queued), fmt.Sprint(q.Connections), limits, state})
	}
	table(stdout, "READY QUEUE\tPOOL\tQUEUED\tCONNECTIONS\tPATH CONFIG\tSTATE", rows)
	return nil
}

func cmdBounce(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("bounce", stderr)
	var m matchFlags
	m.add(fs, true)
	reason := fs.String("reason", "", "reason, quoted in each AdminBounce record (required)")
	duration := fs.String("duration", "", "keep bouncing new arrivals for `duration` (default 5m)")
	everything := fs.Bool("everything", false, "bounce every queue (required when no match flag is given)")
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	if *reason == "" {
		return errors.New("bounce: -reason is required")
	}
	if m.empty() && !*everything {
		return errors.New("bounce: give a match flag (-domain, -tenant, ...) or -everything")
	}
	req := httpapi.BounceRequest{Reason: *reason, Domain: m.domain, Tenant: m.tenant, Campaign: m.campaign, RoutingDomain: m.routing, QueueNames: m.queues, Duration: *duration}
	var resp httpapi.BounceResponse
	if err := c.call("POST", "/api/admin/bounce/v1", req, &resp); err != nil || c.json {
		return err
	}
	fmt.Fprintf(stdout, "bounce rule %s: %d messages bounced\n", resp.ID, resp.TotalBounced)
	return nil
}

func cmdBounceList(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("bounce-list", stderr)
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	var list []httpapi.BounceEntry
	if err := c.call("GET", "/api/admin/bounce/v1", nil, &list); err != nil || c.json {
		return err
	}
	rows := make([][]string, 0, len(list))
	for _, b := range list {
		rows = append(rows, []string{b.ID, matchText(b.Domain, b.Tenant, b.Campaign, b.RoutingDomain, b.QueueNames), b.Duration, fmt.Sprint(b.TotalBounced), b.Reason})
	}
	table(stdout, "ID\tMATCH\tREMAINING\tBOUNCED\tREASON", rows)
	return nil
}

func matchText(domain, tenant, campaign, routing string, queues []string) string {
	if len(queues) > 0 {
		return "queue=" + strings.Join(queues, ",")
	}
	var parts []string
	for _, kv := range [][2]string{{"domain", domain}, {"tenant", tenant}, {"campaign", campaign}, {"routing_domain", routing}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, " ")
}

// cancelCmd makes a *-cancel subcommand for an admin endpoint.
func cancelCmd(name, path string) cliFunc {
	return func(args []string, stdout, stderr io.Writer) error {
		fs, c := cliFlags(name, stderr)
		id := fs.String("id", "", "`ID` of the rule (or give it as the argument)")
		if err := c.parse(fs, args, stdout); err != nil {
			return err
		}
		if *id == "" && fs.NArg() == 1 {
			*id = fs.Arg(0)
		}
		if *id == "" {
			return fmt.Errorf("%s: give the rule ID", name)
		}
		if err := c.call("DELETE", path, httpapi.CancelRequest{ID: *id}, nil); err != nil || c.json {
			return err
		}
		fmt.Fprintf(stdout, "cancelled %s\n", *id)
		return nil
	}
}

func cmdSuspend(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("suspend", stderr)
	var m matchFlags
	m.add(fs, false)
	reason := fs.String("reason", "", "reason (required)")
	duration := fs.String("duration", "", "suspend for `duration` (default 5m)")
	everything := fs.Bool("everything", false, "suspend every queue (required when no match flag is given)")
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	if *reason == "" {
		return errors.New("suspend: -reason is required")
	}
	if m.empty() && !*everything {
		return errors.New("suspend: give a match flag (-domain, -tenant, ...) or -everything")
	}
	req := httpapi.SuspendRequest{Reason: *reason, Domain: m.domain, Tenant: m.tenant, Campaign: m.campaign, QueueNames: m.queues, Duration: *duration}
	var resp httpapi.IDResponse
	if err := c.call("POST", "/api/admin/suspend/v1", req, &resp); err != nil || c.json {
		return err
	}
	fmt.Fprintf(stdout, "suspension %s\n", resp.ID)
	return nil
}

func cmdSuspendList(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("suspend-list", stderr)
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	var list []httpapi.SuspendEntry
	if err := c.call("GET", "/api/admin/suspend/v1", nil, &list); err != nil || c.json {
		return err
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		rows = append(rows, []string{s.ID, matchText(s.Domain, s.Tenant, s.Campaign, "", s.QueueNames), s.Duration, s.Reason})
	}
	table(stdout, "ID\tMATCH\tREMAINING\tREASON", rows)
	return nil
}

func cmdSuspendReady(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("suspend-ready-q", stderr)
	name := fs.String("name", "", "ready queue `name`, as queue-summary shows it (required)")
	reason := fs.String("reason", "", "reason (required)")
	duration := fs.String("duration", "", "suspend for `duration` (default 5m)")
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	if *name == "" || *reason == "" {
		return errors.New("suspend-ready-q: -name and -reason are required")
	}
	var resp httpapi.IDResponse
	if err := c.call("POST", "/api/admin/suspend-ready-q/v1", httpapi.SuspendReadyRequest{Name: *name, Reason: *reason, Duration: *duration}, &resp); err != nil || c.json {
		return err
	}
	fmt.Fprintf(stdout, "suspension %s\n", resp.ID)
	return nil
}

func cmdSuspendReadyList(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("suspend-ready-q-list", stderr)
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	var list []httpapi.SuspendReadyEntry
	if err := c.call("GET", "/api/admin/suspend-ready-q/v1", nil, &list); err != nil || c.json {
		return err
	}
	rows := make([][]string, 0, len(list))
	for _, s := range list {
		rows = append(rows, []string{s.ID, s.Name, s.Duration, s.Reason})
	}
	table(stdout, "ID\tREADY QUEUE\tREMAINING\tREASON", rows)
	return nil
}

// cmdRebind is rebind, or with flush set the flush subcommand: a rebind
// that only makes matching mail due now.
func cmdRebind(flush bool) cliFunc {
	name := "rebind"
	if flush {
		name = "flush"
	}
	return func(args []string, stdout, stderr io.Writer) error {
		fs, c := cliFlags(name, stderr)
		var m matchFlags
		m.add(fs, true)
		reason := fs.String("reason", "", "reason, quoted in each AdminRebind record")
		var set stringList
		alwaysFlush := flush
		if !flush {
			fs.Var(&set, "set", "set meta `key=value` (repeatable), e.g. routing_domain=relay.example")
			fs.BoolVar(&alwaysFlush, "always-flush", false, "also make mail that stays in its queue due now")
		}
		if err := c.parse(fs, args, stdout); err != nil {
			return err
		}
		if *reason == "" {
			if !flush {
				return errors.New("rebind: -reason is required")
			}
			*reason = "flush"
		}
		if !flush && len(set) == 0 && !alwaysFlush {
			return errors.New("rebind: give -set key=value or -always-flush")
		}
		data := map[string]string{}
		for _, kv := range set {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("rebind: -set %q: want key=value", kv)
			}
			data[k] = v
		}
		req := httpapi.RebindRequest{Reason: *reason, Data: data, Domain: m.domain, Tenant: m.tenant, Campaign: m.campaign, RoutingDomain: m.routing, QueueNames: m.queues, AlwaysFlush: alwaysFlush}
		var resp httpapi.RebindResponse
		if err := c.call("POST", "/api/admin/rebind/v1", req, &resp); err != nil || c.json {
			return err
		}
		fmt.Fprintf(stdout, "%d messages %s\n", resp.Rebound, map[bool]string{true: "flushed", false: "rebound"}[flush])
		return nil
	}
}

func cmdInspect(args []string, stdout, stderr io.Writer) error {
	fs, c := cliFlags("inspect-message", stderr)
	id := fs.String("id", "", "message `ID` (or give it as the argument)")
	body := fs.Bool("body", false, "include the message content")
	if err := c.parse(fs, args, stdout); err != nil {
		return err
	}
	if *id == "" && fs.NArg() == 1 {
		*id = fs.Arg(0)
	}
	if *id == "" {
		return errors.New("inspect-message: give the message ID")
	}
	q := url.Values{"id": {*id}}
	if *body {
		q.Set("want_body", "true")
	}
	var resp httpapi.InspectResponse
	if err := c.call("GET", "/api/admin/inspect-message/v1?"+q.Encode(), nil, &resp); err != nil || c.json {
		return err
	}
	m := resp.Message
	due := "now"
	if m.Due != nil {
		due = m.Due.Local().Format(time.RFC3339)
	}
	rows := [][]string{
		{"id", resp.ID}, {"sender", orDash(m.Sender)}, {"recipients", strings.Join(m.Recipient, ", ")},
		{"queue", m.Queue}, {"attempts", fmt.Sprint(m.NumAttempts)}, {"due", due},
	}
	keys := make([]string, 0, len(m.Meta))
	for k := range m.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rows = append(rows, []string{"meta " + k, fmt.Sprint(m.Meta[k])})
	}
	table(stdout, "FIELD\tVALUE", rows)
	if m.Data != nil {
		fmt.Fprintf(stdout, "\n%s", *m.Data)
	}
	return nil
}

// cmdLogs prints the records of a log directory, and with -f follows
// new ones until interrupted.
func cmdLogs(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mtakitd logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	follow := fs.Bool("f", false, "follow: wait for new records until interrupted")
	asJSON := fs.Bool("json", false, "print each record's JSON line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir := "mtakit-data/logs"
	if fs.NArg() > 1 {
		return errors.New("logs: at most one directory")
	}
	if fs.NArg() == 1 {
		dir = fs.Arg(0)
	}
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	return logs.Tail(ctx, dir, logs.TailOptions{Follow: *follow}, func(r *logs.Record) error {
		if *asJSON {
			return enc.Encode(r)
		}
		_, err := fmt.Fprintln(stdout, recordLine(r))
		return err
	})
}

// recordLine is a one-line summary of a record for a person.
func recordLine(r *logs.Record) string {
	var b strings.Builder
	ts := r.EventTime
	if t, err := time.Parse(time.RFC3339Nano, r.EventTime); err == nil {
		ts = t.Local().Format("2006-01-02 15:04:05.000")
	}
	fmt.Fprintf(&b, "%s %-16s %s <%s> -> <%s> queue=%s", ts, r.Type, r.ID, r.Sender, strings.Join(r.Recipient, ","), r.Queue)
	if r.Site != "" {
		fmt.Fprintf(&b, " site=%s", r.Site)
	}
	fmt.Fprintf(&b, " attempts=%d %d", r.NumAttempts, r.Response.Code)
	if e := r.Response.EnhancedCode; e != nil {
		fmt.Fprintf(&b, " %d.%d.%d", e.Class, e.Subject, e.Detail)
	}
	if r.Response.Content != "" {
		b.WriteString(" " + r.Response.Content)
	}
	return b.String()
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}
