package mta

import "testing"

func TestRemoveHeader(t *testing.T) {
	msg := "X-Tenant: a\r\nSubject: hi\r\nx-tenant: b\r\n  folded\r\nX-Tenant-Other: c\r\nTo: t@example.com\r\n\r\nX-Tenant: body\r\n"
	got := string(removeHeader([]byte(msg), "X-Tenant"))
	want := "Subject: hi\r\nX-Tenant-Other: c\r\nTo: t@example.com\r\n\r\nX-Tenant: body\r\n"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if out := removeHeader([]byte(want), "X-Missing"); string(out) != want {
		t.Errorf("unchanged message altered: %q", out)
	}
}
