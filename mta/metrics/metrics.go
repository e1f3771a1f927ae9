// Package metrics exports an mta.Server's activity for Prometheus, with
// prometheus/client_golang.
//
// A Metrics counts the server's log records by wrapping its log sink
// (Options.Log), so it sees exactly the events the log shows, and reads
// queue sizes from the server when scraped. Wire it in two steps, because
// the sink is needed before the server exists:
//
//	m := metrics.New()
//	opts.Log = m.Sink(opts.Log)
//	srv, _ := mta.New(opts)
//	m.Watch(srv)
//	http.Handle("/metrics", m.Handler()) // or httpapi.Config.Metrics
//
// # Metrics
//
//   - mtakit_messages_total{type,queue,site,source}: log records by
//     KumoMTA record type (Reception, Delivery, TransientFailure, Bounce,
//     Expiration, AdminBounce, ...), scheduled queue, ready queue ("site"
//     as in the record, empty for receptions) and egress source.
//   - mtakit_scheduled_messages{queue}: messages in each scheduled queue.
//   - mtakit_ready_messages{queue}, mtakit_connections{queue}: messages
//     waiting in, and delivery sessions of, each ready queue.
//   - mtakit_delivery_latency_seconds: from creation to a Delivery record.
//   - mtakit_spool_latency_seconds: storing a reception's messages durably
//     (from the server's Observer hook).
//   - mtakit_attempt_count: attempts a message took to its final record.
//   - mtakit_memory_usage_bytes, mtakit_memory_limit_bytes{limit="hard",
//     "soft" or "low"}, mtakit_memory_state (0 normal, 1 low, 2 over the
//     soft limit: load shedding), mtakit_memory_over_limit_total (times
//     usage crossed the soft limit), mtakit_memory_refused_total
//     (connections, transactions and injections refused while over it),
//     mtakit_memory_cache_purged_total (cache entries dropped): the
//     server's memory monitor (mta.Server.MemoryStatus), KumoMTA's
//     memory_usage, memory_limit and memory_over_limit_count.
//   - the Go runtime and process collectors (go_*, process_*).
//
// Queue label values are operator-chosen names (tenants, campaigns,
// domains); a server with very many queues produces as many series, as
// KumoMTA's per-queue metrics do.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/logs"
)

// Metrics holds the collectors of one server.
type Metrics struct {
	reg      *prometheus.Registry
	messages *prometheus.CounterVec
	latency  prometheus.Histogram
	attempts prometheus.Histogram
	spooled  prometheus.Histogram
}

// New returns Metrics with its own registry, including the Go runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtakit_messages_total",
			Help: "Log records by type (Reception, Delivery, TransientFailure, Bounce, Expiration, ...), scheduled queue, ready queue and egress source.",
		}, []string{"type", "queue", "site", "source"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mtakit_delivery_latency_seconds",
			Help:    "Time from a message's creation to its Delivery record.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12), // 10ms .. ~12 days
		}),
		attempts: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mtakit_attempt_count",
			Help:    "Delivery attempts a message took until its Delivery, Bounce or Expiration record.",
			Buckets: []float64{1, 2, 3, 5, 8, 13, 21},
		}),
		spooled: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mtakit_spool_latency_seconds",
			Help:    "Time to make a reception's messages durable in the data and meta spools.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12), // 100µs .. ~6s
		}),
	}
	m.reg.MustRegister(m.messages, m.latency, m.attempts, m.spooled,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, to add collectors of your own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Sink returns a logs.Sink that counts every record and passes it on to
// next (nil: counted and discarded). Closing it closes next.
func (m *Metrics) Sink(next logs.Sink) logs.Sink {
	if next == nil {
		next = logs.Discard
	}
	return &sink{m: m, next: next}
}

type sink struct {
	m    *Metrics
	next logs.Sink
}

func (s *sink) Log(rec *logs.Record) error {
	s.m.observe(rec)
	return s.next.Log(rec)
}

// Sync passes logs.Syncer on, so durable reception logging
// (logs.LocalConfig.SyncReception) works through the counting sink.
func (s *sink) Sync(t logs.RecordType) error { return logs.Sync(s.next, t) }

// Syncs passes logs.Syncer on.
func (s *sink) Syncs(t logs.RecordType) bool { return logs.Syncs(s.next, t) }

func (s *sink) Close() error { return s.next.Close() }

func (m *Metrics) observe(rec *logs.Record) {
	source := ""
	if rec.EgressSource != nil {
		source = *rec.EgressSource
	}
	m.messages.WithLabelValues(string(rec.Type), rec.Queue, rec.Site, source).Inc()
	switch rec.Type {
	case logs.Delivery:
		ev, err1 := time.Parse(time.RFC3339Nano, rec.EventTime)
		cr, err2 := time.Parse(time.RFC3339Nano, rec.CreatedTime)
		if err1 == nil && err2 == nil && !ev.Before(cr) {
			m.latency.Observe(ev.Sub(cr).Seconds())
		}
		m.attempts.Observe(float64(rec.NumAttempts))
	case logs.Bounce, logs.Expiration:
		m.attempts.Observe(float64(rec.NumAttempts))
	}
}

// Watch exports srv's queue sizes and connections, read at each scrape,
// and installs m as its Observer for the spool latency. Call it once per
// Metrics.
func (m *Metrics) Watch(srv *mta.Server) {
	m.reg.MustRegister(&queueCollector{srv: srv}, &memoryCollector{srv: srv})
	srv.SetObserver(m)
}

// Spooled implements mta.Observer.
func (m *Metrics) Spooled(d time.Duration, _ int) { m.spooled.Observe(d.Seconds()) }

var (
	scheduledDesc   = prometheus.NewDesc("mtakit_scheduled_messages", "Messages in a scheduled queue.", []string{"queue"}, nil)
	readyDesc       = prometheus.NewDesc("mtakit_ready_messages", "Messages waiting in a ready queue for a connection.", []string{"queue"}, nil)
	connectionsDesc = prometheus.NewDesc("mtakit_connections", "Delivery sessions (open or opening) of a ready queue.", []string{"queue"}, nil)
)

type queueCollector struct{ srv *mta.Server }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- scheduledDesc
	ch <- readyDesc
	ch <- connectionsDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	for q, n := range c.srv.QueueSummary() {
		ch <- prometheus.MustNewConstMetric(scheduledDesc, prometheus.GaugeValue, float64(n), q)
	}
	for _, rq := range c.srv.ReadyQueues() {
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, float64(rq.Queued), rq.Name)
		ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(rq.Connections), rq.Name)
	}
}
