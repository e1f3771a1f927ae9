// Package dkim signs outgoing messages with DKIM (RFC 6376, RFC 8463).
//
// A [Signer] computes one or more DKIM-Signature header fields for a
// message; the server prepends them before the message is spooled, so a
// message is signed exactly once whether it arrived over SMTP or the HTTP
// inject API. Signing never modifies the message bytes it is given.
//
// # Signers
//
// [NewRSASigner] (RSA-SHA256, keys of 1024 to 4096 bits) and
// [NewEd25519Signer] (Ed25519-SHA256) return a [KeySigner], the Go
// counterpart of KumoMTA's kumo.dkim.rsa_sha256_signer and
// kumo.dkim.ed25519_signer, with the same options in [Options]: domain,
// selector, headers, over_sign, header and body canonicalization (relaxed
// by default) and expiration. Keys are PEM files in PKCS#1 or PKCS#8, as
// `openssl genrsa` writes them before and since OpenSSL 3.0, or PKCS#8
// Ed25519 from `openssl genpkey -algorithm ed25519`. The cryptography and
// canonicalization are github.com/emersion/go-msgauth's.
//
// A key file is read when the signer is built, through a [KeyCache] that
// keeps parsed keys keyed by path and reloads a file when its
// modification time or size changes. A missing, unreadable or invalid key
// is an error that names the file, at construction; a message is never
// passed on unsigned because of it.
//
// [Multi] applies several signers in turn (for example RSA and Ed25519,
// or the author's domain and the ESP's) and returns the fields newest
// first, exactly as if each signature had been prepended in sequence.
//
// # dkim_data.toml
//
// [Load] and [LoadData] read the data files of KumoMTA's policy-extras
// dkim_sign helper: [base], [domain."NAME"] and [signature."NAME"] blocks,
// several files merged key by key in order. The resulting [Data]
// implements Signer: it takes the domain of the message's From header
// (not the envelope sender, as KumoMTA), finds the domain block — an
// exact name first, then the most specific "*.suffix" wildcard (which
// matches subdomains at any depth but never suffix itself), then "*" —
// and signs with d= set to the From domain, followed by each signature
// listed in base.additional_signatures whose policy allows it ("Always",
// or "OnlyIfMissingDomainBlock" when no domain block matched). Keys are
// found at KeyDir/DOMAIN/SELECTOR.key unless a block sets filename;
// KeyDir defaults to KumoMTA's /opt/kumomta/etc/dkim and is set with
// [LoadOptions]. [Data.SignerFor] exposes the chosen signers for a
// domain, [Data.Check] loads every key the configuration names (for
// start-up and "mtakitd check"), and [Data.Warnings] reports unused
// blocks. Unknown keys, wrong types and invalid values are errors of the
// form "file:line: message".
//
// A message without a From header cannot be signed: the error wraps
// [ErrNoFromHeader], a [RejectError] carrying KumoMTA's reply "552 5.6.0
// DKIM signing requires a From header, but it is missing from this
// message", which the server should send.
//
// # Key generation
//
// [GenerateKey] and [WriteKeyFiles] do in Go what KumoMTA's documented
// openssl procedure does: write DIR/DOMAIN/SELECTOR.key (PEM PKCS#8, mode
// 0600) and DIR/DOMAIN/SELECTOR.pub (PEM SubjectPublicKeyInfo), refusing
// to overwrite, and return the DNS record name SELECTOR._domainkey.DOMAIN
// and TXT value "v=DKIM1; k=rsa; h=sha256; p=..." (k=ed25519 for
// Ed25519, whose p= is the raw 32-byte key per RFC 8463). [SplitTXT] and
// [ZoneTXT] split the value into the 255-byte character-strings a zone
// file needs.
//
// # Decisions
//
//   - Header list: [DefaultHeaders] (RFC 6376 section 5.4.1's list, as in
//     KumoMTA's example data, plus Sender, Message-ID, MIME-Version,
//     Content-Type, Content-Transfer-Encoding and List-Unsubscribe-Post)
//     is used when neither options nor dkim_data.toml give one; KumoMTA
//     requires a list. From must be in every list.
//   - Over-signing lists each configured name N+1 times, N being its count
//     in the message, so neither an added copy nor an added absent field
//     verifies. Without over-signing the list is used as configured.
//   - DKIM-Signature in a header list is listed exactly once per earlier
//     DKIM-Signature field: verifiers count the field being verified, so
//     one more would make the signature cover itself and always fail.
//   - h= must fit one line of 998 bytes (go-msgauth does not fold inside
//     it); a message whose over-signed list would exceed that is refused
//     with an error rather than sent with a broken line.
//   - A message that is only a header (no empty line) is signed as having
//     an empty body, which is what verifiers compute.
//   - Canonicalization names are case-insensitive ("Relaxed", "relaxed").
//   - Signers built by Data are cached per resolved settings and key
//     version, so a message costs one stat of its key file, not a parse.
//   - A signer remembers its last few signatures by digest. The copies of
//     one multi-recipient message (one per recipient, differing only in
//     unsigned trace fields) signed within the same second have equal
//     digests, so the RSA operation runs once for all of them: ten
//     recipients cost about twice one, not ten times. RSA PKCS #1 v1.5 and
//     Ed25519 signatures are deterministic, so the result is the bytes the
//     key would compute again.
//
// # Deviations from KumoMTA
//
//   - HashiCorp Vault (base.vault_mount, vault_path_prefix, vault_key) is
//     parsed but not supported: setting up a signer for any block fails
//     with [ErrVaultUnsupported], naming the Vault path that would have
//     been used. Loading such a file succeeds, so it can be checked.
//   - An explicit over_sign = false (or expiration = 0) in a block
//     overrides [base]. KumoMTA evaluates `block.over_sign or
//     base.over_sign` in Lua, where false cannot override true.
//   - Wildcard lookup backtracks: with "*.example.com" and
//     "a.b.example.com" configured, "b.example.com" matches the wildcard.
//     KumoMTA's domain map finds nothing there, because an intermediate
//     node of the longer name hides the wildcard. Lookups are
//     case-insensitive; KumoMTA's are case-sensitive.
//   - Problems KumoMTA reports only when a message is signed (a referenced
//     signature block without selector, an invalid canonicalization name)
//     or never (a malformed domain pattern such as "a.*.example.com") are
//     load errors here.
//   - Only TOML data files are read (KumoMTA also reads JSON); build a
//     [Config] and call [NewData] for other sources.
//   - The DKIM options atps, atpsh, reporting and body_length (l=) of
//     kumo.dkim.*_signer are not implemented; Options.Identifier is
//     agent_user_identifier (i=).
//   - d= must be ASCII: a From domain in Unicode form matching a domain
//     block makes signing fail (the message is not sent unsigned).
package dkim
