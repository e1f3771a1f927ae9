package shaping

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// A param is one make_egress_path key: how to check its TOML value and
// how to store the checked value in a PathConfig.
type param struct {
	// check validates a TOML value and returns the value to store.
	check func(v any) (any, error)
	// apply stores a checked value; nil stores it in PathConfig.Other.
	apply func(c *PathConfig, v any)
	// mergeable keys hold maps that merge key by key across blocks
	// instead of replacing each other (additional_* in KumoMTA).
	mergeable bool
}

// params maps every key that KumoMTA's EgressPathConfig accepts.
var params = map[string]param{}

func init() {
	dur := func(set func(*PathConfig, time.Duration)) param {
		return param{check: func(v any) (any, error) { return durationValue(v) },
			apply: func(c *PathConfig, v any) { set(c, v.(time.Duration)) }}
	}
	count := func(max int64, set func(*PathConfig, int)) param {
		return param{check: func(v any) (any, error) { return intValue(v, 0, max) },
			apply: func(c *PathConfig, v any) { set(c, v.(int)) }}
	}
	throttle := func(set func(*PathConfig, string)) param {
		return param{check: throttleValue, apply: func(c *PathConfig, v any) { set(c, v.(string)) }}
	}
	other := func(check func(any) (any, error)) param { return param{check: check} }
	boolean := other(boolValue)
	optString := other(stringValue)
	enum := func(values ...string) param { return other(enumValue(values...)) }

	p := params
	p["connection_limit"] = param{check: limitValue, apply: func(c *PathConfig, v any) {
		l := v.(LimitSpec)
		c.ConnectionLimit, c.ConnectionLimitLocal = l.Limit, l.Local
	}}
	p["additional_connection_limits"] = param{check: limitMapValue, mergeable: true,
		apply: func(c *PathConfig, v any) { c.AdditionalConnectionLimits = v.(map[string]LimitSpec) }}
	p["enable_tls"] = param{check: tlsValue, apply: func(c *PathConfig, v any) { c.EnableTLS = v.(TLSMode) }}
	flag := func(set func(*PathConfig, bool)) param {
		return param{check: boolValue, apply: func(c *PathConfig, v any) { set(c, v.(bool)) }}
	}
	keySource := func(set func(*PathConfig, *KeySource)) param {
		return param{check: keySourceValue, apply: func(c *PathConfig, v any) { set(c, keySourceOf(v)) }}
	}
	str := func(check func(any) (any, error), set func(*PathConfig, string)) param {
		return param{check: check, apply: func(c *PathConfig, v any) { set(c, v.(string)) }}
	}
	p["enable_mta_sts"] = flag(func(c *PathConfig, b bool) { c.EnableMTASTS = b })
	p["enable_dane"] = flag(func(c *PathConfig, b bool) { c.EnableDANE = b })
	p["enable_pipelining"] = boolean
	p["enable_rset"] = boolean
	p["tls_prefer_openssl"] = boolean
	p["tls_certificate"] = keySource(func(c *PathConfig, k *KeySource) { c.TLSCertificate = k })
	p["tls_private_key"] = keySource(func(c *PathConfig, k *KeySource) { c.TLSPrivateKey = k })
	p["openssl_cipher_list"] = str(stringValue, func(c *PathConfig, s string) { c.OpenSSLCipherList = s })
	p["openssl_cipher_suites"] = optString
	p["openssl_options"] = str(opensslOptionsValue, func(c *PathConfig, s string) { c.OpenSSLOptions = s })
	p["rustls_cipher_suites"] = param{check: stringListValue, apply: func(c *PathConfig, v any) {
		list := v.([]any)
		out := make([]string, len(list))
		for i, e := range list {
			out[i] = e.(string)
		}
		c.RustlsCipherSuites = out
	}}
	p["connect_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.ConnectTimeout = d })
	p["banner_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.BannerTimeout = d })
	p["ehlo_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.EHLOTimeout = d })
	p["mail_from_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.MailFromTimeout = d })
	p["rcpt_to_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.RcptToTimeout = d })
	p["data_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.DataTimeout = d })
	p["data_dot_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.DataDotTimeout = d })
	p["rset_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.RsetTimeout = d })
	p["idle_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.IdleTimeout = d })
	p["starttls_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.StartTLSTimeout = d })
	p["auth_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.AuthTimeout = d })
	p["system_shutdown_timeout"] = dur(func(c *PathConfig, d time.Duration) { c.SystemShutdownTimeout = d })
	p["max_ready"] = count(1<<62, func(c *PathConfig, n int) { c.MaxReady = n })
	p["consecutive_connection_failures_before_delay"] = count(1<<62, func(c *PathConfig, n int) {
		c.ConsecutiveConnectionFailuresBeforeDelay = n
	})
	p["smtp_port"] = count(65535, func(c *PathConfig, n int) { c.SMTPPort = n })
	p["smtp_auth_plain_username"] = str(stringValue, func(c *PathConfig, s string) { c.SMTPAuthPlainUsername = s })
	p["smtp_auth_plain_password"] = keySource(func(c *PathConfig, k *KeySource) { c.SMTPAuthPlainPassword = k })
	p["allow_smtp_auth_plain_without_tls"] = flag(func(c *PathConfig, b bool) { c.AllowSMTPAuthPlainWithoutTLS = b })
	p["allow_smtp_auth_plain_without_valid_certificate"] = flag(func(c *PathConfig, b bool) {
		c.AllowSMTPAuthPlainWithoutValidCertificate = b
	})
	p["max_message_rate"] = throttle(func(c *PathConfig, s string) { c.MaxMessageRate = s })
	p["additional_message_rate_throttles"] = param{check: throttleMapValue, mergeable: true,
		apply: func(c *PathConfig, v any) { c.AdditionalMessageRateThrottles = v.(map[string]string) }}
	p["source_selection_rate"] = throttle(func(c *PathConfig, s string) { c.SourceSelectionRate = s })
	p["additional_source_selection_rates"] = param{check: throttleMapValue, mergeable: true,
		apply: func(c *PathConfig, v any) { c.AdditionalSourceSelectionRates = v.(map[string]string) }}
	p["max_connection_rate"] = throttle(func(c *PathConfig, s string) { c.MaxConnectionRate = s })
	p["max_deliveries_per_connection"] = count(1<<62, func(c *PathConfig, n int) { c.MaxDeliveriesPerConnection = n })
	p["max_recipients_per_batch"] = count(1<<62, func(c *PathConfig, n int) { c.MaxRecipientsPerBatch = n })
	p["prohibited_hosts"] = param{check: cidrSetValue, apply: func(c *PathConfig, v any) { c.ProhibitedHosts = v.([]netip.Prefix) }}
	p["skip_hosts"] = param{check: cidrSetValue, apply: func(c *PathConfig, v any) { c.SkipHosts = v.([]netip.Prefix) }}
	p["ip_lookup_strategy"] = enum("Ipv4Only", "Ipv6Only", "Ipv4AndIpv6", "Ipv6ThenIpv4", "Ipv4ThenIpv6")
	p["ehlo_domain"] = param{check: stringValue, apply: func(c *PathConfig, v any) { c.EHLODomain = v.(string) }}
	p["aggressive_connection_opening"] = boolean
	p["refresh_interval"] = other(func(v any) (any, error) {
		if _, err := durationValue(v); err != nil {
			return nil, err
		}
		return v, nil
	})
	p["refresh_strategy"] = enum("Ttl", "Epoch")
	p["dispatcher_wakeup_strategy"] = enum("Aggressive", "Relaxed")
	p["maintainer_wakeup_strategy"] = enum("Aggressive", "Relaxed")
	p["provider_name"] = param{check: stringValue, apply: func(c *PathConfig, v any) { c.ProviderName = v.(string) }}
	p["remember_broken_tls"] = dur(func(c *PathConfig, d time.Duration) { c.RememberBrokenTLS = d })
	p["opportunistic_tls_reconnect_on_failed_handshake"] = flag(func(c *PathConfig, b bool) {
		c.OpportunisticTLSReconnectOnFailedHandshake = b
	})
	p["use_lmtp"] = boolean
	p["reconnect_strategy"] = enum("TerminateSession", "ReconnectSameHost", "ConnectNextHost")
	p["readyq_pool_name"] = optString
	p["low_memory_reduction_policy"] = enum("ShrinkDataAndMeta", "ShrinkData", "NoShrink")
	p["no_memory_reduction_policy"] = enum("ShrinkDataAndMeta", "ShrinkData", "NoShrink")
	p["try_next_host_on_transport_error"] = boolean
	p["ignore_8bit_checks"] = boolean
	p["dispatcher_progress_watchdog_timeout"] = other(func(v any) (any, error) {
		if _, err := durationValue(v); err != nil {
			return nil, err
		}
		return v, nil
	})
}

// paramSet is an accumulated set of checked key values.
type paramSet map[string]any

// mergeFrom merges src over p as KumoMTA's toml_table_merge_from does:
// keys replace earlier values, except the additional_* maps, which merge
// entry by entry.
func (p paramSet) mergeFrom(src paramSet) {
	for k, v := range src {
		if params[k].mergeable {
			if old, ok := p[k]; ok {
				p[k] = mergeMaps(old, v)
				continue
			}
		}
		p[k] = v
	}
}

func mergeMaps(old, v any) any {
	switch o := old.(type) {
	case map[string]LimitSpec:
		m := maps.Clone(o)
		maps.Copy(m, v.(map[string]LimitSpec))
		return m
	case map[string]string:
		m := maps.Clone(o)
		maps.Copy(m, v.(map[string]string))
		return m
	}
	return v
}

func (p paramSet) clone() paramSet { return maps.Clone(p) }

// apply writes the values of p over c.
func (p paramSet) apply(c *PathConfig) {
	for k, v := range p {
		if a := params[k].apply; a != nil {
			a(c, v)
			continue
		}
		if c.Other == nil {
			c.Other = make(map[string]any)
		}
		c.Other[k] = v
	}
}

// checkParam validates one make_egress_path key and value.
func checkParam(key string, v any) (any, error) {
	p, ok := params[key]
	if !ok {
		return nil, fmt.Errorf("unknown key %s (not a make_egress_path option)", key)
	}
	return p.check(v)
}

func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("a %T", v)
}

func intValue(v any, min, max int64) (any, error) {
	n, ok := v.(int64)
	if !ok {
		return nil, fmt.Errorf("want an integer, got %s", tomlTypeName(v))
	}
	if n < min || n > max {
		return nil, fmt.Errorf("%d out of range [%d, %d]", n, min, max)
	}
	return int(n), nil
}

func boolValue(v any) (any, error) {
	if _, ok := v.(bool); !ok {
		return nil, fmt.Errorf("want true or false, got %s", tomlTypeName(v))
	}
	return v, nil
}

func stringValue(v any) (any, error) {
	if _, ok := v.(string); !ok {
		return nil, fmt.Errorf("want a string, got %s", tomlTypeName(v))
	}
	return v, nil
}

func enumValue(values ...string) func(any) (any, error) {
	return func(v any) (any, error) {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want a string, got %s", tomlTypeName(v))
		}
		for _, a := range values {
			if s == a {
				return s, nil
			}
		}
		return nil, fmt.Errorf("invalid value %q (want one of %s)", s, strings.Join(values, ", "))
	}
}

func tlsValue(v any) (any, error) {
	s, err := enumValue(string(Opportunistic), string(OpportunisticInsecure), string(Required),
		string(RequiredInsecure), string(Disabled))(v)
	if err != nil {
		return nil, err
	}
	return TLSMode(s.(string)), nil
}

func limitValue(v any) (any, error) {
	switch x := v.(type) {
	case int64:
		if x < 1 {
			return nil, errors.New("limit must be 1 or larger")
		}
		if x > 1<<31 {
			return nil, fmt.Errorf("limit %d too large", x)
		}
		return LimitSpec{Limit: int(x)}, nil
	case string:
		return ParseLimit(x)
	}
	return nil, fmt.Errorf("want an integer or a string such as \"local:5\", got %s", tomlTypeName(v))
}

func throttleValue(v any) (any, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("want a throttle string such as \"100/s\", got %s", tomlTypeName(v))
	}
	if _, err := ParseThrottle(s); err != nil {
		return nil, err
	}
	return s, nil
}

func limitMapValue(v any) (any, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want a table of name = limit, got %s", tomlTypeName(v))
	}
	out := make(map[string]LimitSpec, len(t))
	for _, k := range sortedKeys(t) {
		l, err := limitValue(t[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = l.(LimitSpec)
	}
	return out, nil
}

func throttleMapValue(v any) (any, error) {
	t, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want a table of name = \"throttle\", got %s", tomlTypeName(v))
	}
	out := make(map[string]string, len(t))
	for _, k := range sortedKeys(t) {
		s, err := throttleValue(t[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = s.(string)
	}
	return out, nil
}

func stringListValue(v any) (any, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want an array of strings, got %s", tomlTypeName(v))
	}
	for i, e := range list {
		if _, ok := e.(string); !ok {
			return nil, fmt.Errorf("element %d: want a string, got %s", i, tomlTypeName(e))
		}
	}
	return v, nil
}

func cidrSetValue(v any) (any, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("want an array of addresses or CIDR blocks, got %s", tomlTypeName(v))
	}
	out := make([]netip.Prefix, 0, len(list))
	var problems []string
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			problems = append(problems, fmt.Sprintf("want a string, got %s", tomlTypeName(e)))
			continue
		}
		p, err := parseCIDR(s)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", s, err))
			continue
		}
		out = append(out, p)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, ", "))
	}
	return out, nil
}

// parseCIDR accepts "10.0.0.0/8", "::1" and "10.0.0.1" (a host).
func parseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// keySourceValue accepts KumoMTA's KeySource: a file name, or a table
// {key_data=...}, {vault_mount=..., vault_path=...[, vault_address,
// vault_token, vault_key]} or {event_name=..., event_args=[...]}.
func keySourceValue(v any) (any, error) {
	switch x := v.(type) {
	case string:
		return v, nil
	case map[string]any:
		allowed := map[string]bool{}
		switch {
		case x["key_data"] != nil:
			allowed["key_data"] = true
		case x["vault_mount"] != nil || x["vault_path"] != nil:
			for _, k := range []string{"vault_address", "vault_token", "vault_mount", "vault_path", "vault_key"} {
				allowed[k] = true
			}
			if x["vault_mount"] == nil || x["vault_path"] == nil {
				return nil, errors.New("a vault key source needs vault_mount and vault_path")
			}
		case x["event_name"] != nil:
			allowed["event_name"], allowed["event_args"] = true, true
			if _, ok := x["event_args"].([]any); !ok {
				return nil, errors.New("an event key source needs event_args, an array")
			}
		default:
			return nil, errors.New("want a file name, {key_data=...}, {vault_mount=..., vault_path=...} or {event_name=..., event_args=[...]}")
		}
		for _, k := range sortedKeys(x) {
			if !allowed[k] {
				return nil, fmt.Errorf("unknown key %s in key source", k)
			}
			if k != "event_args" {
				if _, ok := x[k].(string); !ok {
					return nil, fmt.Errorf("%s: want a string, got %s", k, tomlTypeName(x[k]))
				}
			}
		}
		return v, nil
	}
	return nil, fmt.Errorf("want a file name or a key source table, got %s", tomlTypeName(v))
}

// opensslOptions are the SslOptions names of the openssl crate.
var opensslOptions = []string{
	"ALL", "ALLOW_NO_DHE_KEX", "ALLOW_UNSAFE_LEGACY_RENEGOTIATION", "CIPHER_SERVER_PREFERENCE",
	"CISCO_ANYCONNECT", "COOKIE_EXCHANGE", "CRYPTOPRO_TLSEXT_BUG", "DONT_INSERT_EMPTY_FRAGMENTS",
	"ENABLE_MIDDLEBOX_COMPAT", "LEGACY_SERVER_CONNECT", "NO_COMPRESSION", "NO_DTLSV1", "NO_DTLSV1_2",
	"NO_QUERY_MTU", "NO_RENEGOTIATION", "NO_SESSION_RESUMPTION_ON_RENEGOTIATION", "NO_SSLV2",
	"NO_SSLV3", "NO_TICKET", "NO_TLSV1", "NO_TLSV1_1", "NO_TLSV1_2", "NO_TLSV1_3",
	"PRIORITIZE_CHACHA", "SINGLE_DH_USE", "SINGLE_ECDH_USE", "TLS_ROLLBACK_BUG",
}

func opensslOptionsValue(v any) (any, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("want a string of option names joined by |, got %s", tomlTypeName(v))
	}
	for _, o := range strings.Split(s, "|") {
		if !contains(opensslOptions, o) {
			return nil, fmt.Errorf("%q is not a valid SslOption name (want names such as NO_TLSV1 joined by |)", o)
		}
	}
	return v, nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// formatValue writes a SetConfig value the way it reads in TOML, without
// quotes for strings: 1, 1/minute, true.
func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return fmt.Sprint(v)
}
