package mta

import (
	"testing"
	"time"
)

// Retries back off by doubling retry_interval, capped at
// max_retry_interval (KumoMTA's delay_for_attempt).
func TestDelayForAttempt(t *testing.T) {
	tests := []struct {
		name string
		cfg  QueueConfig
		want []time.Duration // delays for attempts 0, 1, 2, ...
	}{
		{"doubling", QueueConfig{RetryInterval: time.Minute}, []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute}},
		{"capped", QueueConfig{RetryInterval: time.Minute, MaxRetryInterval: 5 * time.Minute},
			[]time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute}},
		{"cap below interval", QueueConfig{RetryInterval: 10 * time.Minute, MaxRetryInterval: 3 * time.Minute}, []time.Duration{3 * time.Minute, 3 * time.Minute}},
		{"defaults", QueueConfig{}, []time.Duration{20 * time.Minute, 40 * time.Minute}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg.withDefaults()
			for n, want := range tc.want {
				if got := cfg.delayForAttempt(n); got != want {
					t.Errorf("attempt %d: delay %v, want %v", n, got, want)
				}
			}
			if got := cfg.delayForAttempt(1000); got <= 0 {
				t.Errorf("attempt 1000: delay %v overflowed", got)
			}
		})
	}
}
