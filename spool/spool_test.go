package spool_test

import (
	"testing"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/spooltest"
)

func TestMemory(t *testing.T) {
	spooltest.Run(t, func(t *testing.T) spool.Spool { return spool.NewMemory() })
}

func TestBadger(t *testing.T) {
	spooltest.RunDurable(t, func(t *testing.T, dir string) spool.Spool {
		s, err := spool.OpenBadger(dir, spool.BadgerOptions{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
