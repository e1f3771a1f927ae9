package mta

import (
	"context"

	"github.com/mtakit/mtakit/shaping"
)

// defaultShaper gives every path KumoMTA's defaults.
var defaultShaper = shaping.PathFunc(func(context.Context, string, string, string) (shaping.PathConfig, error) {
	return shaping.Default(), nil
})
