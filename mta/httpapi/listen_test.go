package httpapi_test

import (
	"context"
	"net/http"
	"net/netip"
	"testing"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/httpapi"
	"github.com/mtakit/mtakit/spool"
)

func TestListenAndShutdown(t *testing.T) {
	srv, err := mta.New(mta.Options{DataSpool: spool.NewMemory(), MetaSpool: spool.NewMemory(), HoldDelivery: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	l, err := httpapi.Listen("127.0.0.1:0", httpapi.Config{Server: srv, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/api/check-liveness/v1"
	resp, err := http.Get(url)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("liveness: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := l.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(url); err == nil {
		t.Error("still serving after Shutdown")
	}
	if _, err := httpapi.Listen(l.Addr().String()+"x", httpapi.Config{Server: srv}); err == nil {
		t.Error("bad address accepted")
	}
}

func TestParseTrustedHosts(t *testing.T) {
	got, err := httpapi.ParseTrustedHosts([]string{"127.0.0.1", "::1", "10.1.2.3/8", "::ffff:192.0.2.1"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"localhost", "10.0.0.0/33", ""} {
		if _, err := httpapi.ParseTrustedHosts([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
