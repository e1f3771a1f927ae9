package dkim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mtakit/mtakit/internal/kumoconf"
)

// DefaultKeyDir is where KumoMTA's dkim_sign helper looks for keys:
// DefaultKeyDir/DOMAIN/SELECTOR.key.
const DefaultKeyDir = "/opt/kumomta/etc/dkim"

// Signing policies of dkim_data.toml.
const (
	PolicyAlways                   = "Always"
	PolicyOnlyIfMissingDomainBlock = "OnlyIfMissingDomainBlock"
)

// Values of the algo key of dkim_data.toml.
const (
	AlgoSHA256  = "sha256"  // RSA-SHA256 (the default)
	AlgoEd25519 = "ed25519" // Ed25519-SHA256
)

// Config is the content of one or more dkim_data.toml files, in the schema
// of KumoMTA's policy-extras dkim_sign helper. It can also be built in Go
// and passed to NewData. Empty strings and nil slices/pointers mean "not
// set" and fall back to Base.
type Config struct {
	Base BaseConfig
	// Domain holds the [domain."NAME"] blocks, chosen by the From header
	// domain. NAME is a domain, "*.suffix" (any subdomain of suffix, at any
	// depth, but not suffix itself) or "*" (any domain). Names are
	// case-insensitive.
	Domain map[string]DomainConfig
	// Signature holds the [signature."NAME"] blocks; only those named in
	// Base.AdditionalSignatures are used.
	Signature map[string]SignatureConfig
}

// BaseConfig is the [base] table: defaults for every block plus global
// settings.
type BaseConfig struct {
	// VaultMount, VaultPathPrefix and VaultKey select HashiCorp Vault as
	// the key store in KumoMTA. They are parsed, but mtakit cannot read
	// Vault: with VaultMount set, every signer setup fails with
	// ErrVaultUnsupported.
	VaultMount      string
	VaultPathPrefix string
	VaultKey        string
	// AdditionalSignatures names the [signature] blocks to apply to every
	// message (subject to each block's policy), in order.
	AdditionalSignatures []string
	// Policy for domain blocks; only "Always" exists.
	Policy string
	// Selector is the default selector.
	Selector string
	// Expiration in seconds (x= = t= + Expiration); 0 means none.
	Expiration int64
	// Headers is the default list of headers to sign.
	Headers []string
	// Canonicalizations, "Relaxed" (default) or "Simple".
	HeaderCanonicalization string
	BodyCanonicalization   string
	// OverSign is the default for over-signing.
	OverSign bool
}

// DomainConfig is a [domain."NAME"] block; it signs with d= set to the
// message's From domain.
type DomainConfig struct {
	Selector               string
	Headers                []string
	Policy                 string // "" or "Always"
	Algo                   string // "" or "sha256" (RSA), "ed25519"
	Expiration             *int64 // seconds; nil inherits Base, 0 means none
	Filename               string // key file; default KeyDir/DOMAIN/SELECTOR.key
	HeaderCanonicalization string
	BodyCanonicalization   string
	OverSign               *bool // nil inherits Base
}

// SignatureConfig is a [signature."NAME"] block: an extra signature with a
// fixed signing domain (for example the ESP's), independent of the From
// domain. Policy is "Always" (default) or "OnlyIfMissingDomainBlock" (only
// when no domain block matched the message).
type SignatureConfig struct {
	Domain string // d=, required
	DomainConfig
}

// The file schema: pointers record which keys a file sets, so that files
// merge key by key as in KumoMTA (utils.merge_into).
type fileConfig struct {
	Base      *fileBase                 `toml:"base"`
	Domain    map[string]*fileBlock     `toml:"domain"`
	Signature map[string]*fileSignature `toml:"signature"`
}

type fileBase struct {
	VaultMount             *string  `toml:"vault_mount"`
	VaultPathPrefix        *string  `toml:"vault_path_prefix"`
	VaultKey               *string  `toml:"vault_key"`
	AdditionalSignatures   []string `toml:"additional_signatures"`
	Policy                 *string  `toml:"policy"`
	Selector               *string  `toml:"selector"`
	Expiration             *int64   `toml:"expiration"`
	Headers                []string `toml:"headers"`
	HeaderCanonicalization *string  `toml:"header_canonicalization"`
	BodyCanonicalization   *string  `toml:"body_canonicalization"`
	OverSign               *bool    `toml:"over_sign"`
}

type fileBlock struct {
	Selector               *string  `toml:"selector"`
	Headers                []string `toml:"headers"`
	Policy                 *string  `toml:"policy"`
	Algo                   *string  `toml:"algo"`
	Expiration             *int64   `toml:"expiration"`
	Filename               *string  `toml:"filename"`
	HeaderCanonicalization *string  `toml:"header_canonicalization"`
	BodyCanonicalization   *string  `toml:"body_canonicalization"`
	OverSign               *bool    `toml:"over_sign"`
}

type fileSignature struct {
	Domain *string `toml:"domain"`
	fileBlock
}

// MergeTOML parses one dkim_data.toml document and merges it into c: keys
// set in the document replace those already in c, block by block and key
// by key, as KumoMTA does when it loads several files. name is used in
// error messages, which have the form "name:line: message". Unknown keys,
// wrong value types and invalid enumeration values are errors; on error c
// is left unchanged.
func (c *Config) MergeTOML(name string, data []byte) error {
	doc := string(data)
	var fc fileConfig
	md, err := toml.Decode(doc, &fc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s:%d: %s", name, pe.Position.Line, pe.Message)
		}
		// Type mismatches come as "toml: line N (last key "k"): message".
		if m := tomlLineErr.FindStringSubmatch(err.Error()); m != nil {
			return fmt.Errorf("%s:%s: %s: %s", name, m[1], m[2], m[3])
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	var errs []error
	var reported []toml.Key
	for _, k := range md.Undecoded() {
		if slices.ContainsFunc(reported, func(p toml.Key) bool { return hasKeyPrefix(k, p) }) {
			continue
		}
		reported = append(reported, k)
		errs = append(errs, kumoconf.KeyError(name, doc, k, "unknown key %s", kumoconf.FormatKey(k)))
	}
	fail := func(key toml.Key, err error) {
		errs = append(errs, kumoconf.KeyError(name, doc, key, "%s: %v", kumoconf.FormatKey(key), err))
	}

	if b := fc.Base; b != nil {
		if b.Policy != nil {
			if err := checkEnum(*b.Policy, PolicyAlways); err != nil {
				fail(toml.Key{"base", "policy"}, err)
			}
		}
		checkCommon(b.Expiration, b.HeaderCanonicalization, b.BodyCanonicalization, b.Headers, toml.Key{"base"}, fail)
		if b.Selector != nil {
			if err := checkTagValue("selector", *b.Selector); err != nil {
				fail(toml.Key{"base", "selector"}, err)
			}
		}
	}
	for _, pattern := range sortedKeys(fc.Domain) {
		b := fc.Domain[pattern]
		at := toml.Key{"domain", pattern}
		if err := checkDomainPattern(pattern); err != nil {
			fail(at, err)
		}
		checkBlock(b, at, PolicyAlways, fail)
	}
	for _, sigName := range sortedKeys(fc.Signature) {
		s := fc.Signature[sigName]
		at := toml.Key{"signature", sigName}
		if s == nil {
			s = &fileSignature{}
			fc.Signature[sigName] = s
		}
		if s.Domain == nil {
			fail(at, errors.New("missing required key domain (the signing domain)"))
		} else if err := checkTagValue("domain", *s.Domain); err != nil {
			fail(append(at, "domain"), err)
		}
		checkBlock(&s.fileBlock, at, PolicyAlways+"|"+PolicyOnlyIfMissingDomainBlock, fail)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.merge(&fc)
	return nil
}

var tomlLineErr = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*?)"\): (.*)$`)

func hasKeyPrefix(k, prefix toml.Key) bool {
	return len(k) > len(prefix) && slices.Equal(k[:len(prefix)], prefix)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkEnum checks v against the '|'-separated list of allowed values.
func checkEnum(v, allowed string) error {
	for _, a := range strings.Split(allowed, "|") {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("invalid value %q (want %s)", v, strings.ReplaceAll(strconvQuoteList(allowed), "|", " or "))
}

func strconvQuoteList(allowed string) string {
	parts := strings.Split(allowed, "|")
	for i, p := range parts {
		parts[i] = `"` + p + `"`
	}
	return strings.Join(parts, "|")
}

func checkCommon(exp *int64, hc, bc *string, headers []string, at toml.Key, fail func(toml.Key, error)) {
	if exp != nil && *exp < 0 {
		fail(append(slices.Clone(at), "expiration"), fmt.Errorf("negative value %d", *exp))
	}
	if hc != nil {
		if _, err := ParseCanonicalization(*hc); err != nil {
			fail(append(slices.Clone(at), "header_canonicalization"), err)
		}
	}
	if bc != nil {
		if _, err := ParseCanonicalization(*bc); err != nil {
			fail(append(slices.Clone(at), "body_canonicalization"), err)
		}
	}
	if headers != nil {
		if err := checkHeaderList(headers); err != nil {
			fail(append(slices.Clone(at), "headers"), err)
		}
	}
}

func checkBlock(b *fileBlock, at toml.Key, policies string, fail func(toml.Key, error)) {
	if b == nil {
		return
	}
	if b.Policy != nil {
		if err := checkEnum(*b.Policy, policies); err != nil {
			fail(append(slices.Clone(at), "policy"), err)
		}
	}
	if b.Algo != nil {
		if err := checkEnum(*b.Algo, AlgoSHA256+"|"+AlgoEd25519); err != nil {
			fail(append(slices.Clone(at), "algo"), err)
		}
	}
	if b.Selector != nil {
		if err := checkTagValue("selector", *b.Selector); err != nil {
			fail(append(slices.Clone(at), "selector"), err)
		}
	}
	if b.Filename != nil && *b.Filename == "" {
		fail(append(slices.Clone(at), "filename"), errors.New("empty file name"))
	}
	checkCommon(b.Expiration, b.HeaderCanonicalization, b.BodyCanonicalization, b.Headers, at, fail)
}

func checkHeaderList(headers []string) error {
	hasFrom := false
	for _, h := range headers {
		if err := checkHeaderName(h); err != nil {
			return err
		}
		hasFrom = hasFrom || strings.EqualFold(h, "from")
	}
	if !hasFrom {
		return errors.New("the header list must include From (RFC 6376 section 5.4)")
	}
	return nil
}

// checkDomainPattern accepts "example.com", "*.example.com" and "*".
func checkDomainPattern(p string) error {
	if p == "*" {
		return nil
	}
	rest := strings.TrimPrefix(p, "*.")
	if strings.Contains(rest, "*") {
		return fmt.Errorf("invalid domain pattern %q: '*' is only allowed as the whole first label (\"*.example.com\")", p)
	}
	if err := checkMessageDomain(normalizeDomain(rest)); err != nil {
		return fmt.Errorf("invalid domain pattern %q: %v", p, err)
	}
	return nil
}

func setString(dst *string, src *string) {
	if src != nil {
		*dst = *src
	}
}

func (c *Config) merge(fc *fileConfig) {
	if b := fc.Base; b != nil {
		setString(&c.Base.VaultMount, b.VaultMount)
		setString(&c.Base.VaultPathPrefix, b.VaultPathPrefix)
		setString(&c.Base.VaultKey, b.VaultKey)
		if b.AdditionalSignatures != nil {
			c.Base.AdditionalSignatures = b.AdditionalSignatures
		}
		setString(&c.Base.Policy, b.Policy)
		setString(&c.Base.Selector, b.Selector)
		if b.Expiration != nil {
			c.Base.Expiration = *b.Expiration
		}
		if b.Headers != nil {
			c.Base.Headers = b.Headers
		}
		setString(&c.Base.HeaderCanonicalization, b.HeaderCanonicalization)
		setString(&c.Base.BodyCanonicalization, b.BodyCanonicalization)
		if b.OverSign != nil {
			c.Base.OverSign = *b.OverSign
		}
	}
	if len(fc.Domain) > 0 && c.Domain == nil {
		c.Domain = make(map[string]DomainConfig)
	}
	for _, pattern := range sortedKeys(fc.Domain) {
		name := normalizeDomain(pattern)
		d := c.Domain[name]
		mergeBlock(&d, fc.Domain[pattern])
		c.Domain[name] = d
	}
	if len(fc.Signature) > 0 && c.Signature == nil {
		c.Signature = make(map[string]SignatureConfig)
	}
	for name, fs := range fc.Signature {
		if fs == nil {
			continue
		}
		s := c.Signature[name]
		setString(&s.Domain, fs.Domain)
		mergeBlock(&s.DomainConfig, &fs.fileBlock)
		c.Signature[name] = s
	}
}

func mergeBlock(d *DomainConfig, b *fileBlock) {
	if b == nil {
		return
	}
	setString(&d.Selector, b.Selector)
	if b.Headers != nil {
		d.Headers = b.Headers
	}
	setString(&d.Policy, b.Policy)
	setString(&d.Algo, b.Algo)
	if b.Expiration != nil {
		v := *b.Expiration
		d.Expiration = &v
	}
	setString(&d.Filename, b.Filename)
	setString(&d.HeaderCanonicalization, b.HeaderCanonicalization)
	setString(&d.BodyCanonicalization, b.BodyCanonicalization)
	if b.OverSign != nil {
		v := *b.OverSign
		d.OverSign = &v
	}
}

// LoadOptions configures LoadData and NewData.
type LoadOptions struct {
	// KeyDir replaces DefaultKeyDir as the directory of key files for
	// blocks without filename: KeyDir/DOMAIN/SELECTOR.key.
	KeyDir string
	// Keys caches the key files; nil means DefaultKeyCache.
	Keys *KeyCache
}

// Data is a loaded dkim_data configuration: it chooses and builds the
// signers for a message from its From header domain, the way KumoMTA's
// dkim_sign helper does. Data implements Signer (see Data.Sign) and is
// safe for concurrent use.
//
// Loading only parses and validates the configuration; key files are read
// when a domain is first signed for (and re-read when they change), so a
// missing key makes SignerFor and Sign fail for that domain rather than
// produce an unsigned message. Call Check at start-up to load every key
// the configuration names and report all problems at once.
type Data struct {
	cfg    Config
	files  []string
	keyDir string
	keys   *KeyCache

	exact    map[string]*domainEntry // exact domain -> block
	wildcard map[string]*domainEntry // "example.com" for "*.example.com"
	any      *domainEntry            // "*"

	mu      sync.Mutex
	signers map[signerKey]cachedSigner
}

type domainEntry struct {
	pattern string
	cfg     DomainConfig
}

// maxCachedSigners bounds the signer cache; wildcard blocks can otherwise
// make it grow with every distinct subdomain seen.
const maxCachedSigners = 4096

type signerKey struct {
	alg                    Algorithm
	domain, selector, file string
	headers                string
	hc, bc                 Canonicalization
	overSign               bool
	expiration             int64
}

type cachedSigner struct {
	keyID  uint64
	signer *KeySigner
}

// LoadData reads dkim_data.toml files with default options (keys under
// DefaultKeyDir). Later files override earlier ones key by key.
func LoadData(files ...string) (*Data, error) {
	return Load(LoadOptions{}, files...)
}

// Load reads and merges dkim_data.toml files and returns the validated
// configuration. Errors name the file and, where known, the line.
func Load(opts LoadOptions, files ...string) (*Data, error) {
	if len(files) == 0 {
		return nil, errors.New("dkim: no dkim_data files given")
	}
	var cfg Config
	for _, f := range files {
		if ext := strings.ToLower(filepath.Ext(f)); ext != ".toml" {
			return nil, fmt.Errorf("dkim: %s: only TOML dkim_data files are supported", f)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("dkim: reading dkim_data: %w", err)
		}
		if err := cfg.MergeTOML(f, data); err != nil {
			return nil, fmt.Errorf("dkim: %w", err)
		}
	}
	d, err := newData(cfg, opts, files)
	if err != nil {
		return nil, fmt.Errorf("dkim: %s: %w", strings.Join(files, ", "), err)
	}
	return d, nil
}

// NewData validates cfg and returns the Data for it.
func NewData(cfg Config, opts LoadOptions) (*Data, error) {
	d, err := newData(cfg, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("dkim: dkim_data: %w", err)
	}
	return d, nil
}

func newData(cfg Config, opts LoadOptions, files []string) (*Data, error) {
	d := &Data{
		files:    slices.Clone(files),
		keyDir:   opts.KeyDir,
		keys:     opts.Keys,
		exact:    map[string]*domainEntry{},
		wildcard: map[string]*domainEntry{},
		signers:  map[signerKey]cachedSigner{},
	}
	if d.keyDir == "" {
		d.keyDir = DefaultKeyDir
	}
	if d.keys == nil {
		d.keys = DefaultKeyCache
	}
	var errs []error
	b := cfg.Base
	if b.Policy != "" {
		if err := checkEnum(b.Policy, PolicyAlways); err != nil {
			errs = append(errs, fmt.Errorf("base.policy: %w", err))
		}
	}
	if b.Selector != "" {
		if err := checkTagValue("selector", b.Selector); err != nil {
			errs = append(errs, fmt.Errorf("base.selector: %w", err))
		}
	}
	if b.Expiration < 0 {
		errs = append(errs, fmt.Errorf("base.expiration: negative value %d", b.Expiration))
	}
	for _, c := range []struct{ key, v string }{
		{"header_canonicalization", b.HeaderCanonicalization},
		{"body_canonicalization", b.BodyCanonicalization},
	} {
		if _, err := ParseCanonicalization(c.v); err != nil {
			errs = append(errs, fmt.Errorf("base.%s: %w", c.key, err))
		}
	}
	if b.Headers != nil {
		if err := checkHeaderList(b.Headers); err != nil {
			errs = append(errs, fmt.Errorf("base.headers: %w", err))
		}
	}

	normDomains := map[string]DomainConfig{}
	for _, pattern := range sortedKeys(cfg.Domain) {
		blk := cfg.Domain[pattern]
		where := fmt.Sprintf("domain.%q", pattern)
		name := normalizeDomain(pattern)
		if err := checkDomainPattern(pattern); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		if err := checkDomainConfig(blk, PolicyAlways); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if _, dup := normDomains[name]; dup {
			errs = append(errs, fmt.Errorf("%s: duplicate domain block (names are case-insensitive)", where))
			continue
		}
		normDomains[name] = blk
		if blk.Selector == "" && b.Selector == "" {
			errs = append(errs, fmt.Errorf("%s: no selector, and no default selector in base", where))
		}
		e := &domainEntry{pattern: name, cfg: blk}
		switch {
		case name == "*":
			d.any = e
		case strings.HasPrefix(name, "*."):
			d.wildcard[name[2:]] = e
		default:
			d.exact[name] = e
		}
	}
	for _, name := range sortedKeys(cfg.Signature) {
		s := cfg.Signature[name]
		where := fmt.Sprintf("signature.%q", name)
		if err := checkTagValue("domain", s.Domain); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if err := checkDomainConfig(s.DomainConfig, PolicyAlways+"|"+PolicyOnlyIfMissingDomainBlock); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	for _, name := range b.AdditionalSignatures {
		s, ok := cfg.Signature[name]
		if !ok {
			errs = append(errs, fmt.Errorf("base.additional_signatures lists %q but no [signature.%q] block defines it", name, name))
			continue
		}
		if s.Selector == "" && b.Selector == "" {
			errs = append(errs, fmt.Errorf("signature.%q: no selector, and no default selector in base", name))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.Domain = normDomains
	d.cfg = cfg
	return d, nil
}

func checkDomainConfig(c DomainConfig, policies string) error {
	var errs []error
	if c.Policy != "" {
		if err := checkEnum(c.Policy, policies); err != nil {
			errs = append(errs, fmt.Errorf("policy: %w", err))
		}
	}
	if c.Algo != "" {
		if err := checkEnum(c.Algo, AlgoSHA256+"|"+AlgoEd25519); err != nil {
			errs = append(errs, fmt.Errorf("algo: %w", err))
		}
	}
	if c.Selector != "" {
		if err := checkTagValue("selector", c.Selector); err != nil {
			errs = append(errs, fmt.Errorf("selector: %w", err))
		}
	}
	if c.Expiration != nil && *c.Expiration < 0 {
		errs = append(errs, fmt.Errorf("expiration: negative value %d", *c.Expiration))
	}
	if _, err := ParseCanonicalization(c.HeaderCanonicalization); err != nil {
		errs = append(errs, fmt.Errorf("header_canonicalization: %w", err))
	}
	if _, err := ParseCanonicalization(c.BodyCanonicalization); err != nil {
		errs = append(errs, fmt.Errorf("body_canonicalization: %w", err))
	}
	if c.Headers != nil {
		if err := checkHeaderList(c.Headers); err != nil {
			errs = append(errs, fmt.Errorf("headers: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Config returns a copy of the merged configuration (domain names
// lower-cased).
func (d *Data) Config() Config {
	c := d.cfg
	c.Domain = make(map[string]DomainConfig, len(d.cfg.Domain))
	for k, v := range d.cfg.Domain {
		c.Domain[k] = v
	}
	c.Signature = make(map[string]SignatureConfig, len(d.cfg.Signature))
	for k, v := range d.cfg.Signature {
		c.Signature[k] = v
	}
	return c
}

// Files returns the files the configuration was loaded from.
func (d *Data) Files() []string { return slices.Clone(d.files) }

// KeyDir returns the directory used for default key paths.
func (d *Data) KeyDir() string { return d.keyDir }

// lookup returns the domain block for a normalized domain: an exact entry,
// else the most specific "*.suffix" entry, else "*".
func (d *Data) lookup(domain string) *domainEntry {
	if e, ok := d.exact[domain]; ok {
		return e
	}
	for rest := domain; ; {
		dot := strings.IndexByte(rest, '.')
		if dot < 0 {
			break
		}
		rest = rest[dot+1:]
		if e, ok := d.wildcard[rest]; ok {
			return e
		}
	}
	return d.any
}

// MatchDomain reports which [domain] block applies to fromDomain: its
// name as configured (lower-cased), or "" if none.
func (d *Data) MatchDomain(fromDomain string) string {
	if e := d.lookup(normalizeDomain(fromDomain)); e != nil {
		return e.pattern
	}
	return ""
}

// SignerFor returns the signers for a message whose From header domain is
// fromDomain, in the order KumoMTA applies them: the matching domain block
// (signing as fromDomain), then each of base.additional_signatures whose
// policy allows it. The result is empty (and signs nothing) when nothing
// applies.
//
// Errors — a missing, unreadable or invalid key file (named in the
// message), a Vault key source (ErrVaultUnsupported), an invalid domain
// (ErrInvalidFromHeader) — mean the message must not be sent unsigned.
func (d *Data) SignerFor(fromDomain string) (Multi, error) {
	domain := normalizeDomain(fromDomain)
	if err := checkMessageDomain(domain); err != nil {
		return nil, fmt.Errorf("dkim: From domain %q: %v: %w", fromDomain, err, ErrInvalidFromHeader)
	}
	var out Multi
	e := d.lookup(domain)
	if e != nil {
		s, err := d.signer(domain, e.cfg)
		if err != nil {
			return nil, fmt.Errorf("dkim: [domain.%q] for %s: %w", e.pattern, domain, err)
		}
		out = append(out, s)
	}
	for _, name := range d.cfg.Base.AdditionalSignatures {
		sc := d.cfg.Signature[name]
		if sc.Policy == PolicyOnlyIfMissingDomainBlock && e != nil {
			continue
		}
		s, err := d.signer(sc.Domain, sc.DomainConfig)
		if err != nil {
			return nil, fmt.Errorf("dkim: [signature.%q]: %w", name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// Sign implements Signer: it takes the domain from the message's From
// header (an error wrapping ErrNoFromHeader if there is none, as KumoMTA
// rejects such messages with 552 5.6.0) and applies SignerFor's signers.
func (d *Data) Sign(msg []byte) ([]byte, error) {
	domain, err := FromDomain(msg)
	if err != nil {
		return nil, err
	}
	m, err := d.SignerFor(domain)
	if err != nil {
		return nil, err
	}
	return m.Sign(msg)
}

// resolved is a block's effective settings for one signing domain.
type resolved struct {
	alg     Algorithm
	opts    Options // without the key
	keyFile string
	vault   string // vault path if Vault is configured
}

func (d *Data) resolve(signDomain string, c DomainConfig) (resolved, error) {
	b := d.cfg.Base
	var r resolved
	r.alg = RSASHA256
	if c.Algo == AlgoEd25519 {
		r.alg = Ed25519SHA256
	}
	o := Options{Domain: signDomain, Selector: c.Selector}
	if o.Selector == "" {
		o.Selector = b.Selector
	}
	if o.Selector == "" {
		return r, errors.New("no selector, and no default selector in base")
	}
	o.Headers = c.Headers
	if o.Headers == nil {
		o.Headers = b.Headers
	}
	exp := b.Expiration
	if c.Expiration != nil {
		exp = *c.Expiration
	}
	o.Expiration = time.Duration(exp) * time.Second
	hc, bc := c.HeaderCanonicalization, c.BodyCanonicalization
	if hc == "" {
		hc = b.HeaderCanonicalization
	}
	if bc == "" {
		bc = b.BodyCanonicalization
	}
	var err error
	if o.HeaderCanonicalization, err = ParseCanonicalization(hc); err != nil {
		return r, err
	}
	if o.BodyCanonicalization, err = ParseCanonicalization(bc); err != nil {
		return r, err
	}
	o.OverSign = b.OverSign
	if c.OverSign != nil {
		o.OverSign = *c.OverSign
	}
	r.opts = o
	if b.VaultMount != "" {
		r.vault = c.Filename
		if r.vault == "" {
			prefix := b.VaultPathPrefix
			if prefix == "" {
				prefix = "dkim"
			}
			r.vault = fmt.Sprintf("%s/%s/%s.key", prefix, signDomain, o.Selector)
		}
		return r, fmt.Errorf("key d=%s s=%s is configured in HashiCorp Vault (vault_mount %q, vault_path %q): %w",
			signDomain, o.Selector, b.VaultMount, r.vault, ErrVaultUnsupported)
	}
	r.keyFile = c.Filename
	if r.keyFile == "" {
		r.keyFile = filepath.Join(d.keyDir, signDomain, o.Selector+".key")
	}
	return r, nil
}

// signer returns the (cached) signer for a block and signing domain.
func (d *Data) signer(signDomain string, c DomainConfig) (*KeySigner, error) {
	r, err := d.resolve(signDomain, c)
	if err != nil {
		return nil, err
	}
	key, keyID, err := d.keys.load(r.keyFile)
	if err != nil {
		return nil, err
	}
	ck := signerKey{
		alg: r.alg, domain: signDomain, selector: r.opts.Selector, file: r.keyFile,
		headers: strings.Join(r.opts.Headers, "\n"), hc: r.opts.HeaderCanonicalization,
		bc: r.opts.BodyCanonicalization, overSign: r.opts.OverSign,
		expiration: int64(r.opts.Expiration / time.Second),
	}
	if r.opts.Headers == nil {
		ck.headers = "\x00default"
	}
	d.mu.Lock()
	cs, ok := d.signers[ck]
	d.mu.Unlock()
	if ok && cs.keyID == keyID {
		return cs.signer, nil
	}
	s, err := buildKeySigner(r.alg, r.opts, key, "key file "+r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("signer d=%s s=%s: %w", signDomain, r.opts.Selector, err)
	}
	d.mu.Lock()
	if len(d.signers) >= maxCachedSigners {
		clear(d.signers)
	}
	d.signers[ck] = cachedSigner{keyID: keyID, signer: s}
	d.mu.Unlock()
	return s, nil
}

// Check loads the key of every domain block and of every additional
// signature and builds their signers, returning all problems joined (nil
// if signing can work for every configured domain). For a wildcard block
// without filename the key depends on the actual subdomain, so only its
// settings are checked. Use it at start-up and in "mtakitd check".
func (d *Data) Check() error {
	var errs []error
	for _, pattern := range sortedKeys(d.cfg.Domain) {
		c := d.cfg.Domain[pattern]
		var err error
		if strings.HasPrefix(pattern, "*") && c.Filename == "" {
			_, err = d.resolve(pattern, c)
		} else {
			_, err = d.signer(pattern, c)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("[domain.%q]: %w", pattern, err))
		}
	}
	for _, name := range d.cfg.Base.AdditionalSignatures {
		sc := d.cfg.Signature[name]
		if _, err := d.signer(sc.Domain, sc.DomainConfig); err != nil {
			errs = append(errs, fmt.Errorf("[signature.%q]: %w", name, err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	src := "dkim_data"
	if len(d.files) > 0 {
		src = strings.Join(d.files, ", ")
	}
	return fmt.Errorf("dkim: %s: %w", src, errors.Join(errs...))
}

// Warnings returns observations about the configuration that are not
// errors, such as signature blocks that base.additional_signatures does
// not reference (KumoMTA's validation reports these too).
func (d *Data) Warnings() []string {
	var w []string
	for _, name := range sortedKeys(d.cfg.Signature) {
		if !slices.Contains(d.cfg.Base.AdditionalSignatures, name) {
			w = append(w, fmt.Sprintf("[signature.%q] is not referenced by base.additional_signatures and will not be used", name))
		}
	}
	for _, pattern := range sortedKeys(d.cfg.Domain) {
		if strings.HasPrefix(pattern, "*") && d.cfg.Domain[pattern].Filename == "" && d.cfg.Base.VaultMount == "" {
			w = append(w, fmt.Sprintf("[domain.%q] has no filename: each matching domain needs its own key at %s", pattern,
				filepath.Join(d.keyDir, "<domain>", "<selector>.key")))
		}
	}
	return w
}
