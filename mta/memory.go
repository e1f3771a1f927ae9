package mta

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// defaultReceptionMemory is Options.ReceptionMemory's default: a quarter
// of the memory this process may use (the cgroup v2 limit, else physical
// memory), at least 64 MiB; 1 GiB when neither can be read.
func defaultReceptionMemory() int64 {
	limit := memoryLimit()
	if limit <= 0 {
		return 1 << 30
	}
	return max(limit/4, 64<<20)
}

// memoryLimit returns the cgroup v2 memory.max of this process, or the
// machine's MemTotal, in bytes; 0 when unknown.
func memoryLimit() int64 {
	var total int64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				if err == nil {
					total = kb << 10
				}
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			return n
		}
	}
	return total
}
