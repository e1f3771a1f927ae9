package shaping

import (
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
