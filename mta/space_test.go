package mta_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/spool"
)

// fillingSpool reports a filesystem whose free space the test sets.
type fillingSpool struct {
	spool.Spool
	freePercent atomic.Int64
}

func (f *fillingSpool) Space() (spool.Space, error) {
	return spool.Space{FreeBytes: uint64(f.freePercent.Load()), TotalBytes: 100, FreeInodes: 50, TotalInodes: 100}, nil
}

// Below min_free_space mail is refused with 452 4.3.1 (nothing stored);
// when space returns it is accepted again.
func TestLowSpoolSpaceDefersMail(t *testing.T) {
	data := &fillingSpool{Spool: spool.NewMemory()}
	data.freePercent.Store(5)
	ts := startServer(t, data, spool.NewMemory())
	_, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("inject with 5%% free: %v, want 452 4.3.1", err)
	}
	if countSpool(t, data) != 0 || ts.srv.QueuedCount() != 0 {
		t.Fatal("a refused message was stored")
	}
	data.freePercent.Store(50)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := ts.srv.Inject(context.Background(), &mta.Submission{Sender: "s@example.com", Recipients: []string{"r@dest.example"}, Data: []byte("Subject: x\r\n\r\nx\r\n")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after space returned: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
