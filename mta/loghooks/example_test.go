package loghooks_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/mtakit/mtakit/mta/loghooks"
	"github.com/mtakit/mtakit/mta/logs"
	"github.com/mtakit/mtakit/spool"
)

// Send log records to a webhook in batches.
func Example() {
	got := make(chan string, 1)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
	}))
	defer collector.Close()

	hook, err := loghooks.Open(loghooks.Config{
		URL:             collector.URL,
		Queue:           spool.NewMemory(), // use Dir for a durable queue
		BatchSize:       2,
		MaxBatchLatency: 10 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer hook.Close()
	for _, id := range []string{"a", "b"} {
		hook.Log(&logs.Record{Type: logs.Delivery, ID: id}) // normally via mta.Options.Log
	}
	body := <-got
	fmt.Println(body[:2], len(body) > 100, body[len(body)-1:])
	// Output: [{ true ]
}
