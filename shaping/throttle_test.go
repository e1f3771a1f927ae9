package shaping

import (
	"testing"
	"time"
)

func TestParseThrottle(t *testing.T) {
	tests := []struct {
		in      string
		want    Throttle
		wantErr bool
	}{
		{"100/s", Throttle{Limit: 100, Period: time.Second}, false},
		{"100/min", Throttle{Limit: 100, Period: time.Minute}, false},
		{"1,000/h", Throttle{Limit: 1000, Period: time.Hour}, false},
		{"1_000/hour", Throttle{Limit: 1000, Period: time.Hour}, false},
		{"10/5min", Throttle{Limit: 10, Period: 5 * time.Minute}, false},
		{"2/day", Throttle{Limit: 2, Period: 24 * time.Hour}, false},
		{"local:50/s,max_burst=5", Throttle{Limit: 50, Period: time.Second, MaxBurst: 5, Local: true}, false},
		{"0/s", Throttle{}, true},
		{"100", Throttle{}, true},
		{"100/fortnight", Throttle{}, true},
		{"x/s", Throttle{}, true},
		{"5/s,max_burst=0", Throttle{}, true},
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
	if s := (Throttle{Limit: 100, Period: time.Second}).String(); s != "100/s" {
		t.Errorf("String %q", s)
	}
}
