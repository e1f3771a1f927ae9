package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

func printReport(w io.Writer, rep *report) {
	m := rep.Machine
	fmt.Fprintf(w, "%s\n", rep.Command)
	fmt.Fprintf(w, "machine: %d CPUs, %s, kernel %s, %d MiB, %s, Postfix %s, spool on %s\n",
		m.CPUs, m.CPUModel, m.Kernel, m.MemoryKB>>10, m.Go, m.Postfix, m.SpoolFS)
	if b := m.Mtakitd; b.SHA256 != "" {
		rev := "revision " + b.Revision
		switch {
		case b.Revision == "":
			rev = "no VCS stamp"
		case b.Modified:
			rev += " (modified)"
		}
		fmt.Fprintf(w, "mtakitd: %s, sha256 %.16s\n", rev, b.SHA256)
	}
	if len(rep.MtakitdArgs) > 0 {
		fmt.Fprintf(w, "mtakitd extra flags: %s\n", strings.Join(rep.MtakitdArgs, " "))
	}
	if rep.LoadAvg[0] != "" {
		fmt.Fprintf(w, "load average (1, 5, 15 min): %s at the start, %s at the end\n", rep.LoadAvg[0], rep.LoadAvg[1])
	}
	fmt.Fprintln(w)
	if len(rep.Compare) > 0 {
		fmt.Fprintln(w, "compare (mtabench client → MTA → smtpsink):")
		printRuns(w, rep.Compare)
		fmt.Fprintln(w)
		printSummary(w, rep.Summary, rep.Ratio, true)
		fmt.Fprintln(w)
	}
	if len(rep.SMTPSource) > 0 {
		fmt.Fprintln(w, "smtp-source → MTA → smtp-sink (a new connection per message):")
		printRuns(w, rep.SMTPSource)
		fmt.Fprintln(w)
		printSummary(w, rep.SourceSummary, rep.SourceRatio, false)
		fmt.Fprintln(w)
	}
	for _, group := range []struct {
		title  string
		series []series
	}{{"single connection", rep.Single}, {"acceptance latency at half of the peak rate", rep.Half}} {
		for _, se := range group.series {
			fmt.Fprintf(w, "%s: %s\n", group.title, se.Name)
			printRuns(w, se.Runs)
			fmt.Fprintln(w)
			printSummary(w, se.Summary, se.Ratio, len(se.Runs) > 0 && se.Runs[0].Client != "smtp-source")
			fmt.Fprintln(w)
		}
	}
	if len(rep.Sweep) > 0 {
		fmt.Fprintln(w, "sweep:")
		printRuns(w, rep.Sweep)
		fmt.Fprintln(w)
	}
	if q := rep.Queue; q != nil {
		fmt.Fprintf(w, "queue (mtakitd -hold): %d × %s over %d connections, %d accepted at %.0f msgs/s (p50 %.2f ms, p99 %.2f ms), spool %.0f MiB on disk\n",
			q.N, formatSize(q.Size), q.Conns, q.Accepted, q.AcceptRate, q.P50Ms, q.P99Ms, float64(q.SpoolBytes)/(1<<20))
		fmt.Fprintf(w, "  enqueue: mtakitd CPU %.1fs (%.2f ms/msg), other CPU %.0f%%\n", q.Enqueue.MTASeconds,
			q.Enqueue.MTASeconds*1000/float64(max(q.Accepted, 1)), q.Enqueue.OtherPercent)
		fmt.Fprintf(w, "  RSS empty %.1f MiB → queued %.1f MiB (peak %.1f MiB): %.0f bytes/message\n",
			float64(q.EmptyRSSKB)/1024, float64(q.QueuedRSSKB)/1024, float64(q.PeakRSSKB)/1024, q.RSSPerMessage)
		fmt.Fprintf(w, "  RssAnon empty %.1f MiB → queued %.1f MiB: %.0f bytes/message\n",
			float64(q.EmptyAnonKB)/1024, float64(q.QueuedAnonKB)/1024, q.AnonPerMessage)
		fmt.Fprintf(w, "  graceful stop %.2fs\n", q.StopSeconds)
		for _, r := range []struct {
			name string
			r    recovery
		}{{"restart after graceful stop", q.Restart}, {"restart after SIGKILL", q.Crash}} {
			fmt.Fprintf(w, "  %s: recovered %d in %.3fs (→ %.1fs for 1M, linear), ready after %.3fs (other CPU %.0f%%); RSS %.1f MiB, RssAnon %.1f MiB (%.0f bytes/message over empty)\n",
				r.name, r.r.Messages, r.r.RecoverSeconds, r.r.Extrapolated1MS, r.r.ReadySeconds, r.r.OtherCPUPercent,
				float64(r.r.RSSKB)/1024, float64(r.r.AnonKB)/1024, r.r.AnonPerMessage)
		}
	}
}

func printRuns(w io.Writer, runs []runResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tn\tsize\tconns\trcpts\tpaced msgs/s\taccepted\trcpts delivered\tdups\te2e msgs/s\te2e rcpts/s\taccept msgs/s\tp50 ms\tp99 ms\tp999 ms\tpeak RSS MiB\tpeak PSS MiB\tprocs\tMTA CPU s\tother CPU %\t")
	for _, r := range runs {
		lat := func(v float64) string {
			if r.Client == "smtp-source" {
				return "-"
			}
			return fmt.Sprintf("%.2f", v)
		}
		conns := strconv.Itoa(r.Conns)
		if r.Reconnect {
			conns += " (new per msg)"
		}
		paced := "-"
		if r.RateLimit > 0 {
			paced = fmt.Sprintf("%.0f", r.RateLimit)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%.1f\t%.1f\t%d\t%.2f\t%.0f\t\n",
			r.Target, r.N, formatSize(r.Size), conns, max(r.Rcpts, 1), paced, r.Accepted, r.Delivered, r.Duplicates, r.E2ERate, r.E2ERcptRate, r.AcceptRate,
			lat(r.P50Ms), lat(r.P99Ms), lat(r.P999Ms), float64(r.PeakRSSKB)/1024, float64(r.PeakPSSKB)/1024, r.Procs, r.MTASeconds, r.OtherPercent)
	}
	tw.Flush()
}

func printSummary(w io.Writer, sums []summary, ratio float64, latency bool) {
	lat := func(v float64) string {
		if !latency {
			return "-"
		}
		return fmt.Sprintf("%.2f", v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "median\truns\te2e msgs/s\te2e rcpts/s\taccept msgs/s\tp50 ms\tp99 ms\tp999 ms\tpeak RSS MiB\tpeak PSS MiB\tMTA CPU ms/msg\t")
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.0f\t%s\t%s\t%s\t%.1f\t%.1f\t%.2f\t\n", s.Target, s.Runs, s.E2ERate, s.E2ERcptRate, s.AcceptRate,
			lat(s.P50Ms), lat(s.P99Ms), lat(s.P999Ms), s.PeakRSSKB/1024, s.PeakPSSKB/1024, s.CPUPerMsg)
	}
	tw.Flush()
	if ratio > 0 {
		fmt.Fprintf(w, "end-to-end ratio mtakit/postfix: %.2f\n", ratio)
	}
}
