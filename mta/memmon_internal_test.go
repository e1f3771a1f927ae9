package mta

import (
	"os"
	"path/filepath"
	"testing"
)

// The cgroup working set is memory.current minus the inactive file pages
// of memory.stat (reclaimable page cache).
func TestCgroupWorkingSet(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("memory.current", "1000000\n")
	write("memory.stat", "anon 600000\nfile 400000\nactive_file 100000\ninactive_file 300000\n")
	if n, err := cgroupWorkingSet(dir); err != nil || n != 700000 {
		t.Fatalf("working set = %d, %v; want 700000", n, err)
	}
	os.Remove(filepath.Join(dir, "memory.stat"))
	if n, err := cgroupWorkingSet(dir); err != nil || n != 1000000 {
		t.Fatalf("without memory.stat = %d, %v; want memory.current", n, err)
	}
	write("memory.current", "garbage")
	if _, err := cgroupWorkingSet(dir); err == nil {
		t.Fatal("unparseable memory.current accepted")
	}
}

// anonRSS counts what the process allocated: positive, and growing by
// about what is allocated and touched.
func TestAnonRSS(t *testing.T) {
	before, err := anonRSS()
	if err != nil || before <= 0 {
		t.Fatalf("anonRSS = %d, %v", before, err)
	}
	b := make([]byte, 64<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	after, err := anonRSS()
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 48<<20 {
		t.Errorf("anonRSS grew by %d MiB after touching 64 MiB", (after-before)>>20)
	}
	_ = b[len(b)-1]
}

func TestMemoryLimitsDefaults(t *testing.T) {
	l := MemoryLimits{Hard: 1000}.WithDefaults()
	if l != (MemoryLimits{Hard: 1000, Soft: 750, LowThresh: 600}) {
		t.Errorf("defaults from hard 1000: %+v", l)
	}
	l = MemoryLimits{Hard: 1000, Soft: -1}.WithDefaults()
	if l.Soft != -1 || l.LowThresh != 0 {
		t.Errorf("disabled: %+v", l)
	}
	if d := DefaultMemoryLimits(); d.Hard != memoryLimit() {
		t.Errorf("DefaultMemoryLimits().Hard = %d, want memoryLimit() %d", d.Hard, memoryLimit())
	}
}
