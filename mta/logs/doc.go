// Package logs writes mtakit's structured event log: one JSON object per
// line for every reception, delivery, failure, bounce and expiration, with
// the field names and layout of KumoMTA's JsonLogRecord, so KumoMTA log
// tooling can read them. It provides the Record type, the Sink interface,
// a local segment-file sink compatible with KumoMTA's
// kumo.configure_local_logs (OpenLocal), readers for such directories
// (Scan, ScanFile, ReadDir, ListSegments), and the Multi and Discard
// sinks.
//
// # Records
//
// A Record encodes (through its MarshalJSON and in the sinks) exactly as
// KumoMTA serializes JsonLogRecord (crates/kumo-log-types/src/lib.rs):
// same names, same order, null for absent optional values, tls_*,
// provider_name and session_id omitted when empty, recipient a string
// for one address and an array otherwise. KumoMTA always writes meta and
// headers as objects, classifies unclassified records as "Uncategorized"
// and writes response content on one line (crates/rfc5321
// remove_line_break); a Record with nil Meta or Headers, an empty
// BounceClassification or a multi-line Response.Content is encoded the
// same way. SetTimes writes event_time and created_time as chrono does
// (UTC, 0/3/6/9 fractional digits, Z). Like serde_json, <, > and & are
// not escaped, except by json.Marshal, which escapes them in any
// Marshaler's output.
//
// Record is encoded without reflection (encode.go); tests and a fuzz
// target check that the bytes equal encoding/json's for the same
// normalized record.
//
// # Segment files
//
// OpenLocal writes the layout KumoMTA's logger (crates/kumod/src/logging/
// files.rs) writes and its tailer (crates/kumo-jsonl) reads:
//
//   - Records are JSON lines, each ending in '\n'.
//   - A segment is a file in LogDir named by the UTC time it was opened,
//     formatted with chrono's "%Y%m%d-%H%M%S%.f" — for example
//     20250912-110801.440526026 — plus the optional Suffix. The fraction
//     has 3, 6 or 9 digits, the fewest that represent the nanoseconds,
//     and is absent when they are zero (see SegmentName). These names
//     sort in opening order.
//   - A segment is one zstd frame (with content checksum), readable by
//     the zstd CLI and by KumoMTA's tailer, unless Uncompressed is set.
//   - A segment is closed when the uncompressed bytes written reach
//     MaxFileSize (after the record that reaches it, as KumoMTA does),
//     when MaxSegmentDuration has passed since it was opened (by a timer,
//     so an idle segment is closed on time), and at Close.
//   - A closed segment is marked done by removing its write permission
//     bits: KumoMTA's tailer treats a read-only segment as complete and
//     a writable one as still being written. At OpenLocal, as at KumoMTA
//     start-up, every regular non-hidden file already in LogDir is marked
//     done. So each log directory must have a single writer.
//   - Segment files are created with mode 0666 before the umask, like
//     KumoMTA's; LogDir is created with mode 0755 if missing.
//
// # Writing
//
// Log encodes the record on the caller's goroutine (about 1.3µs for a
// typical Reception record) and appends the bytes, under a mutex, to a
// queue of 256 KiB chunks; a single writer goroutine takes whole batches
// of chunks, compresses and writes them, and handles rotation and
// timers. Handing a record over costs about 50ns, against about 350ns
// and one allocation through a channel of byte slices (measured on two
// cores). When BackPressure records are queued, Log blocks until the
// writer takes them: like KumoMTA's back_pressure, records are never
// dropped for lack of space.
//
// Writes happen after Log has returned, so their failures (a full disk,
// a removed directory) are logged with log/slog, at most once a second,
// and returned as a *WriteError by the next Log, Flush or Close. The
// failed segment is closed and marked done and the next record starts a
// new one, so writing resumes when the cause goes away. Records that
// could not be written are lost; WriteError.Records bounds their number.
//
// Data reaches the file when the compressor's 128 KiB block or the
// plain writer's 256 KiB buffer fills, at rotation and at Close, as with
// KumoMTA; Flush and FlushInterval push it sooner. By default nothing is
// fsynced: a crash loses at most the records of the last FlushInterval
// (1 s), and the reader returns every complete record before them.
//
// # Durable records
//
// With LocalConfig.SyncReception, Sync(Reception) returns once every
// record queued before the call is written, its zstd block ended (a
// reader of the unfinished segment, or after a crash, decodes it) and the
// segment file fsynced, with the log directory the first time a segment
// is synced so that its name survives too; segments closed by rotation
// are fsynced before they are closed. mta.Server calls it after logging a
// transaction's Reception records and before the 250 (see package mta).
// Calls are grouped: each caller joins the next sync round that starts
// after its call, and a round serves every caller that joined while the
// previous one ran, so concurrent receptions share one fsync (group
// commit). A round fails if a write, flush or fsync failed since the
// previous round, since the records lost may be its callers'. Sinks that
// wrap others implement Syncer by passing it on (Multi, mta/metrics), so
// the server finds the Local through them.
//
// # Reading
//
// Scan and ReadDir read every segment of a directory in name order,
// detecting zstd or plain JSON lines per file. A segment still being
// written, or left by a process that died, ends in an unfinished zstd
// frame or a partial line; the reader returns what is complete and
// ignores that tail. Other corruption is an error naming the file and
// line.
//
// Tail reads a directory like Scan and, with Follow, keeps reading the
// records appended to the segment being written and to new segments, as
// KumoMTA's tailer does; pair it with FlushInterval so that records reach
// the file promptly.
//
// # Deviations from KumoMTA
//
//   - Uncompressed (plain JSON lines), FlushInterval and SyncReception
//     are mtakit extensions. KumoMTA's tailer cannot read uncompressed
//     segments.
//   - CompressionLevel is applied by the pure-Go zstd encoder
//     (klauspost/compress), which has four levels: 0 and 3–5 give its
//     default (about zstd level 3), below 3 fastest, 6–9 better, 10 and
//     above best. The output is standard zstd either way.
//   - Which meta keys and headers a record carries, per-record-type
//     routing (per_record: suffix, log_dir, enable, template,
//     segment_header), filter_event and min_free_space/min_free_inodes
//     are left to the caller: build the Record accordingly, or open one
//     Local per destination and route between them. Suffix is the
//     per_record suffix applied to every record of a Local.
//   - If a segment name already exists (two segments opened within the
//     same nanosecond), the time is advanced by a nanosecond rather than
//     appending to the existing file.
//   - KumoMTA logs JsonLogRecord.nodeid and session_id as UUIDs and its
//     readers reject other text; Record holds them as strings, so callers
//     who need KumoMTA tools to parse the log must put UUIDs there.
package logs
