package mta

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/shaping"
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

	// Shaper supplies the egress path configuration per destination;
	// default: shaping.Default() for every path.
	Shaper shaping.Shaper
	// Throttle enforces the shaper's limits (connection_limit,
	// max_connection_rate, max_message_rate and the additional_* limits)
	// by key. The default is a shaping.LocalThrottle, limits per process;
	// pass a shared one (package shaping/redisthrottle) to make a fleet of
	// servers respect one limit. Specs marked "local:" always use a
	// process-local throttle.
	Throttle shaping.Throttle
	// MTASTS supplies MTA-STS policies (RFC 8461) for destinations whose
	// path config enables them (enable_mta_sts, on by default as in
	// KumoMTA); nil means an egress.MTASTS on the Resolver. DANE applies
	// where enable_dane is set and the Resolver trusts the AD bit
	// (egress.ResolverOptions.TrustAD).
	MTASTS egress.MTASTSSource
	// Resolver resolves MX and host names for delivery; default: the
	// servers of /etc/resolv.conf.
	Resolver *egress.Resolver
	// EgressPools maps pool names (QueueConfig.EgressPool) to pools. The
	// pool "unspecified" defaults to one source with the system's default
	// address, as in KumoMTA.
	EgressPools map[string]egress.Pool
	// TLS is the base client TLS configuration for delivery (RootCAs, for
	// example); nil means the system roots.
	TLS *tls.Config
	// Classifier sorts failure responses into bounce classes for log
	// records; nil logs every failure as "Uncategorized".
	Classifier BounceClassifier
	// DSN, when true, sends an RFC 3464 delivery status notification to
	// the envelope sender of every bounced or expired recipient (never for
	// the null reverse-path). Off by default, as in KumoMTA.
	DSN bool
	// ReceptionMemory bounds the bytes of message data that SMTP
	// receptions hold at once, across the server's listeners; beyond it a
	// transaction is deferred with 452 4.3.1 instead of the process
	// growing (see listener.Budget). A transaction also holds up to about
	// 8 prepared copies of its message while they are stored. Default: a
	// quarter of the memory limit (cgroup memory.max, else physical
	// memory); negative means no limit.
	ReceptionMemory int64

	// MemoryHardLimit, MemorySoftLimit and MemoryLowThresh configure the
	// memory monitor, as KumoMTA's kumo.set_memory_hard_limit,
	// set_memory_soft_limit and set_memory_low_thresh (bytes). Above the
	// soft limit new mail is refused with 4xx and caches are purged until
	// usage falls (see MemoryStatus). Defaults: hard the cgroup
	// memory.max, else physical memory; soft 75 % of hard; low 80 % of
	// soft. A negative MemorySoftLimit disables the monitor.
	// MemoryCheckInterval is how often usage is sampled, default
	// DefaultMemoryCheckInterval (1 s).
	MemoryHardLimit     int64
	MemorySoftLimit     int64
	MemoryLowThresh     int64
	MemoryCheckInterval time.Duration

	// MinFreeSpacePercent and MinFreeInodesPercent are how much of the
	// spools' filesystem must stay free for mail to be accepted (checked
	// for spools implementing spool.SpaceReporter, as badgerspool does);
	// below, receptions get 452 4.3.1 until space returns, while delivery
	// goes on and frees it. Defaults 10 and 10, as KumoMTA's
	// min_free_space and min_free_inodes; negative disables.
	MinFreeSpacePercent  float64
	MinFreeInodesPercent float64

	// StallTimeout bounds how long a ready queue (the messages for one
	// destination site from one egress source) may go without finishing
	// an attempt while it has work. Past it, the queue's sessions are
	// cancelled and its waiting messages go back to the scheduled queue
	// with a transient failure, so a peer that accepts connections and
	// never answers cannot hold mail beyond max_age. Default
	// DefaultStallTimeout (10 minutes); keep it above the longest
	// legitimate transaction (the per-phase timeouts of the path config).
	StallTimeout time.Duration

	// HoldDelivery starts the server with delivery held: mail is received
	// and queued but not sent until ReleaseDelivery is called.
	HoldDelivery bool

	// Logger receives operational logs; default slog.Default().
	Logger *slog.Logger
}

// BounceClassifier sorts SMTP responses into KumoMTA bounce classes
// (InvalidRecipient, QuotaIssues, ...); see package mta/bounce.
type BounceClassifier interface {
	Classify(code int, enhanced, text string) string
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

	// QueueConfig returns the configuration of a scheduled queue from its
	// name and parts (get_queue_config). nil, or an error, means the
	// defaults. It is called whenever a message of the queue is routed or
	// retried, so it should be cheap.
	QueueConfig func(queue, campaign, tenant, domain, routingDomain string) (QueueConfig, error)
}

// Server is an embeddable MTA: it receives mail, spools it durably and
// queues it for delivery.
type Server struct {
	opts   Options
	log    *slog.Logger
	sink   logs.Sink
	nodeID string
	sched  *scheduler
	bodies *bodyRefs // shared bodies of multi-recipient transactions (body.go)

	// syncReception: the sink keeps Reception records durable, so a
	// transaction is answered only after they are synced (durable.go).
	syncReception bool

	pools         atomic.Pointer[map[string]egress.Pool] // see SetEgressPools
	shaper        shaping.Shaper
	throttle      shaping.Throttle
	localThrottle *shaping.LocalThrottle
	queueRates    sync.Map // queue max_message_rate text -> shaping.ThrottleSpec
	resolver      *egress.Resolver
	mtasts        egress.MTASTSSource
	brokenTLS     *egress.BrokenTLS
	defaultPool   egress.Pool

	runCtx   context.Context // cancelled by Close to abort deliveries
	cancel   context.CancelFunc
	stopping chan struct{} // closed when delivery stops
	workers  sync.WaitGroup

	rules  queueRules       // admin and automation suspensions and bounces
	space  *spaceGuard      // refuses mail while the spools' disk is full
	mem    *memoryMonitor   // refuses mail while memory is short (memmon.go)
	budget *listener.Budget // reception memory, shared by the listeners

	// Hooks for the operations surface (readyhold.go, observe.go).
	readyHolds readyHolds               // admin ready-queue suspensions
	observer   atomic.Pointer[Observer] // see SetObserver

	readyMu      sync.Mutex
	ready        map[string]*readyQueue
	stallTimeout time.Duration

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
		opts:     opts,
		log:      opts.Logger,
		sink:     opts.Log,
		nodeID:   uuid.NewString(),
		sched:    newScheduler(),
		bodies:   newBodyRefs(),
		shaper:   opts.Shaper,
		resolver: opts.Resolver,
		stopping: make(chan struct{}),
		ready:    make(map[string]*readyQueue),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.sink == nil {
		s.sink = discardSink{}
	}
	s.syncReception = logs.Syncs(s.sink, logs.Reception)
	if s.shaper == nil {
		s.shaper = defaultShaper
	}
	pools := maps.Clone(opts.EgressPools)
	s.pools.Store(&pools)
	s.localThrottle = shaping.NewLocalThrottle()
	s.throttle = opts.Throttle
	if s.throttle == nil {
		s.throttle = s.localThrottle
	}
	if s.resolver == nil {
		r, err := egress.NewResolver(egress.ResolverOptions{Logger: s.log})
		if err != nil {
			return nil, fmt.Errorf("mta: default resolver: %w", err)
		}
		s.resolver = r
	}
	s.mtasts = opts.MTASTS
	if s.mtasts == nil {
		m, err := egress.NewMTASTS(egress.MTASTSOptions{Resolver: s.resolver, Logger: s.log})
		if err != nil {
			return nil, fmt.Errorf("mta: MTA-STS: %w", err)
		}
		s.mtasts = m
	}
	s.brokenTLS = egress.NewBrokenTLS(nil)
	switch {
	case opts.ReceptionMemory == 0:
		s.budget = listener.NewBudget(defaultReceptionMemory())
	case opts.ReceptionMemory > 0:
		s.budget = listener.NewBudget(opts.ReceptionMemory)
	}
	s.space = newSpaceGuard(s, opts)
	s.mem = newMemoryMonitor(s, opts)
	s.registerCaches()
	s.mem.check() // know the state before the first connection
	s.stallTimeout = opts.StallTimeout
	if s.stallTimeout <= 0 {
		s.stallTimeout = DefaultStallTimeout
	}
	s.defaultPool = egress.NewPool("unspecified", egress.WeightedSource{Source: egress.DefaultSource()})
	s.runCtx, s.cancel = context.WithCancel(context.Background())
	s.sched.held = opts.HoldDelivery
	if err := s.recover(s.runCtx); err != nil {
		return nil, err
	}
	due := make(chan *queuedMessage)
	s.workers.Add(3 + dispatchers)
	go s.reclaimOrphans()
	memInterval := opts.MemoryCheckInterval
	if memInterval <= 0 {
		memInterval = DefaultMemoryCheckInterval
	}
	s.workers.Add(1)
	go func() {
		defer s.workers.Done()
		s.mem.run(memInterval, s.stopping)
	}()
	go func() {
		defer s.workers.Done()
		s.sched.run(s.stopping, due)
	}()
	go s.stallLoop()
	for range dispatchers {
		go s.dispatchLoop(due)
	}
	return s, nil
}

// SetEgressPools replaces the egress pools (Options.EgressPools), for a
// configuration reload. Messages are bound to a source only when they are
// dispatched, so a source that left a pool gets no new mail, while what
// is already in its ready queues is delivered (or retried) as before.
func (s *Server) SetEgressPools(pools map[string]egress.Pool) {
	p := maps.Clone(pools)
	s.pools.Store(&p)
}

// ReleaseDelivery starts delivering queued mail held by
// Options.HoldDelivery or by a call of HoldDelivery.
func (s *Server) ReleaseDelivery() { s.sched.setHeld(false) }

// HoldDelivery stops releasing queued mail for delivery; deliveries in
// progress finish. Reception continues.
func (s *Server) HoldDelivery() { s.sched.setHeld(true) }

// recover loads every message from the meta spool into the scheduler,
// with its due time and attempt count. It reads only the meta spool: a
// meta entry whose data is missing (a store cut short before the message
// was acknowledged) is found and dropped when it is first delivered.
// Decoding, the bulk of the work, runs on every CPU while the spool is
// read.
func (s *Server) recover(ctx context.Context) error {
	// Entries go to the decoders in batches: one channel operation and
	// one scheduler lock per batch, not per message.
	const batchSize = 256
	type entry struct {
		id spool.ID
		b  []byte
	}
	start := time.Now()
	batches := make(chan []entry, 2*runtime.GOMAXPROCS(0))
	var recovered atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			var out []*queuedMessage
			var names queueNames
			for batch := range batches {
				out = out[:0]
				for _, e := range batch {
					m, err := queuedFromSpool(e.id, e.b, &names)
					if err != nil {
						// Keep it in the spool for a human to look at; do not guess.
						s.log.Error("unreadable meta in spool; message left in place", "id", e.id, "err", err)
						continue
					}
					out = append(out, m)
				}
				for _, m := range out {
					if body := m.bodyID(); !body.IsZero() {
						s.bodies.add(body, 1)
					}
				}
				s.sched.addRecovered(out)
				recovered.Add(int64(len(out)))
			}
		})
	}
	batch := make([]entry, 0, batchSize)
	err := s.opts.MetaSpool.Enumerate(ctx, func(id spool.ID, b []byte) error {
		batch = append(batch, entry{id, b})
		if len(batch) == batchSize {
			batches <- batch
			batch = make([]entry, 0, batchSize)
		}
		return nil
	})
	if len(batch) > 0 {
		batches <- batch
	}
	close(batches)
	wg.Wait()
	s.sched.restoreOrder()
	if err != nil {
		return fmt.Errorf("mta: recover spool: %w", err)
	}
	s.log.Info("spool recovered", "messages", recovered.Load(), "duration", time.Since(start))
	return nil
}

// ListenSMTP binds an ESMTP listener for cfg and serves it in the
// background. It returns the bound address (useful with port 0).
// cfg.Hostname defaults to Options.Hostname.
func (s *Server) ListenSMTP(cfg listener.Config) (net.Addr, error) {
	if cfg.Hostname == "" {
		cfg.Hostname = s.opts.Hostname
	}
	if cfg.Budget == nil {
		cfg.Budget = s.budget
	}
	if cfg.Shed == nil {
		cfg.Shed = s.mem.shed
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
func (s *Server) QueuedCount() int { return s.sched.count() }

// QueueSummary returns the number of messages in each scheduled queue.
func (s *Server) QueueSummary() map[string]int { return s.sched.summary() }

// QueuedIDs returns the IDs of the messages in one scheduled queue.
func (s *Server) QueuedIDs(queue string) []spool.ID { return s.sched.ids(queue) }

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
	s.stopDelivery(ctx)
	return errors.Join(append(errs, s.closeStores())...)
}

// stopDelivery stops delivery: the scheduler releases nothing more and
// workers take no further message from their ready queues, so only the
// attempts in progress go on. They may finish until ctx expires; then they
// are aborted (an attempt cut this way is logged as a transient failure).
// Messages that were waiting stay in the spool with their state untouched.
func (s *Server) stopDelivery(ctx context.Context) {
	close(s.stopping)
	done := make(chan struct{})
	go func() { s.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		<-done
	}
	s.cancel()
}

func (s *Server) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
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
	aborted, abort := context.WithCancel(context.Background())
	abort()
	s.stopDelivery(aborted) // stop taking work first, then abort what is in progress
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
