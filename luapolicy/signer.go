package luapolicy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/dkim"
)

// signerValue is the Go value behind a signer object.
type signerValue struct{ dkim.Signer }

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// signerTTL is KumoMTA's default ttl of the DKIM signer cache.
const signerTTL = 300 * time.Second

// dkimSigner implements kumo.dkim.rsa_sha256_signer and
// kumo.dkim.ed25519_signer. Signers are cached by their parameters for
// their ttl (default 300 s), as KumoMTA does, so building one per message
// costs a map lookup.
func (s *state) dkimSigner(fn, alg string) lua.LGFunction {
	return func(L *lua.LState) int {
		params := s.table(1)
		key := fmt.Sprintf("%s %#v", fn, params)
		now := nowFunc()
		if v, ok := s.p.signers.get(key, now); ok {
			L.Push(toLua(L, v))
			return 1
		}
		f := newFields(fn, params)
		var o dkim.Options
		if !f.str("domain", &o.Domain) {
			f.fail("domain", "required")
		}
		if !f.str("selector", &o.Selector) {
			f.fail("selector", "required")
		}
		if !f.strings("headers", &o.Headers) {
			f.fail("headers", "required")
		}
		if v, ok := f.get("key"); ok {
			path, data, err := keySource(v)
			if err != nil {
				f.fail("key", "%v", err)
			}
			o.KeyFile, o.KeyPEM = s.p.resolvePathIf(path), data
		} else {
			f.fail("key", "required")
		}
		var hc, bc string
		if f.enum("header_canonicalization", &hc, "Relaxed", "Simple") {
			o.HeaderCanonicalization = dkim.Canonicalization(strings.ToLower(hc))
		}
		if f.enum("body_canonicalization", &bc, "Relaxed", "Simple") {
			o.BodyCanonicalization = dkim.Canonicalization(strings.ToLower(bc))
		}
		f.duration("expiration", &o.Expiration)
		f.boolean("over_sign", &o.OverSign)
		f.str("agent_user_identifier", &o.Identifier)
		ttl := signerTTL
		f.duration("ttl", &ttl)
		for _, k := range []string{"atps", "atpsh", "body_length", "reporting"} {
			if _, ok := f.get(k); ok {
				f.fail(k, "not supported by mtakit")
			}
		}
		if err := f.done(); err != nil {
			s.fail(err)
			L.Push(toLua(L, signerValue{dkim.Multi{}}))
			return 1
		}
		var (
			ks  *dkim.KeySigner
			err error
		)
		if alg == "ed25519" {
			ks, err = dkim.NewEd25519Signer(o)
		} else {
			ks, err = dkim.NewRSASigner(o)
		}
		if err != nil {
			s.fail(fmt.Errorf("%s: %w", fn, err))
			L.Push(toLua(L, signerValue{dkim.Multi{}}))
			return 1
		}
		v := signerValue{ks}
		s.p.signers.put(key, v, ttl, now)
		L.Push(toLua(L, v))
		return 1
	}
}

func (p *Policy) resolvePathIf(path string) string {
	if path == "" {
		return ""
	}
	return p.resolvePath(path)
}
