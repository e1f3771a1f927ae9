package spool_test

import (
	"testing"

	"github.com/mtakit/mtakit/spool"
	"github.com/mtakit/mtakit/spool/spooltest"
)

func TestMemory(t *testing.T) {
	spooltest.Run(t, func(t *testing.T) spool.Spool { return spool.NewMemory() })
}
