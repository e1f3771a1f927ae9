package metrics_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/metrics"
	"github.com/mtakit/mtakit/spool"
)

// Count a server's events and queues for Prometheus.
func Example() {
	m := metrics.New()
	srv, err := mta.New(mta.Options{
		DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(),
		Log:          m.Sink(nil), // or m.Sink(localLogs)
		HoldDelivery: true,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	m.Watch(srv)
	srv.Inject(context.Background(), &mta.Submission{Sender: "a@example.com", Recipients: []string{"b@example.net"}, Data: []byte("Subject: hi\r\n\r\nhi\r\n")})

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "mtakit_messages_total") || strings.HasPrefix(line, "mtakit_scheduled_messages{") {
			fmt.Println(line)
		}
	}
	// Output:
	// mtakit_messages_total{queue="example.net",site="",source="",type="Reception"} 1
	// mtakit_scheduled_messages{queue="example.net"} 1
}
