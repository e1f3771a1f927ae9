package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// procStatusKB returns a "kB" field of /proc/PID/status, e.g. VmHWM (peak
// resident set) or VmRSS (resident set now).
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return statusField(b, field)
}

func statusField(status []byte, field string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s in /proc status", field)
}

// procPSSKB returns the proportional set size of pid (shared pages divided
// among the processes sharing them), from /proc/PID/smaps_rollup.
func procPSSKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	return statusField(b, "Pss")
}

// procTree returns root and all its descendants that are alive now.
func procTree(root int) []int {
	parent := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parent[ppid] = append(parent[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, parent[out[i]]...)
	}
	return out
}

// memSample is the memory of a process tree at one moment.
type memSample struct {
	RSSKB int64 // sum of VmRSS (shared pages counted once per process)
	PSSKB int64 // sum of Pss
	Procs int

	// In a watcher's result: how many samples were taken and the mean
	// time one took (the harness's own overhead on the machine).
	Samples  int
	SampleMs float64
}

// sampleTree sums VmRSS over root's process tree and, with pss, Pss (which
// costs more: the kernel walks every mapping).
func sampleTree(root int, pss bool) memSample {
	var m memSample
	if root <= 0 {
		return m
	}
	for _, pid := range procTree(root) {
		rss, err := procStatusKB(pid, "VmRSS")
		if err != nil {
			continue // exited meanwhile
		}
		m.RSSKB += rss
		m.Procs++
		if pss {
			p, _ := procPSSKB(pid)
			m.PSSKB += p
		}
	}
	return m
}

// memWatcher samples a process tree periodically and keeps the peaks.
type memWatcher struct {
	root func() int
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak memSample
}

// pssEvery is how many RSS samples there are per PSS sample.
const pssEvery = 4

// watchMem samples VmRSS of the tree every interval and Pss every
// pssEvery intervals (and once more in Stop). Both are cheap enough
// (measured: ~40 µs per process for VmRSS, ~0.4 ms for Pss, plus ~2 ms to
// find the tree) not to disturb the run much; the mean cost is reported.
func watchMem(root func() int, every time.Duration) *memWatcher {
	w := &memWatcher{root: root, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			w.sample(i%pssEvery == 0)
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *memWatcher) sample(pss bool) {
	pid := w.root()
	if pid <= 0 {
		return
	}
	t0 := time.Now()
	s := sampleTree(pid, pss)
	spent := time.Since(t0)
	w.mu.Lock()
	defer w.mu.Unlock()
	p := &w.peak
	p.SampleMs = (p.SampleMs*float64(p.Samples) + float64(spent)/float64(time.Millisecond)) / float64(p.Samples+1)
	p.Samples++
	p.RSSKB = max(p.RSSKB, s.RSSKB)
	p.PSSKB = max(p.PSSKB, s.PSSKB)
	p.Procs = max(p.Procs, s.Procs)
}

// Stop takes a last sample with Pss, ends sampling and returns the peaks.
func (w *memWatcher) Stop() memSample {
	close(w.stop)
	<-w.done
	w.sample(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// dirBytes is the total size of the regular files under dir.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// busyTicks is the CPU time spent by the whole machine, all CPUs, in
// anything but idle and I/O wait, from the first line of /proc/stat.
func busyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return busy
}

// procTicks returns utime+stime of pid and, with children, also the CPU
// time of its children that have exited and been waited for.
func procTicks(pid int, children bool) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	// After "pid (comm)": state(0) ppid ... utime(11) stime(12) cutime(13) cstime(14).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0
	}
	last := 12
	if children {
		last = 14
	}
	var t int64
	for _, v := range f[11 : last+1] {
		n, _ := strconv.ParseInt(v, 10, 64)
		t += n
	}
	return t
}

// treeTicks is the CPU time of root's process tree: every live process,
// plus the exited children root has waited for.
func treeTicks(root int) int64 {
	if root <= 0 {
		return 0
	}
	var t int64
	for _, pid := range procTree(root) {
		t += procTicks(pid, pid == root)
	}
	return t
}

// cpuMeter splits the machine's CPU time during a run into the MTA's, the
// harness's own (client, sink, smtp-source) and everything else (other
// work on the machine, which makes the run less trustworthy).
type cpuMeter struct {
	helpers         []int // the harness's own child processes still running (smtp-sink)
	t0              time.Time
	busy, mta, self int64
	mtaRoot         func() int
}

type cpuUse struct {
	MTASeconds     float64 `json:"mta_cpu_seconds"`
	HarnessSeconds float64 `json:"harness_cpu_seconds"`
	OtherPercent   float64 `json:"other_cpu_percent"` // of all CPUs over the run
}

// startCPU starts measuring; helpers are the harness's own long-running
// child processes, whose CPU time counts as the harness's.
func startCPU(mtaRoot func() int, helpers ...int) *cpuMeter {
	c := &cpuMeter{t0: time.Now(), busy: busyTicks(), mta: treeTicks(mtaRoot()), mtaRoot: mtaRoot, helpers: helpers}
	c.self = c.selfTicks()
	return c
}

func (c *cpuMeter) selfTicks() int64 {
	t := procTicks(os.Getpid(), true)
	for _, pid := range c.helpers {
		t += treeTicks(pid)
	}
	return t
}

// stop must run while the MTA is still alive.
func (c *cpuMeter) stop() cpuUse {
	wall := time.Since(c.t0).Seconds()
	busy := busyTicks() - c.busy
	mta := treeTicks(c.mtaRoot()) - c.mta
	self := c.selfTicks() - c.self
	u := cpuUse{MTASeconds: float64(mta) / userHZ, HarnessSeconds: float64(self) / userHZ}
	if wall > 0 {
		other := float64(busy-mta-self) / userHZ
		u.OtherPercent = max(0, other/(wall*float64(runtime.NumCPU()))*100)
	}
	return u
}
