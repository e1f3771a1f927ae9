package listener_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"net/smtp"

	"github.com/mtakit/mtakit/listener"
)

// printHandler accepts every message and prints its envelope. A real
// handler stores the message durably before returning (mta.Server does).
type printHandler struct{}

func (printHandler) HandleMessage(_ context.Context, m *listener.Message) ([]string, error) {
	fmt.Println(m.Sender, m.Recipients[0].Address, m.Recipients[0].ListenerDomain.RelayTo)
	return []string{"0123456789abcdef0123456789abcdef"}, nil
}

func ExampleListen() {
	l, err := listener.Listen(listener.Config{
		Addr:       "127.0.0.1:0",
		Hostname:   "mx.example.com",
		RelayHosts: []netip.Prefix{},                                   // nobody relays by address...
		Domains:    listener.DomainMap{"example.com": {RelayTo: true}}, // ...but anyone may send here
	}, printHandler{}, nil)
	if err != nil {
		log.Fatal(err)
	}
	go l.Serve()
	defer l.Close()

	err = smtp.SendMail(l.Addr().String(), nil, "a@example.net", []string{"b@example.com"}, []byte("Subject: hi\r\n\r\nhello\r\n"))
	fmt.Println(err)
	err = smtp.SendMail(l.Addr().String(), nil, "a@example.net", []string{"b@elsewhere.net"}, []byte("Subject: hi\r\n\r\nhello\r\n"))
	fmt.Println(err)
	// Output:
	// a@example.net b@example.com true
	// <nil>
	// 550 "5.7.1 relaying not permitted"
}
