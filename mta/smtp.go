package mta

import (
	"context"
	"errors"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
)

// smtpOpener connects to the hosts of one delivery plan.
type smtpOpener struct {
	srv    *Server
	source egress.EgressSource
	plan   *egress.MXPlan
}

func (s *Server) smtpOpener(source egress.EgressSource, plan *egress.MXPlan) sessionOpener {
	return &smtpOpener{srv: s, source: source, plan: plan}
}

func (o *smtpOpener) Protocol() string { return "ESMTP" }

func (o *smtpOpener) Open(ctx context.Context, cfg shaping.PathConfig) (deliverySession, *reply) {
	conn, err := egress.Dial(ctx, egress.DialOptions{
		Source:    o.source,
		Hosts:     o.plan.Hosts,
		Port:      int(o.plan.Port),
		Config:    cfg,
		TLSConfig: o.srv.opts.TLS,
		Site:      o.plan.SiteName,
		Hostname:  o.srv.opts.Hostname,
		Logger:    o.srv.log,
	})
	if err != nil {
		resp, ok := egress.ResponseOf(err)
		if !ok {
			resp = egress.Response{Code: 451, Enhanced: "4.4.0", Text: egress.InternalPrefix + err.Error()}
		}
		r := fromEgress(resp)
		return nil, &r
	}
	return &smtpSession{conn: conn}, nil
}

// smtpSession is an open SMTP connection to a destination.
type smtpSession struct{ conn *egress.Conn }

func (s *smtpSession) Send(ctx context.Context, env *envelope) []reply {
	res, err := s.conn.Send(ctx, egress.Envelope{Sender: env.sender, Recipients: env.recipients, Data: env.data})
	if errors.Is(err, egress.ErrConnUnusable) {
		return nil // nothing was sent: not an attempt
	}
	out := make([]reply, len(env.recipients))
	if len(res.Recipients) == len(env.recipients) {
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
	return uniform(fromEgress(resp), len(env.recipients))
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
		ti = tlsInfo{cipher: info.TLS.Cipher, version: info.TLS.Version}
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
