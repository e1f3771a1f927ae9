package luapolicy

import (
	"fmt"

	lua "github.com/yuin/gopher-lua"
)

// The sources, queue and shaping helpers read sources.toml, queues.toml
// and shaping.toml with the Go loaders of packages egress, mta/queues and
// shaping. Until those loaders are part of the build, the helpers report
// that they are unavailable.

func (s *state) unavailable(L *lua.LState, helper, pkg string) int {
	s.fail(fmt.Errorf("%s is not available in this build of mtakit: it needs the %s loader", helper, pkg))
	L.Push(L.NewFunction(func(L *lua.LState) int { return 0 }))
	return 1
}

func (s *state) sourcesSetup(L *lua.LState) int {
	return s.unavailable(L, "policy-extras.sources", "egress sources.toml")
}

func (s *state) queueSetup(L *lua.LState) int {
	return s.unavailable(L, "policy-extras.queue", "queues.toml")
}

func (s *state) queueSetupWithOptions(L *lua.LState) int {
	return s.unavailable(L, "policy-extras.queue", "queues.toml")
}

func (s *state) shapingSetup(L *lua.LState) int {
	return s.unavailable(L, "policy-extras.shaping", "shaping.toml")
}

func (s *state) shapingSetupWithAutomation(L *lua.LState) int {
	return s.unavailable(L, "policy-extras.shaping", "shaping.toml")
}
