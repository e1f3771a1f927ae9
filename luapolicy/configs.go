package luapolicy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/mtakit/mtakit/egress"
	"github.com/mtakit/mtakit/listener"
	"github.com/mtakit/mtakit/mta"
	"github.com/mtakit/mtakit/mta/bounce"
	"github.com/mtakit/mtakit/shaping"
)

// defaultTTL is KumoMTA's default ttl / refresh_interval of the get_*
// lookups (queue config refresh_interval 1m, egress path
// refresh_interval 60s, source and pool ttl 60s).
const defaultTTL = time.Minute

// nowFunc is the clock of the memo caches (replaced in tests).
var nowFunc = time.Now

// queueConfigValue is a kumo.make_queue_config result.
type queueConfigValue struct {
	cfg     mta.QueueConfig
	refresh time.Duration
}

// pathValue is a kumo.make_egress_path result.
type pathValue struct {
	cfg     shaping.PathConfig
	refresh time.Duration
}

// sourceValue is a kumo.make_egress_source result.
type sourceValue struct {
	src *egress.Source
	ttl time.Duration
}

// poolValue is a kumo.make_egress_pool result.
type poolValue struct {
	name    string
	entries []poolEntry
	ttl     time.Duration
}

type poolEntry struct {
	name   string
	weight int
}

// keySource reads a KumoMTA KeySource: a file name, { key_data = "..." }
// or { vault_mount = ..., vault_path = ... } (not supported).
func keySource(v any) (path string, data []byte, err error) {
	switch v := v.(type) {
	case string:
		return v, nil, nil
	case map[string]any:
		f := newFields("key", v)
		var s string
		if f.str("key_data", &s) {
			data = []byte(s)
		}
		var vault string
		f.str("vault_mount", &vault)
		f.str("vault_path", &vault)
		f.str("vault_address", &vault)
		f.str("vault_token", &vault)
		f.str("vault_key", &vault)
		if vault != "" {
			return "", nil, fmt.Errorf("HashiCorp Vault key sources are not supported by mtakit; use a file name or { key_data = ... }")
		}
		if err := f.done(); err != nil {
			return "", nil, err
		}
		if data == nil {
			return "", nil, fmt.Errorf("want a file name or { key_data = \"...\" }")
		}
		return "", data, nil
	}
	return "", nil, fmt.Errorf("want a file name or { key_data = \"...\" }, got %s", typeName(v))
}

func (f *fields) prefixes(key string, dst *[]netip.Prefix) bool {
	var list []string
	if !f.strings(key, &list) {
		return false
	}
	p, err := listener.ParsePrefixes(list)
	if err != nil {
		f.fail(key, "%v", err)
		return false
	}
	*dst = p
	return true
}

func decodeListenerDomain(f *fields) *listener.ListenerDomain {
	d := &listener.ListenerDomain{}
	f.boolean("relay_to", &d.RelayTo)
	f.prefixes("relay_from", &d.RelayFrom)
	for key, dst := range map[string]*listener.Disposition{"log_oob": &d.LogOOB, "log_arf": &d.LogARF} {
		v, ok := f.get(key)
		if !ok {
			continue
		}
		var s string
		switch v := v.(type) {
		case bool:
			s = strconv.FormatBool(v)
		case string:
			s = v
		default:
			f.fail(key, "expected true, false, \"Ignore\", \"LogThenDrop\" or \"LogThenRelay\", got %s", typeName(v))
			continue
		}
		disp, err := listener.ParseDisposition(s)
		if err != nil {
			f.fail(key, "%v", err)
			continue
		}
		*dst = disp
	}
	f.ignore("ttl")
	return d
}

func decodeEgressPool(f *fields) *poolValue {
	pv := &poolValue{ttl: defaultTTL}
	if !f.str("name", &pv.name) {
		f.fail("name", "required")
	}
	f.duration("ttl", &pv.ttl)
	if v, ok := f.get("entries"); ok {
		list, isList := v.([]any)
		if m, isMap := v.(map[string]any); isMap && len(m) == 0 {
			isList = true
		}
		if !isList {
			f.fail("entries", "expected a list of { name = SOURCE, weight = N }")
		}
		for i, e := range list {
			ef := newFields(fmt.Sprintf("%s entries[%d]", f.what, i+1), e)
			pe := poolEntry{weight: 1}
			if !ef.str("name", &pe.name) {
				ef.fail("name", "required")
			}
			ef.integer("weight", &pe.weight)
			if pe.weight < 0 {
				ef.fail("weight", "must not be negative")
			}
			if err := ef.done(); err != nil {
				f.errs = append(f.errs, err)
				continue
			}
			pv.entries = append(pv.entries, pe)
		}
	}
	return pv
}

// --- kumo.* functions that build values ---

func (s *state) makeListenerDomain(L *lua.LState) int {
	f := newFields("kumo.make_listener_domain", s.table(1))
	d := decodeListenerDomain(f)
	if err := f.done(); err != nil {
		s.fail(err)
	}
	L.Push(toLua(L, d))
	return 1
}

func (s *state) makeEgressPool(L *lua.LState) int {
	f := newFields("kumo.make_egress_pool", s.table(1))
	v := decodeEgressPool(f)
	if err := f.done(); err != nil {
		s.fail(err)
	}
	L.Push(toLua(L, v))
	return 1
}

// warnOnce warns about ignored parameters once per function and key set.
func (p *Policy) warnOnce(fn string, keys []string) {
	if len(keys) == 0 {
		return
	}
	key := fn + ": " + strings.Join(keys, ", ")
	p.mu.Lock()
	if p.warned == nil {
		p.warned = map[string]bool{}
	}
	seen := p.warned[key]
	p.warned[key] = true
	p.mu.Unlock()
	if !seen {
		p.warn(fmt.Sprintf("%s: mtakit accepts and ignores %s", fn, strings.Join(keys, ", ")))
	}
}

// --- configuration made by the init event ---

func (s *state) defineSpool(L *lua.LState) int {
	f := newFields("kumo.define_spool", s.table(1))
	var sc SpoolConfig
	sc.Kind = "LocalDisk"
	if !f.enum("name", &sc.Name, "data", "meta") {
		if _, ok := f.m["name"]; !ok {
			f.fail("name", "required (\"data\" or \"meta\")")
		}
	}
	if !f.str("path", &sc.Path) {
		f.fail("path", "required")
	}
	f.enum("kind", &sc.Kind, "LocalDisk", "RocksDB")
	f.boolean("flush", &sc.Flush)
	ignored := f.ignore("rocks_params", "min_free_space", "min_free_inodes")
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	s.warnIgnored("kumo.define_spool", ignored)
	if s.primary {
		s.p.mu.Lock()
		for _, old := range s.p.spools {
			if old.Name == sc.Name {
				s.p.mu.Unlock()
				s.fail(fmt.Errorf("kumo.define_spool: spool %q is already defined", sc.Name))
				return 0
			}
		}
		s.p.spools = append(s.p.spools, sc)
		s.p.mu.Unlock()
	}
	return 0
}

func (s *state) configureLocalLogs(L *lua.LState) int {
	f := newFields("kumo.configure_local_logs", s.table(1))
	lc := &LogConfig{}
	if !f.str("log_dir", &lc.Local.LogDir) {
		f.fail("log_dir", "required")
	}
	f.size("max_file_size", &lc.Local.MaxFileSize)
	f.integer("back_pressure", &lc.Local.BackPressure)
	f.integer("compression_level", &lc.Local.CompressionLevel)
	f.duration("max_segment_duration", &lc.Local.MaxSegmentDuration)
	// mtakit extension: Reception records fsynced before the 250
	// (logs.LocalConfig.SyncReception).
	f.boolean("sync_reception", &lc.Local.SyncReception)
	f.strings("headers", &lc.Headers)
	f.strings("meta", &lc.Meta)
	if v, ok := f.get("per_record"); ok {
		if m, isMap := v.(map[string]any); !isMap || len(m) > 0 {
			f.fail("per_record", "per-record log settings are not supported by mtakit")
		}
	}
	if _, ok := f.get("filter_event"); ok {
		f.fail("filter_event", "log filtering events are not supported by mtakit")
	}
	ignored := f.ignore("min_free_space", "min_free_inodes")
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	s.warnIgnored("kumo.configure_local_logs", ignored)
	lc.Local.Logger = s.p.log
	if s.primary {
		s.p.mu.Lock()
		s.p.logCfg = lc
		s.p.mu.Unlock()
	}
	return 0
}

// kumoShareDir is where KumoMTA installs its bundled data files.
const kumoShareDir = "/opt/kumomta/share/"

func (s *state) configureBounceClassifier(L *lua.LState) int {
	f := newFields("kumo.configure_bounce_classifier", s.table(1))
	var files []string
	f.strings("files", &files)
	ignored := f.ignore("uncategorized_cache_capacity", "match_cache_capacity")
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	s.warnIgnored("kumo.configure_bounce_classifier", ignored)
	if !s.primary {
		return 0
	}
	b := bounce.NewBuilder()
	for _, file := range files {
		if _, err := os.Stat(file); err != nil && strings.HasPrefix(file, kumoShareDir) {
			// KumoMTA's bundled rules are not installed: use mtakit's
			// built-in rules in their place.
			s.p.warn(fmt.Sprintf("%s kumo.configure_bounce_classifier: %s is not installed; using mtakit's built-in bounce rules in its place", s.where(), file))
			b.AddDefaults()
			continue
		}
		if err := b.AddFile(file); err != nil {
			s.fail(fmt.Errorf("kumo.configure_bounce_classifier: %w", err))
			return 0
		}
	}
	c := b.Build()
	s.p.mu.Lock()
	s.p.classifier = c
	s.p.mu.Unlock()
	return 0
}

func (s *state) startESMTPListener(L *lua.LState) int {
	f := newFields("kumo.start_esmtp_listener", s.table(1))
	var c listener.Config
	c.Addr = "127.0.0.1:2025"
	f.str("listen", &c.Addr)
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		f.fail("listen", "want IP:PORT: %v", err)
	}
	f.str("hostname", &c.Hostname)
	f.str("banner", &c.Banner)
	if !f.prefixes("relay_hosts", &c.RelayHosts) {
		c.RelayHosts = listener.DefaultRelayHosts()
	} else if c.RelayHosts == nil {
		c.RelayHosts = []netip.Prefix{}
	}
	f.size("max_message_size", &c.MaxMessageSize)
	f.integer("max_recipients_per_message", &c.MaxRecipients)
	f.integer("max_messages_per_connection", &c.MaxMessagesPerConnection)
	f.integer("max_connections", &c.MaxConnections)
	f.duration("client_timeout", &c.ClientTimeout)
	f.duration("data_processing_timeout", &c.DataProcessingTimeout)
	f.integer("line_length_hard_limit", &c.LineLengthLimit)
	var bh string
	if f.enum("batch_handling", &bh, "BifurcateAlways", "BatchByDomain") {
		c.BatchHandling = listener.BatchHandling(bh)
	}
	if v, ok := f.get("trace_headers"); ok {
		tf := newFields("kumo.start_esmtp_listener trace_headers", v)
		recv, supp := true, true
		tf.boolean("received_header", &recv)
		tf.boolean("supplemental_header", &supp)
		tf.str("header_name", &c.TraceHeaders.HeaderName)
		tf.strings("include_meta_names", &c.TraceHeaders.IncludeMetaNames)
		c.TraceHeaders.DisableReceived, c.TraceHeaders.DisableSupplemental = !recv, !supp
		if err := tf.done(); err != nil {
			f.errs = append(f.errs, err)
		}
	}
	var ile string
	if f.enum("invalid_line_endings", &ile, "Deny", "Allow", "Fix") && ile != "Deny" {
		f.fail("invalid_line_endings", "mtakit always refuses bare CR/LF (\"Deny\"); %q is not supported", ile)
	}
	for _, k := range []string{"deferred_spool", "deferred_queue", "allow_xclient", "require_proxy_protocol"} {
		var b bool
		if f.boolean(k, &b) && b {
			f.fail(k, "not supported by mtakit (only false)")
		}
	}
	if v, ok := f.get("meta"); ok {
		m, isMap := v.(map[string]any)
		if !isMap {
			f.fail("meta", "want a table of meta names and values")
		}
		c.Meta = m
	}
	for _, k := range []string{"peer", "via", "tls_required_client_ca"} {
		if _, ok := f.get(k); ok {
			f.fail(k, "not supported by mtakit")
		}
	}
	var certV, keyV any
	certV, hasCert := f.get("tls_certificate")
	keyV, hasKey := f.get("tls_private_key")
	ignored := f.ignore("data_buffer_size")
	if hasCert != hasKey {
		f.fail("tls_certificate", "tls_certificate and tls_private_key must be given together")
	}
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	s.warnIgnored("kumo.start_esmtp_listener", ignored)
	if !s.primary {
		return 0
	}
	if hasCert && hasKey {
		cfg, err := loadKeyPair(certV, keyV)
		if err != nil {
			s.fail(fmt.Errorf("kumo.start_esmtp_listener: tls_certificate/tls_private_key: %w", err))
			return 0
		}
		c.TLS = cfg
	} else {
		// KumoMTA offers STARTTLS with a self-signed certificate for the
		// hostname when none is configured.
		host := c.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		certPEM, keyPEM, err := listener.SelfSignedPEM(host, "localhost", "127.0.0.1", "::1")
		if err == nil {
			if pair, err := tls.X509KeyPair(certPEM, keyPEM); err == nil {
				c.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
			}
		}
	}
	s.p.mu.Lock()
	s.p.esmtp = append(s.p.esmtp, ListenerConfig{Config: c, Line: s.where()})
	s.p.mu.Unlock()
	return 0
}

func loadKeyPair(certV, keyV any) (*tls.Config, error) {
	certPath, certData, err := keySource(certV)
	if err != nil {
		return nil, fmt.Errorf("tls_certificate: %w", err)
	}
	keyPath, keyData, err := keySource(keyV)
	if err != nil {
		return nil, fmt.Errorf("tls_private_key: %w", err)
	}
	if certData == nil {
		if certData, err = os.ReadFile(certPath); err != nil {
			return nil, err
		}
	}
	if keyData == nil {
		if keyData, err = os.ReadFile(keyPath); err != nil {
			return nil, err
		}
	}
	pair, err := tls.X509KeyPair(certData, keyData)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}, nil
}

func (s *state) startHTTPListener(L *lua.LState) int {
	f := newFields("kumo.start_http_listener", s.table(1))
	h := HTTPListener{Listen: "127.0.0.1:8000", TrustedHosts: []string{"127.0.0.1", "::1"}}
	f.str("listen", &h.Listen)
	if _, _, err := net.SplitHostPort(h.Listen); err != nil {
		f.fail("listen", "want IP:PORT: %v", err)
	}
	f.str("hostname", &h.Hostname)
	f.boolean("use_tls", &h.UseTLS)
	if v, ok := f.get("tls_certificate"); ok {
		p, _, err := keySource(v)
		if err != nil {
			f.fail("tls_certificate", "%v", err)
		}
		h.TLSCertificate = p
	}
	if v, ok := f.get("tls_private_key"); ok {
		p, _, err := keySource(v)
		if err != nil {
			f.fail("tls_private_key", "%v", err)
		}
		h.TLSPrivateKey = p
	}
	f.size("request_body_limit", &h.RequestBodyLimit)
	if f.strings("trusted_hosts", &h.TrustedHosts) {
		if _, err := listener.ParsePrefixes(h.TrustedHosts); err != nil {
			f.fail("trusted_hosts", "%v", err)
		}
	}
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	if s.primary {
		h.Line = s.where()
		s.p.mu.Lock()
		s.p.http = append(s.p.http, h)
		s.p.mu.Unlock()
	}
	return 0
}

func (s *state) configureResolver(L *lua.LState) int {
	f := newFields("kumo.dns.configure_resolver", s.table(1))
	var ro egress.ResolverOptions
	if v, ok := f.get("name_servers"); ok {
		list, isList := v.([]any)
		if !isList {
			f.fail("name_servers", "expected a list of \"IP:PORT\" or { socket_addr = \"IP:PORT\", protocol = \"Udp\" }")
		}
		for i, e := range list {
			switch e := e.(type) {
			case string:
				ro.Servers = append(ro.Servers, e)
			case map[string]any:
				ef := newFields(fmt.Sprintf("kumo.dns.configure_resolver name_servers[%d]", i+1), e)
				var addr, proto string
				if !ef.str("socket_addr", &addr) {
					ef.fail("socket_addr", "required")
				}
				ef.enum("protocol", &proto, "Udp", "Tcp")
				ef.ignore("trust_negative_responses", "bind_addr", "tls_dns_name")
				if err := ef.done(); err != nil {
					f.errs = append(f.errs, err)
					continue
				}
				ro.Servers = append(ro.Servers, addr)
			default:
				f.fail("name_servers", "entry %d: expected \"IP:PORT\" or a table", i+1)
			}
		}
	}
	for _, srv := range ro.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			f.fail("name_servers", "%q: want IP:PORT", srv)
		}
	}
	if v, ok := f.get("options"); ok {
		of := newFields("kumo.dns.configure_resolver options", v)
		of.duration("timeout", &ro.Timeout)
		of.integer("attempts", &ro.Attempts)
		of.integer("cache_size", &ro.CacheSize)
		of.duration("positive_min_ttl", &ro.MinTTL)
		of.duration("positive_max_ttl", &ro.MaxTTL)
		of.duration("negative_max_ttl", &ro.NegativeTTL)
		of.ignore("ndots", "edns0", "use_hosts_file", "preserve_intermediates", "validate", "ip_strategy",
			"negative_min_ttl", "num_concurrent_reqs", "rotate", "recursion_desired", "server_ordering_strategy",
			"try_tcp_on_error", "check_names", "authentic_data", "shuffle_dns_servers")
		if err := of.done(); err != nil {
			f.errs = append(f.errs, err)
		}
	}
	ignored := f.ignore("domain", "search")
	if err := f.done(); err != nil {
		s.fail(err)
		return 0
	}
	s.warnIgnored("kumo.dns.configure_resolver", ignored)
	if s.primary {
		ro.Logger = s.p.log
		s.p.mu.Lock()
		s.p.resolver = &ro
		s.p.mu.Unlock()
	}
	return 0
}
