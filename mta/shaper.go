package mta

import (
	"context"

	"github.com/mtakit/mtakit/shaping"
)

// defaultShaper gives every path KumoMTA's defaults.
type defaultShaper struct{}

func (defaultShaper) PathConfig(context.Context, string, string, string) (shaping.PathConfig, error) {
	return shaping.Default(), nil
}

func (defaultShaper) Observe(context.Context, string, string, string, shaping.Response) []shaping.Action {
	return nil
}
