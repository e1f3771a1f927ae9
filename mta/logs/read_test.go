package logs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// jsonLines returns the JSON lines of recs.
func jsonLines(t testing.TB, recs []*Record) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, r := range recs {
		b.WriteString(mustJSON(t, r))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// compress returns data as one zstd frame of several blocks, and the
// number of records in the blocks before the last.
func compress(t testing.TB, data []byte) ([]byte, int) {
	t.Helper()
	var b bytes.Buffer
	enc, err := zstd.NewWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	// Write record by record with a flush in the middle, so the frame
	// has several blocks like a long-lived segment.
	half := bytes.IndexByte(data[len(data)/2:], '\n') + len(data)/2 + 1
	if _, err := enc.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(data[half:]); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), bytes.Count(data[:half], []byte{'\n'})
}

func compressed(t testing.TB, data []byte) []byte {
	t.Helper()
	z, _ := compress(t, data)
	return z
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func ids(recs []Record) string {
	var s []string
	for _, r := range recs {
		s = append(s, strings.TrimLeft(r.ID, "0"))
	}
	return strings.Join(s, ",")
}

func TestReadDirFormats(t *testing.T) {
	recs := makeRecords(6)
	plain := jsonLines(t, recs)
	z, firstBlocks := compress(t, plain)
	var head []Record
	for _, r := range recs[:firstBlocks] {
		head = append(head, *r)
	}
	tests := []struct {
		name  string
		files map[string][]byte
		want  string // record ids, leading zeros trimmed
	}{
		{name: "zstd", files: map[string][]byte{"20240101-000000": z}, want: ",1,2,3,4,5"},
		{name: "plain", files: map[string][]byte{"20240101-000000": plain}, want: ",1,2,3,4,5"},
		{name: "empty file", files: map[string][]byte{"20240101-000000": nil}, want: ""},
		{name: "plain then zstd, name order", files: map[string][]byte{
			"20240101-000001.5": z, "20240101-000001.123": plain}, want: ",1,2,3,4,5,,1,2,3,4,5"},
		{name: "two concatenated frames", files: map[string][]byte{
			"20240101-000000": append(append([]byte{}, z...), z...)}, want: ",1,2,3,4,5,,1,2,3,4,5"},
		{name: "blank lines", files: map[string][]byte{
			"20240101-000000": append([]byte("\n"), append(plain, "\n\n"...)...)}, want: ",1,2,3,4,5"},
		{name: "hidden files ignored", files: map[string][]byte{
			"20240101-000000": plain, ".checkpoint": []byte("not json")}, want: ",1,2,3,4,5"},
		{name: "plain, last line cut", files: map[string][]byte{
			"20240101-000000": plain[:len(plain)-20]}, want: ",1,2,3,4"},
		{name: "plain, newline of last line missing", files: map[string][]byte{
			"20240101-000000": plain[:len(plain)-1]}, want: ",1,2,3,4,5"},
		{name: "zstd, frame end missing", files: map[string][]byte{
			// Drop the final block and checksum: an in-progress segment
			// after a flush.
			"20240101-000000": z[:lastBlockStart(t, z)]}, want: ids(head)},
		{name: "zstd, last block incomplete", files: map[string][]byte{
			"20240101-000000": z[:len(z)-6]}, want: ids(head)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				writeFile(t, filepath.Join(dir, name), data)
			}
			if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
				t.Fatal(err)
			}
			got, err := ReadDir(dir)
			if err != nil {
				t.Fatalf("ReadDir: %v", err)
			}
			if ids(got) != tc.want {
				t.Fatalf("ids = %q, want %q", ids(got), tc.want)
			}
		})
	}
}

// lastBlockStart returns the offset of the last zstd block of the
// single frame in z written by compress, found by walking block headers.
func lastBlockStart(t testing.TB, z []byte) int {
	t.Helper()
	// Frame header: magic(4), descriptor(1), then window/dict/fcs fields.
	fhd := z[4]
	pos := 5
	single := fhd&0x20 != 0
	if !single {
		pos++ // window descriptor
	}
	pos += []int{0, 1, 2, 4}[fhd&3] // dictionary id
	fcsSize := []int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && single {
		fcsSize = 1
	}
	pos += fcsSize
	var starts []int
	for {
		h := int(z[pos]) | int(z[pos+1])<<8 | int(z[pos+2])<<16
		last, typ, size := h&1, (h>>1)&3, h>>3
		starts = append(starts, pos)
		if typ == 1 { // RLE block: one byte of content
			size = 1
		}
		pos += 3 + size
		if last == 1 {
			break
		}
	}
	if len(starts) < 2 {
		t.Fatalf("compressed test data has %d blocks, want several", len(starts))
	}
	return starts[len(starts)-1]
}

func TestScanTruncatedAnywhere(t *testing.T) {
	recs := makeRecords(12)
	plain := jsonLines(t, recs)
	z := compressed(t, plain)
	dir := t.TempDir()
	path := filepath.Join(dir, "20240101-000000")
	t.Logf("plain %d bytes, zstd %d bytes", len(plain), len(z))
	for _, data := range [][]byte{plain, z} {
		step := 1 // every byte of the compressed form
		if !isZstd(data) {
			step = 7
		}
		for cut := 0; cut <= len(data); cut += step {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			writeFile(t, path, data[:cut])
			got, err := ReadDir(dir)
			if err != nil {
				t.Fatalf("cut at %d of %d (zstd=%v): %v", cut, len(data), isZstd(data), err)
			}
			for i := range got {
				if got[i].ID != recs[i].ID {
					t.Fatalf("cut at %d: record %d is %s", cut, i, got[i].ID)
				}
			}
		}
	}
}

func TestScanErrors(t *testing.T) {
	recs := makeRecords(3)
	plain := jsonLines(t, recs)
	corrupt := bytes.Replace(plain, []byte(`"type":"Reception"`), []byte(`"type":Reception"`), 2)
	// Flip bytes inside the compressed data (not at its end).
	z := compressed(t, plain)
	badZ := append([]byte{}, z...)
	for i := 20; i < 40; i++ {
		badZ[i] ^= 0xff
	}

	tests := []struct {
		name string
		data []byte
		want string
	}{
		{name: "corrupt JSON line", data: corrupt, want: "20240101-000000: line 1: invalid character"},
		{name: "corrupt zstd data", data: badZ, want: "20240101-000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "20240101-000000"), tc.data)
			_, err := ReadDir(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadDir error = %v, want one containing %q", err, tc.want)
			}
		})
	}

	if _, err := ReadDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("ReadDir of a missing directory succeeded")
	}
}

func TestScanStopsOnCallbackError(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "20240101-000000"), jsonLines(t, makeRecords(5)))
	stop := errors.New("stop")
	n := 0
	err := Scan(dir, func(*Record) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Fatalf("Scan = %v after %d records, want the callback's error after 2", err, n)
	}
}

func TestScanFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "segment")
	writeFile(t, path, compressed(t, jsonLines(t, makeRecords(4))))
	n := 0
	if err := ScanFile(path, func(*Record) error { n++; return nil }); err != nil || n != 4 {
		t.Fatalf("ScanFile = %v, %d records; want 4", err, n)
	}
	if err := ScanFile(filepath.Join(dir, "missing"), func(*Record) error { return nil }); err == nil {
		t.Fatal("ScanFile of a missing file succeeded")
	}
}
