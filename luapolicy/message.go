package luapolicy

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/dkim"
	"github.com/mtakit/mtakit/mta"
)

// luaMessage is the Go value behind a message object.
type luaMessage struct {
	m *mta.Message
}

// address is the Go value behind an address object (msg:sender(),
// msg:recipient(), msg:from_header()).
type address struct {
	email, user, domain, name string
}

func parseAddress(s string) address {
	a := address{email: s}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		a.user, a.domain = s[:i], s[i+1:]
	} else {
		a.user = s
	}
	return a
}

func (s *state) pushAddress(a address) lua.LValue {
	ud := s.L.NewUserData()
	ud.Value = a
	s.L.SetMetatable(ud, s.addrMeta)
	return ud
}

func (s *state) addressMetatable() *lua.LTable {
	L := s.L
	mt := L.NewTable()
	mt.RawSetString("__index", L.NewFunction(func(L *lua.LState) int {
		a := L.CheckUserData(1).Value.(address)
		switch L.CheckString(2) {
		case "email":
			L.Push(lua.LString(a.email))
		case "user":
			L.Push(lua.LString(a.user))
		case "domain":
			L.Push(lua.LString(a.domain))
		case "name":
			if a.name == "" {
				L.Push(lua.LNil)
			} else {
				L.Push(lua.LString(a.name))
			}
		default:
			L.RaiseError("address objects have fields email, user, domain and name, not %q", L.CheckString(2))
		}
		return 1
	}))
	mt.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LString(L.CheckUserData(1).Value.(address).email))
		return 1
	}))
	return mt
}

// pushMessage wraps m for Lua.
func (s *state) pushMessage(m *mta.Message) *lua.LUserData {
	ud := s.L.NewUserData()
	ud.Value = &luaMessage{m: m}
	s.L.SetMetatable(ud, s.msgMeta)
	return ud
}

func checkMessage(L *lua.LState) *mta.Message {
	ud := L.CheckUserData(1)
	lm, ok := ud.Value.(*luaMessage)
	if !ok {
		L.ArgError(1, "message expected (call methods with ':', as msg:get_meta(...))")
	}
	return lm.m
}

func (s *state) messageMetatable() *lua.LTable {
	L := s.L
	methods := map[string]lua.LGFunction{
		"id": func(L *lua.LState) int {
			L.Push(lua.LString(checkMessage(L).ID().String()))
			return 1
		},
		"sender": func(L *lua.LState) int {
			L.Push(s.pushAddress(parseAddress(checkMessage(L).Sender())))
			return 1
		},
		"recipient": func(L *lua.LState) int {
			r := checkMessage(L).Recipients()
			if len(r) == 0 {
				L.Push(lua.LNil)
			} else {
				L.Push(s.pushAddress(parseAddress(r[0])))
			}
			return 1
		},
		"recipient_list": func(L *lua.LState) int {
			t := L.NewTable()
			for _, r := range checkMessage(L).Recipients() {
				t.Append(s.pushAddress(parseAddress(r)))
			}
			L.Push(t)
			return 1
		},
		"from_header": func(L *lua.LState) int {
			m := checkMessage(L)
			v, ok := m.Header("From")
			if !ok {
				L.Push(lua.LNil)
				return 1
			}
			d, err := dkim.FromDomain(m.Data())
			if err != nil {
				L.Push(lua.LNil)
				return 1
			}
			a := address{domain: d, email: v}
			if lt, gt := strings.LastIndexByte(v, '<'), strings.LastIndexByte(v, '>'); lt >= 0 && gt > lt {
				a.email = v[lt+1 : gt]
				a.name = strings.Trim(strings.TrimSpace(v[:lt]), `"`)
			}
			if i := strings.LastIndexByte(a.email, '@'); i >= 0 {
				a.user = a.email[:i]
			}
			L.Push(s.pushAddress(a))
			return 1
		},
		"get_meta": func(L *lua.LState) int {
			L.Push(toLua(L, checkMessage(L).Meta(L.CheckString(2))))
			return 1
		},
		"set_meta": func(L *lua.LState) int {
			m := checkMessage(L)
			key := L.CheckString(2)
			v, err := toGo(L.Get(3))
			if err != nil {
				L.ArgError(3, err.Error())
			}
			m.SetMeta(key, v)
			return 0
		},
		"get_data": func(L *lua.LState) int {
			L.Push(lua.LString(checkMessage(L).Data()))
			return 1
		},
		"set_data": func(L *lua.LState) int {
			m := checkMessage(L)
			m.SetData(toCRLF([]byte(L.CheckString(2))))
			return 0
		},
		"get_first_named_header_value": func(L *lua.LState) int {
			v, ok := checkMessage(L).Header(L.CheckString(2))
			if !ok {
				L.Push(lua.LNil)
			} else {
				L.Push(lua.LString(v))
			}
			return 1
		},
		"get_all_named_header_values": func(L *lua.LState) int {
			m := checkMessage(L)
			name := L.CheckString(2)
			t := L.NewTable()
			for _, f := range parseHeader(m.Data()).fields {
				if f.is(name) {
					t.Append(lua.LString(f.value()))
				}
			}
			L.Push(t)
			return 1
		},
		"get_all_headers": func(L *lua.LState) int {
			m := checkMessage(L)
			t := L.NewTable()
			for _, f := range parseHeader(m.Data()).fields {
				pair := L.CreateTable(2, 0)
				pair.Append(lua.LString(f.name))
				pair.Append(lua.LString(f.value()))
				t.Append(pair)
			}
			L.Push(t)
			return 1
		},
		"prepend_header": func(L *lua.LState) int {
			m := checkMessage(L)
			name, value := L.CheckString(2), L.CheckString(3)
			checkHeaderField(L, name, value)
			m.PrependHeader(name, value)
			return 0
		},
		"append_header": func(L *lua.LState) int {
			m := checkMessage(L)
			name, value := L.CheckString(2), L.CheckString(3)
			checkHeaderField(L, name, value)
			h := parseHeader(m.Data())
			h.fields = append(h.fields, headerField{name: name, raw: []byte(name + ": " + value + "\r\n")})
			m.SetData(h.bytes())
			return 0
		},
		"remove_all_named_headers": func(L *lua.LState) int {
			m := checkMessage(L)
			name := L.CheckString(2)
			h := parseHeader(m.Data())
			h.remove(func(f headerField) bool { return f.is(name) })
			m.SetData(h.bytes())
			return 0
		},
		"remove_x_headers": func(L *lua.LState) int {
			m := checkMessage(L)
			names := optNames(L, 2)
			h := parseHeader(m.Data())
			h.remove(func(f headerField) bool { return isXHeader(f.name) && names.match(f.name) })
			m.SetData(h.bytes())
			return 0
		},
		"import_x_headers": func(L *lua.LState) int {
			m := checkMessage(L)
			names := optNames(L, 2)
			for _, f := range parseHeader(m.Data()).fields {
				if isXHeader(f.name) && names.match(f.name) {
					m.SetMeta(strings.ReplaceAll(strings.ToLower(f.name), "-", "_"), f.value())
				}
			}
			return 0
		},
		"import_scheduling_header": func(L *lua.LState) int {
			m := checkMessage(L)
			name := L.CheckString(2)
			remove := L.OptBool(3, false)
			if _, ok := m.Header(name); !ok {
				return 0
			}
			if remove {
				h := parseHeader(m.Data())
				h.remove(func(f headerField) bool { return f.is(name) })
				m.SetData(h.bytes())
			}
			// Sending now what was meant for later would be worse than
			// refusing: the sender learns why.
			ud := L.NewUserData()
			ud.Value = &rejectError{code: 550, text: "5.7.0 scheduled sending (" + name + " header) is not supported by this server"}
			L.Error(ud, 0)
			return 0
		},
		"dkim_sign": func(L *lua.LState) int {
			m := checkMessage(L)
			ud := L.CheckUserData(2)
			sv, ok := ud.Value.(signerValue)
			if !ok {
				L.ArgError(2, "a signer from kumo.dkim.rsa_sha256_signer or kumo.dkim.ed25519_signer expected")
			}
			sig, err := sv.Sign(m.Data())
			if err != nil {
				raiseSignError(L, err)
			}
			m.PrependRaw(sig)
			return 0
		},
		"check_fix_conformance": s.checkFixConformance,
		"queue_name": func(L *lua.LState) int {
			L.Push(lua.LString(checkMessage(L).QueueName()))
			return 1
		},
	}
	mt := L.NewTable()
	idx := L.NewTable()
	L.SetFuncs(idx, methods)
	s.strict(idx, "message")
	mt.RawSetString("__index", idx)
	mt.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LString("Message(" + checkMessage(L).ID().String() + ")"))
		return 1
	}))
	return mt
}

// raiseSignError turns a signing failure into kumo.reject when the dkim
// package says the message must be refused (no From header), otherwise a
// Lua error.
func raiseSignError(L *lua.LState, err error) {
	var re *dkim.RejectError
	if errorsAs(err, &re) {
		ud := L.NewUserData()
		ud.Value = &rejectError{code: re.Code, text: fmt.Sprintf("%d.%d.%d %s", re.EnhancedCode[0], re.EnhancedCode[1], re.EnhancedCode[2], re.Message)}
		L.Error(ud, 0)
	}
	L.RaiseError("dkim_sign: %v", err)
}

func checkHeaderField(L *lua.LState, name, value string) {
	if name == "" || strings.ContainsAny(name, ": \t\r\n") {
		L.ArgError(2, fmt.Sprintf("invalid header name %q", name))
	}
	if strings.ContainsAny(strings.ReplaceAll(strings.ReplaceAll(value, "\r\n ", ""), "\r\n\t", ""), "\r\n") {
		L.ArgError(3, "header value contains a line break that is not folding")
	}
}

type nameSet map[string]bool

func (n nameSet) match(name string) bool { return n == nil || n[strings.ToLower(name)] }

func optNames(L *lua.LState, i int) nameSet {
	v := L.Get(i)
	if v == lua.LNil {
		return nil
	}
	g, err := toGo(v)
	if err != nil {
		L.ArgError(i, err.Error())
	}
	list, err := stringList(g)
	if err != nil {
		L.ArgError(i, err.Error())
	}
	n := nameSet{}
	for _, s := range list {
		n[strings.ToLower(s)] = true
	}
	return n
}

func isXHeader(name string) bool {
	return len(name) > 2 && (name[0] == 'x' || name[0] == 'X') && name[1] == '-'
}

// toCRLF converts bare LF line ends to CRLF.
func toCRLF(b []byte) []byte {
	if !bytes.Contains(b, []byte("\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+bytes.Count(b, []byte("\n")))
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// header is a parsed header block and the rest of the message.
type header struct {
	fields []headerField
	rest   []byte // the empty line and the body, or nil
}

type headerField struct {
	name string
	raw  []byte // whole field with continuation lines and final CRLF
}

func (f headerField) is(name string) bool { return strings.EqualFold(f.name, name) }

func (f headerField) value() string {
	v := f.raw[len(f.name)+1:]
	v = bytes.TrimRight(v, "\r\n")
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	return strings.TrimSpace(string(v))
}

func parseHeader(data []byte) *header {
	h := &header{}
	for len(data) > 0 {
		if bytes.HasPrefix(data, []byte("\r\n")) {
			h.rest = data
			return h
		}
		end := 0
		for {
			i := bytes.Index(data[end:], []byte("\r\n"))
			if i < 0 {
				end = len(data)
				break
			}
			end += i + 2
			if end >= len(data) || (data[end] != ' ' && data[end] != '\t') {
				break
			}
		}
		raw := data[:end]
		colon := bytes.IndexByte(raw, ':')
		if colon <= 0 {
			// Not a header field: treat the rest as body.
			h.rest = data
			return h
		}
		h.fields = append(h.fields, headerField{name: strings.TrimRight(string(raw[:colon]), " \t"), raw: raw})
		data = data[end:]
	}
	return h
}

func (h *header) remove(drop func(headerField) bool) {
	out := h.fields[:0]
	for _, f := range h.fields {
		if !drop(f) {
			out = append(out, f)
		}
	}
	h.fields = out
}

func (h *header) bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.Write(f.raw)
	}
	b.Write(h.rest)
	return b.Bytes()
}

// checkFixConformance implements msg:check_fix_conformance(check, fix)
// for the flags mtakit supports; it returns nil when the message passes
// the checks (after the fixes) or a description of the failures.
func (s *state) checkFixConformance(L *lua.LState) int {
	m := checkMessage(L)
	check := flagList(L, 2)
	fix := flagList(L, 3)
	known := map[string]bool{"NON_CANONICAL_LINE_ENDINGS": true, "MISSING_DATE_HEADER": true,
		"MISSING_MESSAGE_ID_HEADER": true, "MISSING_MIME_VERSION": true, "LINE_TOO_LONG": true}
	for _, f := range append(append([]string{}, check...), fix...) {
		if !known[f] {
			L.ArgError(2, fmt.Sprintf("conformance flag %q is not supported by mtakit (supported: NON_CANONICAL_LINE_ENDINGS, MISSING_DATE_HEADER, MISSING_MESSAGE_ID_HEADER, MISSING_MIME_VERSION, LINE_TOO_LONG)", f))
		}
	}
	has := func(list []string, f string) bool {
		for _, x := range list {
			if x == f {
				return true
			}
		}
		return false
	}
	if has(fix, "NON_CANONICAL_LINE_ENDINGS") {
		m.SetData(toCRLF(bytes.ReplaceAll(m.Data(), []byte("\r\n"), []byte("\n"))))
	}
	if _, ok := m.Header("Date"); !ok && has(fix, "MISSING_DATE_HEADER") {
		m.PrependHeader("Date", time.Now().Format(time.RFC1123Z))
	}
	if _, ok := m.Header("Message-ID"); !ok && has(fix, "MISSING_MESSAGE_ID_HEADER") {
		m.PrependHeader("Message-ID", "<"+m.ID().String()+"@mtakit>")
	}
	if _, ok := m.Header("MIME-Version"); !ok && has(fix, "MISSING_MIME_VERSION") {
		m.PrependHeader("MIME-Version", "1.0")
	}
	var problems []string
	data := m.Data()
	for _, f := range check {
		switch f {
		case "NON_CANONICAL_LINE_ENDINGS":
			if bytes.Count(data, []byte("\n")) != bytes.Count(data, []byte("\r\n")) || bytes.Count(data, []byte("\r")) != bytes.Count(data, []byte("\r\n")) {
				problems = append(problems, "NON_CANONICAL_LINE_ENDINGS")
			}
		case "MISSING_DATE_HEADER":
			if _, ok := m.Header("Date"); !ok {
				problems = append(problems, f)
			}
		case "MISSING_MESSAGE_ID_HEADER":
			if _, ok := m.Header("Message-ID"); !ok {
				problems = append(problems, f)
			}
		case "MISSING_MIME_VERSION":
			if _, ok := m.Header("MIME-Version"); !ok {
				problems = append(problems, f)
			}
		case "LINE_TOO_LONG":
			for _, line := range bytes.Split(data, []byte("\r\n")) {
				if len(line) > 998 {
					problems = append(problems, f)
					break
				}
			}
		}
	}
	if len(problems) == 0 {
		L.Push(lua.LNil)
	} else {
		L.Push(lua.LString("Message has conformance issues: " + strings.Join(problems, "|")))
	}
	return 1
}

func flagList(L *lua.LState, i int) []string {
	s := L.OptString(i, "")
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '|' || r == ',' || r == ' ' }) {
		out = append(out, strings.ToUpper(f))
	}
	return out
}
