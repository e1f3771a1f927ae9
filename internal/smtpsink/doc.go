// Package smtpsink is an SMTP sink for mtakit's tests and benchmarks: a
// server on 127.0.0.1 that the delivery engine delivers to, which counts
// what it accepts, optionally keeps it, and injects faults on command.
//
// # Starting and stopping
//
//	sink, err := smtpsink.Start(smtpsink.Options{Store: true})
//	if err != nil { ... }
//	defer sink.Close()
//	addr := sink.Addr() // "127.0.0.1:NNNNN"
//
// The listen address must be a loopback IP (default "127.0.0.1:0"; an empty
// host or "localhost" means 127.0.0.1); any other host is refused. Close closes the listener and every connection
// (also connections held by a Hang or Delay fault) and returns once every
// goroutine the sink started has finished.
//
// # What is counted
//
// A message (transaction) is accepted when the reply to the end of DATA is
// 250. [Sink.Count] is the number of accepted messages; [Stats.Recipients]
// (and [Sink.Recipients]) is the number of recipient deliveries in them, so a
// message to three recipients adds 1 to Count and 3 to Recipients.
// Recipients refused at RCPT are not part of the message. [Sink.WaitCount],
// [Sink.WaitRecipients] and [Sink.Wait] block on a notification channel (no
// polling) until a condition on [Stats] holds, the context ends, or the sink
// closes; a context without a deadline gets [DefaultWaitTimeout].
//
// With Options.Store the messages are kept ([Sink.Messages]); without it the
// sink keeps no bodies, only counters and, for exactly-once assertions, one
// 64-bit hash per (key, recipient) delivery, where key is the value of
// Options.KeyHeader (default "Message-ID"; use e.g. "X-Test-Seq").
// [Sink.Duplicates] lists every (key, recipient) accepted more than once and
// [Sink.DeliveryCount] answers for one pair. Messages without the key header
// are counted in [Stats.Unkeyed] and not tracked.
//
// # Faults
//
// A [Fault] is a rule applied at one [Stage] of the SMTP dialogue:
// connection (banner), EHLO, STARTTLS, MAIL, RCPT, start of DATA (after the
// 354, before the body is read) and end of DATA (after the final dot). Its
// [Action] is one of
//
//   - [Reply]: answer Code/Enhanced/Text (4xx or 5xx) instead of accepting;
//     with Code 0 the stage proceeds normally (useful with Delay);
//   - [Disconnect]: close the TCP connection without a reply, or after
//     writing the reply line Code/Enhanced/Text when Code is set (e.g. a 421
//     followed by a close, or a banner followed by a close);
//   - [Hang]: never answer; the connection is held until the client closes
//     it, the sink closes, or Options.HangLimit passes — to exercise client
//     timeouts;
//   - [Garbage]: write Text (default: a non-SMTP line) verbatim and close.
//
// Delay makes any action (and a normal reply) slow. Times limits a fault to
// its first N matches; Match (nil = everything) selects the connection,
// sender, recipient or message it applies to, with helpers [MatchRcpt],
// [MatchLocalPart], [MatchFrom], [MatchHeader]. Faults are added, removed and
// cleared at run time ([Sink.AddFault], [Sink.RemoveFault],
// [Sink.ClearFaults]) from any goroutine; the first matching fault (in the
// order added) wins. At the end of DATA, Fault.Deliver records the message as
// accepted before the action runs: a message that was "queued" but whose 250
// was lost, which is how duplicate deliveries arise.
//
// Without Options.DisableMagic, recipient local parts work like KumoMTA's
// test sink: a local part containing "tempfail" gets 451 4.3.0 at RCPT,
// "permfail" gets 550 5.1.1, "disconnect" drops the connection at RCPT.
// Explicit faults are checked before these.
//
// A [Mix] adds seeded random faults (temporary, permanent, disconnect, slow)
// at one stage for mixed-fault reliability runs. The random sequence is
// deterministic for a seed; which message gets which draw depends on arrival
// order, so it is reproducible only with one connection at a time.
//
// Match functions run on the connection's goroutine (StageConnect: on the
// accept loop) without locks held; they must be fast and must not block.
//
// # Recipes
//
//	// 451 for every recipient at one domain, first 3 times only
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Match: smtpsink.MatchRcpt("@example.net"),
//		Code: 451, Enhanced: smtp.EnhancedCode{4, 7, 1}, Times: 3})
//	// drop the connection after the final dot, message not accepted
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageData, Action: smtpsink.Disconnect})
//	// ... or accepted (the client will retry and duplicate it)
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageData, Action: smtpsink.Disconnect, Deliver: true})
//	// close right after the banner
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Disconnect, Code: 220})
//	// 421 banner, garbage banner, banner that never comes
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageConnect, Code: 421})
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Garbage})
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageConnect, Action: smtpsink.Hang})
//	// no reply to the final dot (client's data timeout), slow RCPT replies
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageData, Action: smtpsink.Hang})
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageRcpt, Delay: 2 * time.Second})
//	// STARTTLS offered, then garbage instead of a handshake
//	sink.AddFault(smtpsink.Fault{Stage: smtpsink.StageStartTLS, Action: smtpsink.Garbage})
//	// 10% 4xx, 5% 5xx, 5% drops at end of DATA, reproducible
//	sink.SetMix(smtpsink.Mix{Stage: smtpsink.StageData, TempFail: 0.1, PermFail: 0.05, Disconnect: 0.05, Seed: 1})
//
// Every applied fault is counted in [Stats] (Faults, and by kind
// TempFailures, PermFailures, Disconnects, Hangs, Garbage, Delays), so a
// reliability run can check that every refusal and drop the client saw was
// injected, and [Sink.FaultHits] counts the matches of one rule.
//
// # TLS
//
// STARTTLS is advertised only with Options.TLS (a self-signed ECDSA
// certificate for 127.0.0.1, ::1 and localhost is generated; [Sink.RootCAs]
// returns a pool that trusts it) or Options.TLSConfig. Faults at
// [StageStartTLS] run when the client's ClientHello arrives, after the
// "220 Ready to start TLS": Garbage writes non-TLS bytes and closes,
// Disconnect closes, Hang holds, Reply with a Code aborts the handshake with
// a TLS alert.
//
// With Options.Auth the sink requires SMTP AUTH (PLAIN or LOGIN, offered
// inside TLS unless Options.AllowInsecureAuth) before MAIL FROM, answering
// 530 5.7.0 without it and 535 5.7.8 to credentials Auth refuses;
// Message.AuthUser records the user.
//
// # How it is built
//
// The SMTP protocol is go-smtp's server (github.com/emersion/go-smtp). The
// faults it cannot express are done one level down: the sink wraps the
// listener and every net.Conn. Banner faults act on the connection's first
// write (the banner go-smtp writes), STARTTLS faults in
// tls.Config.GetConfigForClient, and Disconnect/Hang/Garbage in the other
// stages write to and close the connection from inside the session callback
// before go-smtp writes its own reply (which then fails silently on the
// closed connection). Replies are returned as unwrapped *smtp.SMTPError
// values, and the end-of-DATA success reply is "250 2.0.0 OK: queued as
// S<n>" with n a sequence number unique within the sink.
//
// The sink logs only to Options.Logger (default: nowhere), at Debug level,
// and nothing per message unless that logger enables Debug.
package smtpsink
