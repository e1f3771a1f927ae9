package mta

import "testing"

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
