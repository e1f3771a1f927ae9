package mta

import (
	"context"
	"errors"
	"strings"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
)

// smtpOpener connects to the hosts of one delivery plan.
type smtpOpener struct {
	srv    *Server
	source egress.EgressSource
	plan   *egress.MXPlan
	viaMX  bool // the hosts came from the domain's MX records: MTA-STS applies
}

func (s *Server) smtpOpener(source egress.EgressSource, plan *egress.MXPlan, viaMX bool) sessionOpener {
	return &smtpOpener{srv: s, source: source, plan: plan, viaMX: viaMX}
}

func (o *smtpOpener) Protocol() string { return "ESMTP" }

func (o *smtpOpener) Open(ctx context.Context, cfg shaping.PathConfig) (deliverySession, *reply) {
	opts := egress.DialOptions{
		Source:    o.source,
		Hosts:     o.plan.Hosts,
		Port:      int(o.plan.Port),
		Config:    cfg,
		TLSConfig: o.srv.opts.TLS,
		Site:      o.plan.SiteName,
		Hostname:  o.srv.opts.Hostname,
		Logger:    o.srv.log,
		MTASTS:    o.srv.mtasts,
		DANE:      o.srv.resolver, // secure only with ResolverOptions.TrustAD
		MXSecure:  o.plan.Secure,
		BrokenTLS: o.srv.brokenTLS,
	}
	if o.viaMX {
		opts.Domain = o.plan.Domain
	}
	conn, err := egress.Dial(ctx, opts)
	if err != nil {
		resp, ok := egress.ResponseOf(err)
		if !ok {
			resp = egress.Response{Code: 451, Enhanced: "4.4.0", Text: egress.InternalPrefix + err.Error()}
		}
		r := fromEgress(resp)
		return nil, &r
	}
	return &smtpSession{conn: conn, maxBatch: cfg.MaxRecipientsPerBatch}, nil
}

// smtpSession is an open SMTP connection to a destination.
type smtpSession struct {
	conn     *egress.Conn
	maxBatch int // max_recipients_per_batch; 0 means no limit
}

// Send sends env in transactions of at most max_recipients_per_batch
// recipients on the connection. Recipients refused with 452 "too many
// recipients" in a transaction that accepted others go again in the next
// one, as KumoMTA does; a host that accepts none keeps them for a retry.
// It returns nil only when nothing at all could be sent.
func (s *smtpSession) Send(ctx context.Context, env *envelope) []reply {
	out := make([]reply, len(env.recipients))
	pending := make([]int, len(env.recipients))
	for i := range pending {
		pending[i] = i
	}
	sent := false
	for len(pending) > 0 {
		n := len(pending)
		if s.maxBatch > 0 {
			n = min(n, s.maxBatch)
		}
		batch, rest := pending[:n], pending[n:]
		rcpts := make([]string, n)
		for i, idx := range batch {
			rcpts[i] = env.recipients[idx]
		}
		replies := s.transaction(ctx, env, rcpts)
		if replies == nil {
			if !sent {
				return nil // nothing was sent: not an attempt
			}
			for _, idx := range pending {
				out[idx] = internalReply(451, "4.4.2", "connection became unusable before this recipient's batch")
			}
			return out
		}
		sent = true
		var again []int
		accepted := false
		for i, idx := range batch {
			out[idx] = replies[i]
			accepted = accepted || replies[i].success()
			if tooManyRecipients(replies[i]) {
				again = append(again, idx)
			}
		}
		pending = rest
		if accepted && len(again) > 0 {
			pending = append(again, rest...)
		}
	}
	return out
}

// tooManyRecipients reports a 452 refusal of a recipient for the size of
// the transaction (RFC 5321 section 4.5.3.1.10), not for the recipient.
func tooManyRecipients(r reply) bool {
	return r.Code == 452 && (r.Enhanced == [3]int{4, 5, 3} || strings.Contains(strings.ToLower(r.Text), "too many recipients"))
}

// transaction runs one mail transaction for rcpts and returns one reply
// per recipient, or nil when the connection could not send at all.
func (s *smtpSession) transaction(ctx context.Context, env *envelope, rcpts []string) []reply {
	res, err := s.conn.Send(ctx, egress.Envelope{Sender: env.sender, Recipients: rcpts, Data: env.data})
	if errors.Is(err, egress.ErrConnUnusable) {
		return nil
	}
	if len(res.Recipients) == len(rcpts) {
		out := make([]reply, len(rcpts))
		for i, r := range res.Recipients {
			out[i] = fromEgress(r)
		}
		return out
	}
	// No per-recipient result: the failure applies to all of them.
	resp, ok := egress.ResponseOf(err)
	if !ok {
		resp = egress.Response{Code: 451, Enhanced: "4.0.0", Text: egress.InternalPrefix + "send failed: " + errText(err)}
	}
	return uniform(fromEgress(resp), len(rcpts))
}

func (s *smtpSession) Usable() bool { return s.conn.Usable() }
func (s *smtpSession) Close()       { s.conn.Close() }

func (s *smtpSession) Peer() (*logs.PeerAddress, *logs.SourceAddress, tlsInfo) {
	info := s.conn.Info()
	peer := &logs.PeerAddress{Name: info.Host, Addr: info.Addr.Addr().String()}
	var src *logs.SourceAddress
	if info.LocalAddr.IsValid() {
		src = &logs.SourceAddress{Address: info.LocalAddr.String()}
		if info.Proxy != nil {
			// Through a proxy, LocalAddr is the address the proxy sends
			// from; name the hop as KumoMTA's records do.
			src.Server = info.Proxy.Server.String()
			src.Protocol = info.Proxy.Protocol
		}
	}
	var ti tlsInfo
	if info.TLS != nil {
		ti = tlsInfo{cipher: info.TLS.Cipher, version: info.TLS.Version, peerSubject: info.TLS.PeerSubjectName}
	}
	return peer, src, ti
}

func fromEgress(r egress.Response) reply {
	out := reply{Code: r.Code, Text: r.Text, Command: r.Command}
	if enh, ok := parseEnhanced(r.Enhanced); ok {
		out.Enhanced = enh
	}
	return out
}

func errText(err error) string {
	if err == nil {
		return "no result"
	}
	return err.Error()
}
