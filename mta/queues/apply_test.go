package queues_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/queues"
	"github.com/mtakit/mtakit/spool"
)

// TestApplyInject checks Apply's tenant rules through Server.Inject, with
// delivery held: queue names, default tenant, require_authz, campaign.
func TestApplyInject(t *testing.T) {
	cfg, err := queues.Parse("queues.toml", []byte(`
tenant_header = "X-Tenant"
campaign_header = "X-Campaign"
remove_campaign_header = true
default_tenant = "house"

[tenant.house]
[tenant.vip]
require_authz = ["daniel"]

[queue."*.example.net".vip.launch]
routing_domain = "relay.example.org"
`))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mta.New(mta.Options{
		Hostname:     "mx.test",
		DataSpool:    spool.NewMemory(),
		MetaSpool:    spool.NewMemory(),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		HoldDelivery: true,
		Policy:       queues.NewHelper(cfg).Policy(mta.Policy{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	inject := func(rcpt, headers string, meta map[string]any) error {
		_, err := srv.Inject(context.Background(), &mta.Submission{
			Sender: "s@example.com", Recipients: []string{rcpt}, Meta: meta,
			Data: []byte(headers + "Subject: x\r\n\r\nbody\r\n"),
		})
		return err
	}
	if err := inject("a@example.com", "", nil); err != nil {
		t.Fatal(err)
	}
	if err := inject("b@mail.example.net", "X-Tenant: vip\r\nX-Campaign: launch\r\n", map[string]any{"authz_id": "daniel"}); err != nil {
		t.Fatal(err)
	}
	if err := inject("c@example.com", "X-Tenant: vip\r\n", nil); err == nil || !strings.Contains(err.Error(), "tenant 'vip' requires SMTP AUTH") {
		t.Errorf("vip without authz_id: %v", err)
	}
	if err := inject("c@example.com", "X-Tenant: vip\r\n", map[string]any{"authz_id": "eve"}); err == nil ||
		!strings.Contains(err.Error(), "authz_id 'eve' is not authorized to send as tenant 'vip'") {
		t.Errorf("vip as eve: %v", err)
	}
	got := srv.QueueSummary()
	want := map[string]int{"house@example.com": 1, "launch:vip@mail.example.net!relay.example.org": 1}
	if len(got) != len(want) {
		t.Errorf("queues %v, want %v", got, want)
	}
	for q, n := range want {
		if got[q] != n {
			t.Errorf("queues %v, want %v", got, want)
		}
	}
}
