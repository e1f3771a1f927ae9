package luapolicy

import lua "github.com/yuin/gopher-lua"

func (s *state) invokeGetEgressPathConfig(L *lua.LState) int {
	domain, source, site := L.CheckString(1), L.CheckString(2), L.CheckString(3)
	v, err := s.fire("get_egress_path_config", lua.LString(domain), lua.LString(source), lua.LString(site))
	if err != nil {
		L.RaiseError("%v", err)
	}
	L.Push(v)
	return 1
}
