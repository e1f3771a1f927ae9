package smtpsink

import (
	"errors"
	"testing"

	"github.com/emersion/go-sasl"
)

func TestAuth(t *testing.T) {
	check := func(user, pass string) error {
		if user == "daniel" && pass == "tiger" {
			return nil
		}
		return errors.New("bad")
	}
	s := startSink(t, Options{TLS: true, Store: true, Auth: check})

	// Not offered, and refused, without TLS.
	c := dial(t, s)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH advertised without TLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "daniel", "tiger")); smtpCode(err) != 523 {
		t.Errorf("AUTH without TLS: %v, want 523", err)
	}
	if _, err := send(c, "a@example.com", []string{"b@example.com"}, testMessage("noauth", 100)); smtpCode(err) != 530 {
		t.Errorf("MAIL without AUTH: %v, want 530", err)
	}

	for _, tc := range []struct {
		name   string
		client sasl.Client
		code   int
	}{
		{"plain", sasl.NewPlainClient("", "daniel", "tiger"), 0},
		{"login", sasl.NewLoginClient("daniel", "tiger"), 0},
		{"wrong password", sasl.NewPlainClient("", "daniel", "lion"), 535},
	} {
		c, err := dialTLS(t, s, testTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if ok, mechs := c.Extension("AUTH"); !ok || mechs != "PLAIN LOGIN" {
			t.Errorf("%s: AUTH %q advertised %v", tc.name, mechs, ok)
		}
		err = c.Auth(tc.client)
		if smtpCode(err) != tc.code {
			t.Fatalf("%s: Auth: %v, want code %d", tc.name, err, tc.code)
		}
		if tc.code != 0 {
			continue
		}
		if _, err := send(c, "a@example.com", []string{"b@example.com"}, testMessage(tc.name, 100)); err != nil {
			t.Fatalf("%s: send: %v", tc.name, err)
		}
	}
	msgs := s.Messages()
	if len(msgs) != 2 || msgs[0].AuthUser != "daniel" || msgs[1].AuthUser != "daniel" || !msgs[0].TLS {
		t.Errorf("messages %+v", msgs)
	}
}
