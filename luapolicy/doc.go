// Package luapolicy runs a KumoMTA-style init.lua policy with gopher-lua and
// implements mtakit's interfaces (listener domains, queue configuration,
// egress sources and pools, shaping, DKIM signing) from it.
//
// The adapter is built by its own issue. See DESIGN.md, section "luapolicy",
// for the surface it will cover.
package luapolicy
