package mta

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtakit/mtakit/spool"
)

var updateGolden = flag.Bool("update-meta-golden", false, "rewrite testdata/meta-v2 from the current encoder")

// viaJSON is what the version 1 (JSON) meta gave back for v: the
// behaviour the binary form keeps.
func viaJSON(t testing.TB, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal(%#v): %v", v, err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustID(t testing.TB, s string) spool.ID {
	t.Helper()
	id, err := spool.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// checkDecoded compares a decoded meta with the one encoded, values as
// JSON would have given them back (binaryExact: strings byte for byte).
func checkDecoded(t *testing.T, got, want *storedMeta) {
	t.Helper()
	if got.Sender != want.Sender {
		t.Errorf("sender %q, want %q", got.Sender, want.Sender)
	}
	if len(got.Recipients) != len(want.Recipients) || !slices.Equal(got.Recipients, want.Recipients) {
		t.Errorf("recipients %q, want %q", got.Recipients, want.Recipients)
	}
	if got.Body != want.Body {
		t.Errorf("body %s, want %s", got.Body, want.Body)
	}
	if !got.Due.Equal(want.Due) || got.Due.IsZero() != want.Due.IsZero() {
		t.Errorf("due %v, want %v", got.Due, want.Due)
	}
	if got.NumAttempts != want.NumAttempts {
		t.Errorf("attempts %d, want %d", got.NumAttempts, want.NumAttempts)
	}
	for _, part := range []struct {
		name      string
		got, want map[string]any
	}{{"meta", got.Meta, want.Meta}, {"headers", got.Headers, want.Headers}} {
		if len(part.got) != len(part.want) {
			t.Errorf("%s: %d entries %v, want %d %v", part.name, len(part.got), part.got, len(part.want), part.want)
		}
		for k, wv := range part.want {
			gv, ok := part.got[k]
			if !ok {
				t.Errorf("%s: %q missing", part.name, k)
				continue
			}
			if s, isString := wv.(string); isString {
				if gv != s { // kept exactly, invalid UTF-8 too
					t.Errorf("%s[%q] = %#v, want %#v", part.name, k, gv, s)
				}
				continue
			}
			jv := viaJSON(t, wv)
			if !reflect.DeepEqual(gv, jv) {
				t.Errorf("%s[%q] = %#v (%T), want %#v (%T) as JSON gave", part.name, k, gv, gv, jv, jv)
			}
			if f, ok := jv.(float64); ok && math.Signbit(f) != math.Signbit(gv.(float64)) {
				t.Errorf("%s[%q]: sign of %v lost", part.name, k, f)
			}
		}
	}
}

func metaCases(t testing.TB) map[string]*storedMeta {
	big := strings.Repeat("ü0123456789", 100000) // 1.2 MB
	many := make([]string, 1000)
	for i := range many {
		many[i] = "rcpt" + strings.Repeat("x", i%50) + "@example.net"
	}
	return map[string]*storedMeta{
		"empty":              {},
		"esmtp":              {Sender: "bounce@sender.example", Recipients: []string{"r@example.net"}, Meta: map[string]any{MetaReceptionProtocol: "ESMTP", MetaReceivedVia: "127.0.0.1:2525", MetaReceivedFrom: "127.0.0.1:45678", MetaHostname: "mx.test", MetaEHLODomain: "client.test", MetaTLSCipher: "TLS_AES_128_GCM_SHA256", MetaTLSVersion: "TLSv1.3", MetaTenant: "t1", MetaCampaign: "c1"}, Headers: map[string]any{"Subject": "hi", "Message-ID": "<1@x>"}},
		"unicode":            {Sender: "αβγ@παράδειγμα.ελ", Recipients: []string{"用户@例子.广告", "😀@emoji.example"}, Meta: map[string]any{"x_ключ": "значение ✓", "": "empty key", "empty": ""}, Headers: map[string]any{"Subject": "Grüße 🎉"}},
		"invalid utf-8 kept": {Sender: "a\xff@b", Recipients: []string{"\xc3\x28@x"}, Meta: map[string]any{"x": "bad \xed\xa0\x80 surrogate", "k\xfe": "v"}},
		"large":              {Sender: "s@x", Recipients: many, Meta: map[string]any{"big": big}, Headers: map[string]any{"Subject": big[:5000]}},
		"value kinds": {Sender: "s@x", Recipients: []string{"r@y"}, Meta: map[string]any{
			"nil": nil, "true": true, "false": false, "str": "v", "float": 1.5, "integral": 3.0, "neg": -7.0, "negzero": math.Copysign(0, -1),
			"tiny": 5e-324, "huge": 1e300, "2^53": float64(1 << 53), "2^53+": 9007199254740993.0,
			"int": 42, "int64max": int64(math.MaxInt64), "int64min": int64(math.MinInt64), "int8": int8(-3), "int16": int16(300), "int32": int32(-70000),
			"uint": uint(7), "uint8": uint8(255), "uint16": uint16(65535), "uint32": uint32(math.MaxUint32), "uint64max": uint64(math.MaxUint64),
			"float32": float32(0.1), "json.Number": json.Number("12.50"),
			"array": []any{1.0, "two", []any{true, nil}}, "strings": []string{"a", "b"}, "table": map[string]any{"n": 1.0, "s": "x", "t": map[string]any{"deep": []any{}}},
			"time": time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), "empty table": map[string]any{}, "nil slice": []string(nil),
		}},
		"body and due":      {Sender: "s@x", Recipients: []string{"r@y"}, Body: mustID(t, "0123456789abcdef0123456789abcdef"), Due: time.Date(2026, 11, 27, 9, 30, 15, 123456789, time.UTC), NumAttempts: 7},
		"due before epoch":  {Sender: "s@x", Recipients: []string{"r@y"}, Due: time.Date(1960, 5, 6, 7, 8, 9, 1, time.UTC), NumAttempts: 1},
		"due in year 0":     {Sender: "s@x", Recipients: []string{"r@y"}, Due: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)},
		"due in year 9999":  {Sender: "s@x", Recipients: []string{"r@y"}, Due: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)},
		"zero body and due": {Sender: "s@x", Recipients: []string{"r@y"}, Meta: map[string]any{MetaQueue: "q"}},
	}
}

// TestMetaRoundTrip encodes every kind of value and edge and decodes it
// again, as a spool entry and as a queued message.
func TestMetaRoundTrip(t *testing.T) {
	for name, want := range metaCases(t) {
		t.Run(name, func(t *testing.T) {
			b, err := encodeMeta(want)
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != metaVersionBinary {
				t.Fatalf("version byte %d", b[0])
			}
			got, err := decodeMeta(spool.ID{}, b)
			if err != nil {
				t.Fatal(err)
			}
			checkDecoded(t, got, want)
			// Encoding what was decoded gives the same meta again (values
			// that went through JSON may take another kind of entry).
			b2, err := encodeMeta(got)
			if err != nil {
				t.Fatal(err)
			}
			got2, err := decodeMeta(spool.ID{}, b2)
			if err != nil {
				t.Fatal(err)
			}
			checkDecoded(t, got2, want)

			m, err := queuedFromSpool(spool.ID{1}, b, nil)
			if err != nil {
				t.Fatal(err)
			}
			// In memory a due time is clamped to what Unix nanoseconds
			// hold (years 1678 to 2262); otherwise it encodes as it was.
			inMemory := jsonOrBinary(t, got)
			checkQueued(t, m, inMemory)
			if inMemory.Due.Equal(got.Due) && !bytes.Equal(m.encode(), b) {
				t.Error("queued message encodes differently")
			}
		})
	}
}

// checkQueued compares what a queued message's accessors give with the
// decoded meta.
func checkQueued(t *testing.T, m *queuedMessage, sm *storedMeta) {
	t.Helper()
	if m.sender() != sm.Sender {
		t.Errorf("sender() %q, want %q", m.sender(), sm.Sender)
	}
	if r := m.recipients(); !slices.Equal(r, sm.Recipients) {
		t.Errorf("recipients() %q, want %q", r, sm.Recipients)
	}
	if m.bodyID() != sm.Body {
		t.Errorf("bodyID() %s, want %s", m.bodyID(), sm.Body)
	}
	if !m.dueTime().Equal(sm.Due) || m.dueTime().IsZero() != sm.Due.IsZero() {
		t.Errorf("dueTime() %v, want %v", m.dueTime(), sm.Due)
	}
	if m.numAttempts() != sm.NumAttempts {
		t.Errorf("numAttempts() %d, want %d", m.numAttempts(), sm.NumAttempts)
	}
	keys := []string{"missing"}
	if _, ok := sm.Meta["missing"]; !ok {
		if _, ok := m.metaValue("missing"); ok {
			t.Error("metaValue of a missing key found")
		}
	}
	for k, v := range sm.Meta {
		keys = append(keys, k)
		got, ok := m.metaValue(k)
		if !ok || !reflect.DeepEqual(got, v) {
			t.Errorf("metaValue(%q) = %#v, %v; want %#v", k, got, ok, v)
		}
		if s, _ := v.(string); m.metaString(k) != s {
			t.Errorf("metaString(%q) = %q, want %q", k, m.metaString(k), s)
		}
	}
	picked := m.pickMeta(keys)
	if len(picked) != len(sm.Meta) || !reflect.DeepEqual(map[string]any(picked), nilToEmpty(sm.Meta)) {
		t.Errorf("pickMeta = %#v, want %#v", picked, sm.Meta)
	}
	if h := m.headers(); !reflect.DeepEqual(nilToEmpty(h), nilToEmpty(sm.Headers)) {
		t.Errorf("headers() = %#v, want %#v", h, sm.Headers)
	}
	msg := &Message{id: m.id, sender: sm.Sender, recipients: sm.Recipients, meta: nilToEmpty(sm.Meta)}
	if m.queue != msg.QueueName() {
		t.Errorf("queue %q, want %q", m.queue, msg.QueueName())
	}
	if st := m.stored(); !reflect.DeepEqual(nilToEmpty(st.Meta), nilToEmpty(sm.Meta)) || st.Sender != sm.Sender {
		t.Errorf("stored() differs: %#v", st)
	}
}

func nilToEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// TestMetaEncodeRefusesWhatJSONRefused keeps the old behaviour for values
// without a JSON form: the store fails (and reception answers 451).
func TestMetaEncodeRefusesWhatJSONRefused(t *testing.T) {
	for name, v := range map[string]any{"NaN": math.NaN(), "+Inf": math.Inf(1), "-Inf float32": float32(math.Inf(-1)), "channel": make(chan int), "func": func() {}} {
		if _, err := encodeMeta(&storedMeta{Meta: map[string]any{"k": v}}); err == nil {
			t.Errorf("%s: encoded", name)
		}
		if _, err := json.Marshal(v); err == nil {
			t.Errorf("%s: JSON encodes it; the binary form should too", name)
		}
	}
}

// TestMetaNumbersAsJSONGaveThem pins the Go kinds a reader gets: every
// number comes back float64, as from JSON, whatever was stored (Lua
// policies store int64 for integral numbers).
func TestMetaNumbersAsJSONGaveThem(t *testing.T) {
	in := map[string]any{"lua int": int64(12), "lua float": 0.5, "go int": 3, "big": uint64(1) << 63}
	b, err := encodeMeta(&storedMeta{Meta: in})
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMeta(spool.ID{}, b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"lua int": 12.0, "lua float": 0.5, "go int": 3.0, "big": 9223372036854775808.0}
	if !reflect.DeepEqual(got.Meta, want) {
		t.Errorf("got %#v, want %#v", got.Meta, want)
	}
}

// TestMetaV1GoldenRecovers reads meta entries written by the JSON encoder
// of earlier releases (testdata/meta-v1, written by that code), directly
// and through a server's recovery.
func TestMetaV1GoldenRecovers(t *testing.T) {
	var nested map[string]any
	if err := json.Unmarshal([]byte(`{"campaign_id":12345,"score":0.75,"tags":["a","b"],"flag":true,"none":null,"deep":{"x":[1,{"y":"z"}]}}`), &nested); err != nil {
		t.Fatal(err)
	}
	want := map[string]*storedMeta{
		"esmtp": {Sender: "bounce-7@sender.example", Recipients: []string{"user1@domain3.example"},
			Meta: map[string]any{"reception_protocol": "ESMTP", "received_via": "127.0.0.1:2525", "received_from": "127.0.0.1:45678",
				"hostname": "mx.test", "ehlo_domain": "client.example", "tls_cipher": "TLS_AES_128_GCM_SHA256", "tls_protocol_version": "TLSv1.3",
				"tenant": "tenant-3", "campaign": "campaign-2"},
			Headers: map[string]any{"Subject": "Offer 12 für dich ✓", "Message-ID": "<3.123@sender.example>"}},
		"retried": {Sender: "", Recipients: []string{"a@x.example", "b@x.example"}, Meta: map[string]any{"queue": "custom-queue", "x_count": 3.0},
			Due: time.Date(2026, 11, 27, 9, 30, 15, 123456789, time.UTC), NumAttempts: 4},
		"nested": {Sender: "api@sender.example", Recipients: []string{"r@y.example"},
			Meta: map[string]any{"reception_protocol": "HTTP", "extra": nested, "routing_domain": "relay.example", "tenant": "t"}},
		"body": {Sender: "s@z.example", Recipients: []string{"r@z.example"}, Body: mustID(t, "0123456789abcdef0123456789abcdef"), NumAttempts: 1,
			Due: time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))},
	}
	data, meta := spool.NewMemory(), spool.NewMemory()
	ids := map[string]spool.ID{}
	for name, w := range want {
		b, err := os.ReadFile(filepath.Join("testdata", "meta-v1", name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMeta(spool.ID{}, b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Run(name, func(t *testing.T) { checkDecoded(t, got, w) })
		id := spool.NewID()
		ids[name] = id
		if err := meta.Store(t.Context(), id, b); err != nil {
			t.Fatal(err)
		}
		if err := data.Store(t.Context(), id, []byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := New(Options{DataSpool: data, MetaSpool: meta, HoldDelivery: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if n := srv.QueuedCount(); n != len(want) {
		t.Fatalf("recovered %d, want %d", n, len(want))
	}
	for name, id := range ids {
		info, err := srv.InspectMessage(t.Context(), id, false)
		if err != nil {
			t.Fatal(err)
		}
		w := want[name]
		if !info.Due.Equal(w.Due) || info.NumAttempts != w.NumAttempts || !slices.Equal(info.Recipients, w.Recipients) {
			t.Errorf("%s: inspect due %v attempts %d rcpts %q, want %v %d %q", name, info.Due, info.NumAttempts, info.Recipients, w.Due, w.NumAttempts, w.Recipients)
		}
		m := srv.sched.live[id]
		checkQueued(t, m, w)
	}
	if q := srv.QueueSummary(); q["custom-queue"] != 1 || q["campaign-2:tenant-3@domain3.example"] != 1 || q["t@y.example!relay.example"] != 1 || q["z.example"] != 1 {
		t.Errorf("queues %v", q)
	}
}

// TestMetaV2Golden pins the binary form: the encoder writes, and the
// decoder reads, testdata/meta-v2 byte for byte, so a change of the format
// shows up here (and needs a new version byte).
func TestMetaV2Golden(t *testing.T) {
	cases := metaCases(t)
	for _, name := range []string{"empty", "esmtp", "unicode", "body and due", "due before epoch", "zero body and due"} {
		path := filepath.Join("testdata", "meta-v2", strings.ReplaceAll(name, " ", "_")+".bin")
		b, err := encodeMeta(cases[name])
		if err != nil {
			t.Fatal(err)
		}
		if *updateGolden {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, golden) {
			t.Errorf("%s: encoding changed:\n got %x\nwant %x", name, b, golden)
		}
		got, err := decodeMeta(spool.ID{}, golden)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) { checkDecoded(t, got, cases[name]) })
	}
}

// TestMetaCorruptOrUnknown checks that what is not meta of a known version
// is an error, naming the version when it is one this build does not read.
func TestMetaCorruptOrUnknown(t *testing.T) {
	good, err := encodeMeta(metaCases(t)["esmtp"])
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty":               {},
		"version 3":           append([]byte{3}, good[1:]...),
		"version 0":           {0, 0, 0},
		"json v2":             []byte(`{"v":2,"sender":"a"}`),
		"json v0":             []byte(`{"sender":"a"}`),
		"truncated":           good[:len(good)-3],
		"trailing":            append(bytes.Clone(good), 0),
		"bad due tag":         {2, 0, 7, 0},
		"bad flags":           {2, 0, 0, 0x80},
		"huge count":          {2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"unknown key code":    {2, 0, 0, 0, 0, 0, 1, 0x7f, kindNil, 0},
		"unknown value kind":  {2, 0, 0, 0, 0, 0, 1, 1, 0x33, 0},
		"invalid json value":  {2, 0, 0, 0, 0, 0, 1, 1, kindJSON, 2, '{', '}', 0, 1, 1, kindJSON, 1, '{'},
		"nanoseconds too big": {2, 0, 1, 2, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"not json":            []byte("{not json"),
	} {
		_, err := decodeMeta(spool.ID{}, b)
		if err == nil {
			t.Errorf("%s: decoded", name)
			continue
		}
		if _, qerr := queuedFromSpool(spool.ID{}, b, nil); qerr == nil {
			t.Errorf("%s: queued", name)
		}
		unknown := strings.HasPrefix(name, "version") || strings.HasPrefix(name, "json v")
		if errors.Is(err, ErrMetaVersion) != unknown {
			t.Errorf("%s: %v; ErrMetaVersion %v, want %v", name, err, errors.Is(err, ErrMetaVersion), unknown)
		}
	}
}

// FuzzDecodeMeta decodes arbitrary entries: never a panic; whatever
// decodes re-encodes to an entry that decodes the same, and a queued
// message made from it reads the same envelope, meta and state.
func FuzzDecodeMeta(f *testing.F) {
	for _, m := range metaCases(f) {
		if b, err := encodeMeta(m); err == nil && len(b) < 4096 {
			f.Add(b)
		}
	}
	for _, name := range []string{"esmtp", "retried", "nested", "body"} {
		if b, err := os.ReadFile(filepath.Join("testdata", "meta-v1", name+".json")); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{2, 0, 0, 0, 0, 0, 1, 0, 1, 'k', kindJSON, 2, '[', ']', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		sm, err := decodeMeta(spool.ID{}, b)
		m, qerr := queuedFromSpool(spool.ID{7}, bytes.Clone(b), nil)
		if (err == nil) != (qerr == nil) {
			t.Fatalf("decodeMeta error %v, queuedFromSpool error %v", err, qerr)
		}
		if err != nil {
			return
		}
		checkQueued(t, m, jsonOrBinary(t, sm))
		again, err := encodeMeta(sm)
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		sm2, err := decodeMeta(spool.ID{}, again)
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !reflect.DeepEqual(normalise(sm), normalise(sm2)) {
			t.Fatalf("re-encoded entry decodes differently:\n%#v\n%#v", sm, sm2)
		}
	})
}

// jsonOrBinary returns sm with its time as the queued message keeps it
// (Unix nanoseconds, clamped).
func jsonOrBinary(t *testing.T, sm *storedMeta) *storedMeta {
	var q queuedMessage
	q.setDue(sm.Due)
	c := *sm
	c.Due = q.dueTime()
	c.NumAttempts = int(clampAttempts(sm.NumAttempts))
	return &c
}

func normalise(sm *storedMeta) *storedMeta {
	c := *sm
	c.Version = 0
	c.Due = c.Due.UTC().Round(0)
	c.NumAttempts = int(clampAttempts(c.NumAttempts))
	if len(c.Recipients) == 0 {
		c.Recipients = nil
	}
	if len(c.Meta) == 0 {
		c.Meta = nil
	}
	if len(c.Headers) == 0 {
		c.Headers = nil
	}
	return &c
}

// TestQueuedMessageUpdates checks the changes delivery and rebind make to
// a queued message: recipients, meta and due time, and that what is
// spooled afterwards decodes to the changed message.
func TestQueuedMessageUpdates(t *testing.T) {
	for _, name := range []string{"esmtp", "body and due", "empty", "unicode"} {
		t.Run(name, func(t *testing.T) {
			sm := metaCases(t)[name]
			m, err := newQueuedMessage(spool.ID{9}, sm)
			if err != nil {
				t.Fatal(err)
			}
			want := *sm
			want.Recipients = []string{"left@x.example", "ü@y.example"}
			queue := m.queue
			m.setRecipients(want.Recipients)
			if m.queue != queue {
				t.Errorf("queue changed to %q with the recipients", m.queue)
			}
			// The queue stays (it was chosen by the first recipient at
			// reception); checkQueued computes it from the new ones.
			m.queue = (&Message{recipients: want.Recipients, meta: nilToEmpty(want.Meta)}).QueueName()
			checkQueued(t, m, &want)

			set := map[string]any{MetaQueue: "moved", "x_n": int64(5), MetaTenant: nil}
			if err := m.mergeMeta(set); err != nil {
				t.Fatal(err)
			}
			want.Meta = map[string]any{}
			for k, v := range sm.Meta {
				want.Meta[k] = v
			}
			want.Meta[MetaQueue], want.Meta["x_n"], want.Meta[MetaTenant] = "moved", 5.0, nil
			if packedQueueName(m.packed) != "moved" {
				t.Errorf("queue after merge %q", packedQueueName(m.packed))
			}
			m.queue = "moved"
			checkQueued(t, m, &want)

			for _, due := range []time.Time{{}, time.Unix(0, 0), time.Date(2027, 1, 1, 0, 0, 0, 5, time.UTC)} {
				m.setDue(due)
				want.Due = due
				if due.Equal(time.Unix(0, 0)) {
					want.Due = time.Unix(0, 1) // the epoch itself would read as "at once"
				}
				got, err := decodeMeta(m.id, m.encode())
				if err != nil {
					t.Fatal(err)
				}
				checkDecoded(t, got, &want)
			}
			m.setDue(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC))
			if y := m.dueTime().Year(); y != 2262 {
				t.Errorf("due in year 3000 clamped to %d, want 2262", y)
			}
			m.setDue(time.Now().Add(-time.Hour))
			if m.due == 0 || !m.dueTime().Before(time.Now()) {
				t.Errorf("due an hour ago reads %v", m.dueTime())
			}
		})
	}
}

// BenchmarkQueuedDeliveryReads measures what one delivery attempt reads
// from a queued message's packed meta (envelope, routing domain, one log
// record's meta, headers and reception protocol), against the decoded
// struct it replaced.
//
//	go test -run '^$' -bench QueuedDeliveryReads ./mta/
func BenchmarkQueuedDeliveryReads(b *testing.B) {
	sm := metaCases(b)["esmtp"]
	logMeta := []string{MetaTenant, MetaCampaign}
	b.Run("packed", func(b *testing.B) {
		m, err := newQueuedMessage(spool.ID{1}, sm)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for range b.N {
			_, _ = m.sender(), m.recipients()
			_ = m.metaString(MetaRoutingDomain)
			_, _ = m.pickMeta(logMeta), m.headers()
			_ = m.metaString(MetaReceptionProtocol)
		}
	})
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_, _ = sm.Sender, sm.Recipients
			_, _ = sm.Meta[MetaRoutingDomain].(string)
			out := make(map[string]any, len(logMeta))
			for _, k := range logMeta {
				if v, ok := sm.Meta[k]; ok {
					out[k] = v
				}
			}
			_, _ = out, sm.Headers
			_, _ = sm.Meta[MetaReceptionProtocol].(string)
		}
	})
}

// TestQueueNameFromJSONValue: a queue-naming meta value of a type JSON
// turns into a string names the queue as that string, at reception and
// after a restart alike (before, only the restart saw it).
func TestQueueNameFromJSONValue(t *testing.T) {
	type tenantName string
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sm := &storedMeta{Recipients: []string{"r@Dest.example"}, Meta: map[string]any{MetaTenant: tenantName("acme"), MetaCampaign: when}}
	m, err := newQueuedMessage(spool.ID{1}, sm)
	if err != nil {
		t.Fatal(err)
	}
	want := "2026-01-02T03:04:05Z:acme@dest.example"
	if m.queue != want {
		t.Errorf("queue %q, want %q", m.queue, want)
	}
	r, err := queuedFromSpool(spool.ID{1}, m.encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.queue != want {
		t.Errorf("after a restart: queue %q, want %q", r.queue, want)
	}
}
