package shaping

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseThrottle(t *testing.T) {
	tests := []struct {
		in      string
		want    ThrottleSpec
		wantErr bool
	}{
		{"100/s", ThrottleSpec{Limit: 100, Period: time.Second}, false},
		{"100/min", ThrottleSpec{Limit: 100, Period: time.Minute}, false},
		{"1,000/h", ThrottleSpec{Limit: 1000, Period: time.Hour}, false},
		{"1_000/hour", ThrottleSpec{Limit: 1000, Period: time.Hour}, false},
		{"10/5min", ThrottleSpec{Limit: 10, Period: 5 * time.Minute}, false},
		{"2/day", ThrottleSpec{Limit: 2, Period: 24 * time.Hour}, false},
		{"local:50/s,max_burst=5", ThrottleSpec{Limit: 50, Period: time.Second, MaxBurst: 5, Local: true}, false},
		{"0/s", ThrottleSpec{}, true},
		{"100", ThrottleSpec{}, true},
		{"100/fortnight", ThrottleSpec{}, true},
		{"x/s", ThrottleSpec{}, true},
		{"5/s,max_burst=0", ThrottleSpec{}, true},
		{"100/hours", ThrottleSpec{}, true},
		{"100/1.5s", ThrottleSpec{}, true},
		{"100/5", ThrottleSpec{}, true},
		{"10000/h", ThrottleSpec{Limit: 10000, Period: time.Hour}, false},
		{"1/minute", ThrottleSpec{Limit: 1, Period: time.Minute}, false},
		{"500/d,max_burst=1", ThrottleSpec{Limit: 500, Period: 24 * time.Hour, MaxBurst: 1}, false},
	}
	for _, tc := range tests {
		got, err := ParseThrottle(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v, wantErr %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if s := (ThrottleSpec{Limit: 100, Period: time.Second}).String(); s != "100/s" {
		t.Errorf("String %q", s)
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]LimitSpec{"5": {Limit: 5}, "local:5": {Limit: 5, Local: true}, "1,000": {Limit: 1000}} {
		got, err := ParseLimit(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
		if got.String() != strings.ReplaceAll(in, ",", "") {
			t.Errorf("String %q", got.String())
		}
	}
	for _, in := range []string{"0", "-1", "x", "local:", ""} {
		if _, err := ParseLimit(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}

// The local throttle holds a rate to at most burst + rate*time (+10%)
// and a connection limit exactly. Fewer may pass when a loaded machine
// (the race detector, parallel packages) runs the callers late, so the
// lower bound only shows the throttle lets traffic through.
func TestLocalThrottle(t *testing.T) {
	l := NewLocalThrottle()
	ctx := context.Background()
	spec, _ := ParseThrottle("200/s,max_burst=10")
	const d = time.Second
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := time.Now().Add(d)
			for time.Now().Before(end) {
				if w := l.Allow(ctx, "r", spec, 1); w > 0 {
					time.Sleep(min(w, time.Millisecond))
					continue
				}
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	if got, want := float64(allowed.Load()), 10+200*d.Seconds(); got < want*0.5 || got > want*1.1 {
		t.Errorf("allowed %v, want at most %v (+10%%) and at least half", got, want)
	}
	if w := l.Allow(ctx, "r", spec, 11); w != spec.Period {
		t.Errorf("n > burst: %v", w)
	}

	limit := LimitSpec{Limit: 2}
	a, _ := l.Acquire(ctx, "c", limit)
	b, _ := l.Acquire(ctx, "c", limit)
	c, wait := l.Acquire(ctx, "c", limit)
	if a == nil || b == nil || c != nil || wait <= 0 {
		t.Fatalf("slots %v %v %v %v", a, b, c, wait)
	}
	a.Release()
	a.Release()
	if l.Held("c") != 1 {
		t.Errorf("held %d", l.Held("c"))
	}
	if c, _ = l.Acquire(ctx, "c", limit); c == nil {
		t.Error("released slot not available")
	}
}
