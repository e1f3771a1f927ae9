package logs_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/mtakit/mtakit/mta/logs"
)

func ExampleOpenLocal() {
	dir, err := os.MkdirTemp("", "mtakit-logs-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	sink, err := logs.OpenLocal(logs.LocalConfig{
		LogDir:             dir,
		MaxSegmentDuration: time.Minute, // close idle segments so tailers see them
	})
	if err != nil {
		log.Fatal(err)
	}

	rec := &logs.Record{
		Type:      logs.Reception,
		ID:        "1d98076abbbc11ed940250ebf67f93bd",
		Sender:    "user@sender.example.com",
		Recipient: logs.Recipients{"user@recipient.example.com"},
		Queue:     "recipient.example.com",
		Size:      1047,
		Response:  logs.Response{Code: 250, Content: "OK"},
	}
	rec.SetTimes(time.Now(), time.Now())
	if err := sink.Log(rec); err != nil {
		log.Fatal(err)
	}
	// Close writes the end of the zstd frame and marks the segment done
	// (read-only), as KumoMTA does.
	if err := sink.Close(); err != nil {
		log.Fatal(err)
	}

	segs, err := logs.ListSegments(dir)
	if err != nil {
		log.Fatal(err)
	}
	fi, err := os.Stat(segs[0])
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("segments:", len(segs))
	fmt.Println("named like 20060102-150405.000000000:", len(filepath.Base(segs[0])) >= len("20060102-150405"))
	fmt.Println("done (read-only):", fi.Mode().Perm()&0o222 == 0)
	// Output:
	// segments: 1
	// named like 20060102-150405.000000000: true
	// done (read-only): true
}

func ExampleScan() {
	dir, err := os.MkdirTemp("", "mtakit-logs-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	sink, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	for i, rcpt := range []logs.Recipients{{"a@example.com"}, {"b@example.com", "c@example.com"}} {
		rec := &logs.Record{Type: logs.Delivery, ID: fmt.Sprint(i), Recipient: rcpt,
			Response: logs.Response{Code: 250, Content: "2.0.0 OK"}}
		if err := sink.Log(rec); err != nil {
			log.Fatal(err)
		}
	}
	if err := sink.Close(); err != nil {
		log.Fatal(err)
	}

	err = logs.Scan(dir, func(r *logs.Record) error {
		fmt.Println(r.Type, r.ID, r.Recipient, r.Response.Code, r.BounceClassification)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// Delivery 0 [a@example.com] 250 Uncategorized
	// Delivery 1 [b@example.com c@example.com] 250 Uncategorized
}

func ExampleReadDir() {
	dir, err := os.MkdirTemp("", "mtakit-logs-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Plain JSON lines (an mtakit extension) read back the same way.
	sink, err := logs.OpenLocal(logs.LocalConfig{LogDir: dir, Uncompressed: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := sink.Log(&logs.Record{Type: logs.Bounce, ID: "42", Response: logs.Response{Code: 550}}); err != nil {
		log.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		log.Fatal(err)
	}

	recs, err := logs.ReadDir(dir)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(recs), recs[0].Type, recs[0].ID, recs[0].Response.Code)
	// Output:
	// 1 Bounce 42 550
}
