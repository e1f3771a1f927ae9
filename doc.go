// Package mtakit is an embeddable mail transfer agent for Go programs,
// compatible with KumoMTA's configuration surface.
//
// A program builds an [github.com/mtakit/mtakit/mta.Server] from pluggable
// parts and starts its listeners:
//
//   - spool: where accepted mail is kept until it leaves (badger on disk by
//     default, or any [github.com/mtakit/mtakit/spool.Spool]);
//   - listener: ESMTP reception, relay rules and listener domains;
//   - dkim: DKIM signers and KumoMTA's dkim_data.toml;
//   - shaping: per-destination egress path configuration;
//   - egress: egress sources, MX resolution and SMTP delivery;
//   - mta/logs: KumoMTA-format JSON log records in zstd segments;
//   - luapolicy: the adapter that runs a KumoMTA-style init.lua.
//
// The bundled binary examples/mtakitd runs a complete MTA with a default
// policy; examples/embed shows a server built in a few lines of Go.
//
// Guarantees: a message is acknowledged (SMTP 250) only after it is on
// stable storage, and every accepted message is logged when it is
// received and again when its fate is decided.
package mtakit
