package mta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/google/uuid"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// Options configures a Server. DataSpool and MetaSpool are required; every
// other field has a working default.
type Options struct {
	// Hostname names this server in greetings and Received headers;
	// default os.Hostname().
	Hostname string

	// DataSpool holds message bodies and MetaSpool envelopes and
	// scheduling state, as KumoMTA's "data" and "meta" spools. The Server
	// owns both and closes them on Shutdown or Close.
	DataSpool spool.Spool
	MetaSpool spool.Spool

	// Log receives a record for every event (reception, delivery, ...).
	// The Server owns it and closes it on Shutdown or Close. nil discards.
	Log logs.Sink
	// LogHeaders names message headers whose values are copied into every
	// log record's "headers" (configure_local_logs headers).
	LogHeaders []string
	// LogMeta names meta keys copied into every log record's "meta"
	// (configure_local_logs meta).
	LogMeta []string

	// Policy holds the hooks that customise reception.
	Policy Policy

	// Signer, when set, DKIM-signs every received message after the
	// MessageReceived hook and before it is spooled.
	Signer dkim.Signer

	// Logger receives operational logs; default slog.Default().
	Logger *slog.Logger
}

// Policy holds optional hooks, the Go counterpart of KumoMTA's Lua events.
type Policy struct {
	// MessageReceived is called for every message received over SMTP or
	// injected, after the Received header is added and before signing and
	// spooling (smtp_server_message_received / http_message_generated).
	// It may set meta (queue, tenant, campaign, routing_domain), change
	// the content, or reject the message by returning an error; use
	// Reject for a specific SMTP reply.
	MessageReceived func(ctx context.Context, msg *Message) error
}

// Server is an embeddable MTA: it receives mail, spools it durably and
// queues it for delivery.
type Server struct {
	opts   Options
	log    *slog.Logger
	sink   logs.Sink
	nodeID string
	queues *scheduledQueues

	mu        sync.Mutex
	listeners []*listener.Listener
	serving   sync.WaitGroup
	closed    bool
}

// New returns a Server for opts after recovering every message already in
// the spool into its queue.
func New(opts Options) (*Server, error) {
	if opts.DataSpool == nil || opts.MetaSpool == nil {
		return nil, errors.New("mta: Options.DataSpool and Options.MetaSpool are required")
	}
	if opts.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		opts.Hostname = h
	}
	s := &Server{
		opts:   opts,
		log:    opts.Logger,
		sink:   opts.Log,
		nodeID: uuid.NewString(),
		queues: newScheduledQueues(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.sink == nil {
		s.sink = discardSink{}
	}
	if err := s.recover(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// recover loads every message from the meta spool into the queues. A meta
// entry without data is a message whose store did not complete, so it was
// never acknowledged; it is removed.
func (s *Server) recover(ctx context.Context) error {
	var recovered, dropped int
	err := s.opts.MetaSpool.Enumerate(ctx, func(id spool.ID, b []byte) error {
		m, err := decodeMeta(id, b)
		if err != nil {
			// Keep it in the spool for a human to look at; do not guess.
			s.log.Error("unreadable meta in spool; message left in place", "id", id, "err", err)
			return nil
		}
		if _, err := s.opts.DataSpool.Load(ctx, id); errors.Is(err, spool.ErrNotFound) {
			s.log.Warn("meta without data in spool (store interrupted before acknowledgement); removing", "id", id)
			dropped++
			return s.opts.MetaSpool.Remove(ctx, id)
		} else if err != nil {
			return fmt.Errorf("mta: recover %s: %w", id, err)
		}
		msg := &Message{id: id, sender: m.Sender, recipients: m.Recipients, meta: m.Meta}
		s.queues.insert(&queuedMessage{id: id, queue: msg.QueueName(), meta: m})
		recovered++
		return nil
	})
	if err != nil {
		return fmt.Errorf("mta: recover spool: %w", err)
	}
	s.log.Info("spool recovered", "messages", recovered, "dropped", dropped)
	return nil
}

// ListenSMTP binds an ESMTP listener for cfg and serves it in the
// background. It returns the bound address (useful with port 0).
// cfg.Hostname defaults to Options.Hostname.
func (s *Server) ListenSMTP(cfg listener.Config) (net.Addr, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = s.opts.Hostname
	}
	l, err := listener.Listen(cfg, smtpHandler{s}, s.log)
	if err != nil {
		return nil, fmt.Errorf("mta: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil, errors.New("mta: server is shut down")
	}
	s.listeners = append(s.listeners, l)
	s.serving.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.serving.Done()
		if err := l.Serve(); err != nil {
			s.log.Error("SMTP listener stopped", "addr", l.Addr(), "err", err)
		}
	}()
	s.log.Info("SMTP listener started", "addr", l.Addr())
	return l.Addr(), nil
}

// QueuedCount returns the number of messages in the scheduled queues.
func (s *Server) QueuedCount() int { return s.queues.count() }

// QueueSummary returns the number of messages in each scheduled queue.
func (s *Server) QueueSummary() map[string]int { return s.queues.summary() }

// QueuedIDs returns the IDs of the messages in one scheduled queue.
func (s *Server) QueuedIDs(queue string) []spool.ID { return s.queues.ids(queue) }

// Shutdown stops the listeners gracefully (no new connections, idle
// sessions closed, transactions in progress finished), then closes the
// log and the spools. Undelivered mail stays in the spool for the next
// start. If ctx expires first, remaining connections are cut, the spools
// are still closed, and ctx's error is returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls := s.listeners
	s.mu.Unlock()

	errs := make([]error, len(ls))
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Go(func() { errs[i] = l.Shutdown(ctx) })
	}
	wg.Wait()
	s.serving.Wait()
	return errors.Join(append(errs, s.closeStores())...)
}

// Close stops the listeners immediately, cutting connections, and closes
// the log and the spools. Mail whose transaction was cut was never
// acknowledged.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	ls := s.listeners
	s.mu.Unlock()
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	s.serving.Wait()
	return errors.Join(append(errs, s.closeStores())...)
}

func (s *Server) closeStores() error {
	var errs []error
	if err := s.sink.Close(); err != nil {
		errs = append(errs, fmt.Errorf("mta: close log: %w", err))
	}
	if err := s.opts.MetaSpool.Close(); err != nil {
		errs = append(errs, fmt.Errorf("mta: close meta spool: %w", err))
	}
	if err := s.opts.DataSpool.Close(); err != nil {
		errs = append(errs, fmt.Errorf("mta: close data spool: %w", err))
	}
	return errors.Join(errs...)
}

type discardSink struct{}

func (discardSink) Log(*logs.Record) error { return nil }
func (discardSink) Close() error           { return nil }
