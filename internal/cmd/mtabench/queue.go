package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/mtakit/mtakit/internal/smtpsink"
)

// queueResult is the scale run: memory per queued message and recovery.
type queueResult struct {
	N          int     `json:"n"`
	Size       int     `json:"size"`
	Conns      int     `json:"conns"`
	Accepted   int     `json:"accepted"`
	Retries    int     `json:"retries"`
	AcceptRate float64 `json:"accept_msgs_per_s"`
	P50Ms      float64 `json:"latency_p50_ms"`
	P99Ms      float64 `json:"latency_p99_ms"`
	SpoolBytes int64   `json:"spool_bytes"` // on disk after the run
	Enqueue    cpuUse  `json:"enqueue_cpu"`

	// Memory of the running mtakitd, empty (just started) and with the
	// messages queued (2 s after the last 250).
	EmptyRSSKB   int64 `json:"empty_rss_kb"`
	EmptyAnonKB  int64 `json:"empty_anon_kb"`
	QueuedRSSKB  int64 `json:"queued_rss_kb"`
	QueuedAnonKB int64 `json:"queued_anon_kb"`
	PeakRSSKB    int64 `json:"peak_rss_kb"` // VmHWM during reception
	// (queued − empty) / accepted, in bytes.
	RSSPerMessage  float64 `json:"rss_bytes_per_message"`
	AnonPerMessage float64 `json:"anon_bytes_per_message"`

	// Restart on the same spool after a graceful stop, and after SIGKILL.
	Restart recovery `json:"restart"`
	Crash   recovery `json:"crash_restart"`

	StopSeconds float64 `json:"graceful_stop_seconds"`
}

type recovery struct {
	Messages        int     `json:"messages"`        // "spool recovered" messages=
	RecoverSeconds  float64 `json:"recover_seconds"` // "spool recovered" duration=
	ReadySeconds    float64 `json:"ready_seconds"`   // process start → "mtakitd ready"
	RSSKB           int64   `json:"rss_kb"`          // 2 s after ready
	AnonKB          int64   `json:"anon_kb"`         // 2 s after ready
	AnonPerMessage  float64 `json:"anon_bytes_per_message"`
	Extrapolated1MS float64 `json:"recover_seconds_1m_linear"`
	OtherCPUPercent float64 `json:"other_cpu_percent"` // other processes' CPU share from start to ready
}

const settle = 2 * time.Second

func rssAnon(pid int) (rss, anon int64) {
	rss, _ = procStatusKB(pid, "VmRSS")
	anon, _ = procStatusKB(pid, "RssAnon")
	return rss, anon
}

// queue measures memory per queued message and recovery time with
// delivery held.
func (b *bench) queue(rep *report) error {
	o := b.o
	q := &queueResult{N: o.queueN, Size: o.size, Conns: o.conns}
	rep.Queue = q
	// The sink is the smarthost but receives nothing: delivery is held.
	sink, err := smtpsink.Start(smtpsink.Options{})
	if err != nil {
		return err
	}
	defer sink.Close()
	dir, err := b.newDir("queue")
	if err != nil {
		return err
	}
	defer b.cleanDir(dir)

	b.waitQuiet()
	fmt.Fprintf(b.log, "queue: mtakitd -hold, %d × %s over %d connections ... ", o.queueN, formatSize(o.size), o.conns)
	m, err := startMtakitd(b.bin, dir, sink.Addr(), true, time.Minute, b.o.mtaArgs...)
	if err != nil {
		return err
	}
	alive := m
	defer func() {
		if alive != nil {
			alive.kill()
		}
	}()
	time.Sleep(settle)
	q.EmptyRSSKB, q.EmptyAnonKB = rssAnon(m.pid())

	cpu := startCPU(m.pid)
	lr := drive(loadSpec{Addr: m.addr, N: o.queueN, Size: o.size, Conns: o.conns, RunID: "q", Deadline: time.Now().Add(o.timeout)})
	q.Enqueue = cpu.stop()
	var r runResult
	fillClient(&r, lr)
	q.Accepted, q.Retries, q.AcceptRate, q.P50Ms, q.P99Ms = r.Accepted, r.Retries, r.AcceptRate, r.P50Ms, r.P99Ms
	fmt.Fprintf(b.log, "accepted %d at %.0f msgs/s\n", q.Accepted, q.AcceptRate)
	if lr.TimedOut || lr.Failed > 0 || q.Accepted == 0 {
		return fmt.Errorf("enqueue: accepted %d of %d (timed out %v): %v", lr.Accepted, o.queueN, lr.TimedOut, lr.Errors)
	}
	time.Sleep(settle)
	q.QueuedRSSKB, q.QueuedAnonKB = rssAnon(m.pid())
	q.PeakRSSKB, _ = procStatusKB(m.pid(), "VmHWM")
	q.RSSPerMessage = float64(q.QueuedRSSKB-q.EmptyRSSKB) * 1024 / float64(q.Accepted)
	q.AnonPerMessage = float64(q.QueuedAnonKB-q.EmptyAnonKB) * 1024 / float64(q.Accepted)
	if n := sink.Count(); n != 0 {
		return fmt.Errorf("delivery is held but the sink received %d messages", n)
	}

	stopDur, err := m.stop(5 * time.Minute)
	alive = nil
	if err != nil {
		return err
	}
	q.StopSeconds = stopDur.Seconds()
	q.SpoolBytes = dirBytes(filepath.Join(dir, "spool"))

	// Restart after a graceful stop, then after SIGKILL.
	for i, rec := range []*recovery{&q.Restart, &q.Crash} {
		b.waitQuiet()
		fmt.Fprintf(b.log, "queue: restart %d on the same spool ... ", i+1)
		pid := 0 // mtakitd's, once started: it has no CPU time before
		cpu := startCPU(func() int { return pid })
		m, err := startMtakitd(b.bin, dir, sink.Addr(), true, 5*time.Minute, b.o.mtaArgs...)
		if err != nil {
			return err
		}
		pid = m.pid()
		rec.OtherCPUPercent = cpu.stop().OtherPercent
		alive = m
		m.mu.Lock()
		rec.Messages, rec.RecoverSeconds, rec.ReadySeconds = m.recovered, m.recoverDur.Seconds(), m.readyAfter.Seconds()
		m.mu.Unlock()
		time.Sleep(settle)
		rec.RSSKB, rec.AnonKB = rssAnon(m.pid())
		rec.AnonPerMessage = float64(rec.AnonKB-q.EmptyAnonKB) * 1024 / float64(q.Accepted)
		if rec.Messages > 0 {
			rec.Extrapolated1MS = rec.RecoverSeconds * 1e6 / float64(rec.Messages)
		}
		fmt.Fprintf(b.log, "recovered %d in %.2fs (ready after %.2fs)\n", rec.Messages, rec.RecoverSeconds, rec.ReadySeconds)
		if rec.Messages != q.Accepted {
			return fmt.Errorf("restart %d recovered %d messages, %d were acknowledged", i+1, rec.Messages, q.Accepted)
		}
		if i == 0 {
			m.kill() // SIGKILL: the next start recovers after a crash
		} else if _, err := m.stop(5 * time.Minute); err != nil {
			alive = nil
			return err
		}
		alive = nil
	}
	if q.Restart.RecoverSeconds == 0 && q.Restart.Messages > 0 {
		return errors.New(`mtakitd's "spool recovered" line has no duration attribute`)
	}
	return nil
}
