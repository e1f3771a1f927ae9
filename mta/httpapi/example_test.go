package httpapi_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/spool"
)

// Inject a templated message for two recipients through the HTTP API.
func Example() {
	srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), HoldDelivery: true, Logger: quiet()})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	api, err := httpapi.New(httpapi.Config{Server: srv})
	if err != nil {
		log.Fatal(err)
	}
	ts := httptest.NewServer(api) // on 127.0.0.1: a trusted host by default
	defer ts.Close()

	body := `{
	  "envelope_sender": "news@example.com",
	  "content": {"subject": "Hello {{ name }}", "text_body": "Your code: {{ code }}"},
	  "recipients": [
	    {"email": "ann@example.net", "name": "Ann", "substitutions": {"code": "A1"}},
	    {"email": "bo@example.org", "name": "Bo", "substitutions": {"code": "B2"}}
	  ]
	}`
	resp, err := http.Post(ts.URL+"/api/inject/v1", "application/json", strings.NewReader(body))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var out httpapi.InjectResponse
	json.NewDecoder(resp.Body).Decode(&out)
	fmt.Println(resp.StatusCode, out.SuccessCount, out.FailCount, srv.QueueSummary())
	// Output: 200 2 0 map[example.net:1 example.org:1]
}
