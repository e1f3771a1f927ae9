package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/metrics"
	"github.com/mtakit/mtakit/spool"
)

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include want, summed over matches.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
outer:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue outer
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	m := metrics.New()
	release := make(chan struct{})
	srv, err := mta.New(mta.Options{
		DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(),
		Log:    m.Sink(nil),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Policy: mta.Policy{QueueConfig: func(string, string, string, string, string) (mta.QueueConfig, error) {
			return mta.QueueConfig{RetryInterval: time.Hour, Protocol: mta.Protocol{Deliver: func(ctx context.Context, d *mta.Delivery) error {
				if strings.HasPrefix(d.Recipients[0], "bad") {
					return mta.Reject(550, "5.1.1 no such user")
				}
				if strings.HasPrefix(d.Recipients[0], "slow") {
					select {
					case <-release:
					case <-ctx.Done():
					}
					return errors.New("try later")
				}
				return nil
			}}}, nil
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer close(release)
	m.Watch(srv)
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()

	before := scrape(t, ts.URL)
	if before["go_goroutines"] == nil {
		t.Error("no Go runtime metrics")
	}
	if v := value(before, "mtakit_messages_total", nil); v != 0 {
		t.Errorf("messages before traffic: %v", v)
	}
	for _, rcpt := range []string{"a@one.test", "b@one.test", "bad@two.test", "slow@three.test"} {
		if _, err := srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{rcpt}, Data: []byte("Subject: x\r\n\r\nx\r\n")}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	var fams map[string]*dto.MetricFamily
	for {
		fams = scrape(t, ts.URL)
		if value(fams, "mtakit_messages_total", map[string]string{"type": "Delivery"}) == 2 &&
			value(fams, "mtakit_messages_total", map[string]string{"type": "Bounce"}) == 1 &&
			value(fams, "mtakit_connections", map[string]string{"queue": egress.ReadyQueueName("unspecified", "three.test", "go")}) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics did not move: %v", fams["mtakit_messages_total"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mtakit_messages_total", map[string]string{"type": "Reception"}, 4},
		{"mtakit_messages_total", map[string]string{"type": "Reception", "queue": "one.test"}, 2},
		{"mtakit_messages_total", map[string]string{"type": "Delivery", "queue": "one.test", "source": "unspecified"}, 2},
		{"mtakit_messages_total", map[string]string{"type": "Bounce", "queue": "two.test"}, 1},
		{"mtakit_scheduled_messages", map[string]string{"queue": "three.test"}, 1},
		{"mtakit_scheduled_messages", map[string]string{"queue": "one.test"}, 0},
		{"mtakit_delivery_latency_seconds", nil, 2},
		{"mtakit_attempt_count", nil, 3},
		{"mtakit_spool_latency_seconds", nil, 4},
	}
	for _, c := range checks {
		if got := value(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if site := fams["mtakit_messages_total"]; site != nil {
		for _, mm := range site.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "site" && l.GetValue() != "" && !strings.Contains(l.GetValue(), "->") {
					t.Errorf("site label %q is not a ready queue name", l.GetValue())
				}
			}
		}
	}
}
