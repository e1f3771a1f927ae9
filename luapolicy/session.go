package luapolicy

import (
	"context"
	"errors"
	"fmt"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
)

// The SMTP session events: KumoMTA's smtp_server_connection_accepted,
// smtp_server_ehlo, smtp_server_auth_plain, smtp_server_mail_from and
// smtp_server_mail_rcpt_to, run by the listener (listener.Hooks). Each gets
// the session's conn_meta, whose set_meta values reach every message of
// the session. kumo.reject(code, text) answers the command with that
// reply; a handler that raises any other error answers a transient 451
// (454 for AUTH), and the listener keeps serving.

// ListenerHooks returns the listener hooks that fire the policy's session
// events; a hook is nil when the policy has no handler for its event.
func (p *Policy) ListenerHooks() listener.Hooks {
	var h listener.Hooks
	if p.HasHandler("smtp_server_connection_accepted") {
		h.Connect = p.ConnectionAccepted
	}
	if p.HasHandler("smtp_server_ehlo") {
		h.EHLO = p.EHLO
	}
	if p.HasHandler("smtp_server_auth_plain") {
		h.AuthPlain = p.AuthPlain
	}
	if p.HasHandler("smtp_server_mail_from") {
		h.MailFrom = p.MailFrom
	}
	if p.HasHandler("smtp_server_mail_rcpt_to") {
		h.RcptTo = p.RcptTo
	}
	return h
}

// sessionEvent fires event with the arguments args builds around the
// session's conn_meta (on the state running it, nil for conn_meta alone)
// and hands the result to result while the state is held. kumo.reject
// becomes the *smtp.SMTPError of mta.Reject; any other error is wrapped,
// for the listener to log and answer with a transient reply.
func (p *Policy) sessionEvent(ctx context.Context, event string, info *listener.SessionInfo, args func(s *state, connMeta lua.LValue) []lua.LValue, result func(v lua.LValue) error) error {
	if !p.HasHandler(event) {
		return nil
	}
	err := p.withState(ctx, func(s *state) error {
		cm := s.sessionConnMeta(info)
		a := []lua.LValue{cm}
		if args != nil {
			a = args(s, cm)
		}
		v, err := s.fire(event, a...)
		if err != nil {
			return err
		}
		if result != nil {
			return result(v)
		}
		return nil
	})
	var rej *rejectError
	if errors.As(err, &rej) {
		return mta.Reject(rej.code, rej.text)
	}
	if err != nil {
		return fmt.Errorf("luapolicy: %s: %w", event, err)
	}
	return nil
}

// ConnectionAccepted calls smtp_server_connection_accepted(conn_meta)
// before the greeting.
func (p *Policy) ConnectionAccepted(ctx context.Context, info *listener.SessionInfo) error {
	return p.sessionEvent(ctx, "smtp_server_connection_accepted", info, nil, nil)
}

// EHLO calls smtp_server_ehlo(domain, conn_meta, extensions). A handler
// that returns a list of strings replaces the extensions advertised, as in
// KumoMTA 2025.01.23 and later; nil keeps them. For HELO extensions is an
// empty list and the result is ignored.
func (p *Policy) EHLO(ctx context.Context, info *listener.SessionInfo, domain string, extensions []string) ([]string, error) {
	out := extensions
	err := p.sessionEvent(ctx, "smtp_server_ehlo", info, func(s *state, cm lua.LValue) []lua.LValue {
		t := s.L.NewTable()
		for _, e := range extensions {
			t.Append(lua.LString(e))
		}
		return []lua.LValue{lua.LString(domain), cm, t}
	}, func(v lua.LValue) error {
		if v == lua.LNil {
			return nil
		}
		t, ok := v.(*lua.LTable)
		if !ok {
			return fmt.Errorf("smtp_server_ehlo must return a list of extensions or nil, not a %s", v.Type())
		}
		list := make([]string, 0, t.Len())
		for i := 1; i <= t.Len(); i++ {
			str, ok := t.RawGetInt(i).(lua.LString)
			if !ok {
				return fmt.Errorf("smtp_server_ehlo returned a list holding a %s; extensions are strings", t.RawGetInt(i).Type())
			}
			list = append(list, string(str))
		}
		out = list
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AuthPlain calls smtp_server_auth_plain(authz, authc, password,
// conn_meta), which returns true to accept the credentials.
func (p *Policy) AuthPlain(ctx context.Context, info *listener.SessionInfo, authz, authc, password string) (bool, error) {
	if !p.HasHandler("smtp_server_auth_plain") {
		return false, nil
	}
	var ok bool
	err := p.sessionEvent(ctx, "smtp_server_auth_plain", info, func(s *state, cm lua.LValue) []lua.LValue {
		return []lua.LValue{lua.LString(authz), lua.LString(authc), lua.LString(password), cm}
	}, func(v lua.LValue) error {
		b, isBool := v.(lua.LBool)
		if !isBool && v != lua.LNil {
			return fmt.Errorf("smtp_server_auth_plain must return a boolean, not a %s", v.Type())
		}
		ok = bool(b)
		return nil
	})
	return ok, err
}

// MailFrom calls smtp_server_mail_from(sender, conn_meta); sender is an
// address object (.user, .domain, .email, tostring), empty for the null
// reverse-path.
func (p *Policy) MailFrom(ctx context.Context, info *listener.SessionInfo, sender string) error {
	return p.sessionEvent(ctx, "smtp_server_mail_from", info, func(s *state, cm lua.LValue) []lua.LValue {
		return []lua.LValue{s.pushAddress(parseAddress(sender)), cm}
	}, nil)
}

// RcptTo calls smtp_server_mail_rcpt_to(recipient, conn_meta) for each
// recipient the relay rules accept.
func (p *Policy) RcptTo(ctx context.Context, info *listener.SessionInfo, recipient string) error {
	return p.sessionEvent(ctx, "smtp_server_mail_rcpt_to", info, func(s *state, cm lua.LValue) []lua.LValue {
		return []lua.LValue{s.pushAddress(parseAddress(recipient)), cm}
	}, nil)
}
