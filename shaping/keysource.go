package shaping

import (
	"errors"
	"fmt"
	"os"
)

// KeySource is KumoMTA's KeySource: where a secret (a password, a private
// key, a certificate) comes from. Exactly one form is set: File (a file
// name, the plain string form), KeyData ({key_data = "..."}), a HashiCorp
// Vault secret (VaultMount and VaultPath, with optional VaultAddress,
// VaultToken and VaultKey) or a Lua event (EventName, EventArgs).
//
// mtakit reads File and KeyData; the Vault and event forms are accepted
// by the shaping.toml loader (so that KumoMTA files load) but Get refuses
// them, which fails the delivery attempt that needs the secret.
type KeySource struct {
	File                                                      string
	KeyData                                                   string
	HasData                                                   bool // KeyData was given (it may be empty)
	VaultMount, VaultPath, VaultAddress, VaultToken, VaultKey string
	EventName                                                 string
	EventArgs                                                 []any
}

// ErrKeySourceUnsupported is wrapped by Get for the Vault and event forms.
var ErrKeySourceUnsupported = errors.New("key source form not supported by mtakit")

// Get returns the secret: the file's contents or the inline data.
func (k *KeySource) Get() ([]byte, error) {
	switch {
	case k == nil:
		return nil, errors.New("no key source")
	case k.HasData:
		return []byte(k.KeyData), nil
	case k.File != "":
		b, err := os.ReadFile(k.File)
		if err != nil {
			return nil, fmt.Errorf("key source: %w", err)
		}
		return b, nil
	case k.VaultPath != "":
		return nil, fmt.Errorf("vault %s/%s: %w", k.VaultMount, k.VaultPath, ErrKeySourceUnsupported)
	case k.EventName != "":
		return nil, fmt.Errorf("event %s: %w", k.EventName, ErrKeySourceUnsupported)
	}
	return nil, errors.New("empty key source")
}

// String describes the source without revealing inline data.
func (k *KeySource) String() string {
	switch {
	case k == nil:
		return "<none>"
	case k.HasData:
		return "{key_data=<redacted>}"
	case k.File != "":
		return k.File
	case k.VaultPath != "":
		return "{vault_mount=" + k.VaultMount + ", vault_path=" + k.VaultPath + "}"
	case k.EventName != "":
		return "{event_name=" + k.EventName + "}"
	}
	return "{}"
}

// keySourceOf builds a KeySource from a value checked by keySourceValue.
func keySourceOf(v any) *KeySource {
	switch x := v.(type) {
	case string:
		return &KeySource{File: x}
	case map[string]any:
		str := func(k string) string { s, _ := x[k].(string); return s }
		ks := &KeySource{
			VaultMount: str("vault_mount"), VaultPath: str("vault_path"), VaultAddress: str("vault_address"),
			VaultToken: str("vault_token"), VaultKey: str("vault_key"), EventName: str("event_name"),
		}
		if d, ok := x["key_data"].(string); ok {
			ks.KeyData, ks.HasData = d, true
		}
		ks.EventArgs, _ = x["event_args"].([]any)
		return ks
	}
	return nil
}
