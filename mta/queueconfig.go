package mta

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/emersion/go-smtp"
)

// Queue configuration defaults, as KumoMTA's make_queue_config.
const (
	DefaultRetryInterval = 20 * time.Minute
	DefaultMaxAge        = 7 * 24 * time.Hour
)

// QueueConfig configures one scheduled queue, as KumoMTA's
// make_queue_config. Zero fields take the defaults.
type QueueConfig struct {
	// RetryInterval is the delay after the first transient failure; it
	// doubles after each further one (default 20 minutes).
	RetryInterval time.Duration
	// MaxRetryInterval caps the doubling; 0 means no cap.
	MaxRetryInterval time.Duration
	// MaxAge is how long a message may stay queued before it expires
	// (default 7 days).
	MaxAge time.Duration
	// MaxMessageRate, a throttle spec such as "100/s" (make_queue_config
	// max_message_rate), bounds how fast messages of this scheduled queue
	// are released for delivery; beyond it they wait, without an attempt
	// being counted. Enforced through Options.Throttle, so a fleet sharing
	// a Redis throttle shares the rate. "" means unlimited.
	MaxMessageRate string
	// EgressPool names the pool of egress sources to send from;
	// "" means the built-in "unspecified" pool of one default source.
	EgressPool string
	// Protocol says how messages leave: SMTP to the domain's MX hosts
	// (the zero value), SMTP to a fixed host list, or a Go function.
	Protocol Protocol
}

// Protocol selects how a queue's messages are delivered.
type Protocol struct {
	// MXList, when not empty, replaces MX resolution with these hosts,
	// tried in order (KumoMTA's protocol = { smtp = { mx_list = ... } }).
	// Entries are host names or IP addresses, with an optional ":port".
	MXList []string
	// Deliver, when set, delivers messages by calling it instead of
	// using SMTP: for embedders who hand mail to another system, and for
	// tests. A nil error means delivered; an error carrying an SMTP reply
	// (see Reject) is a transient (4xx) or permanent (5xx) failure; any
	// other error is transient.
	Deliver DeliverFunc
}

// DeliverFunc delivers one message for a queue using Protocol.Deliver.
type DeliverFunc func(ctx context.Context, d *Delivery) error

// Delivery is a message handed to a DeliverFunc.
type Delivery struct {
	ID         string
	Sender     string
	Recipients []string
	Data       []byte
	Queue      string
	Attempt    int // 1 for the first attempt
}

func (c QueueConfig) withDefaults() QueueConfig {
	if c.RetryInterval <= 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.MaxRetryInterval < 0 {
		c.MaxRetryInterval = 0
	}
	return c
}

// delayForAttempt is KumoMTA's delay_for_attempt: retry_interval doubled
// for each earlier attempt (zero-based n), capped at max_retry_interval.
func (c QueueConfig) delayForAttempt(n int) time.Duration {
	d := c.RetryInterval
	for i := 0; i < n; i++ {
		if c.MaxRetryInterval > 0 && d >= c.MaxRetryInterval {
			break
		}
		if d > 365*24*time.Hour { // far beyond any max_age; avoid overflow
			break
		}
		d *= 2
	}
	if c.MaxRetryInterval > 0 && d > c.MaxRetryInterval {
		d = c.MaxRetryInterval
	}
	return d
}

// jitter returns KumoMTA's retry jitter: uniform in ±half of
// min(retry_interval/20, 60s).
func (c QueueConfig) jitter() time.Duration {
	span := min(c.RetryInterval/20, time.Minute)
	if span <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(span))) - span/2
}

// nextAttempt decides what happens after a transient failure of a message
// created at created that has made attempts attempts before this one. It
// returns the next due time, or an expiration response when that time
// would exceed max_age.
func (c QueueConfig) nextAttempt(now, created time.Time, attempts int) (time.Time, *smtp.SMTPError) {
	delay := c.delayForAttempt(attempts) + c.jitter()
	due := now.Add(delay)
	if due.Sub(created) > c.MaxAge {
		return time.Time{}, &smtp.SMTPError{
			Code:         551,
			EnhancedCode: smtp.EnhancedCode{5, 4, 7},
			Message: fmt.Sprintf("Next delivery time would be %s after creation, which exceeds max_age=%s",
				due.Sub(created).Round(time.Second), c.MaxAge),
		}
	}
	return due, nil
}
