package sink

import (
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpoolFramesCompressed: frames are written zstd-compressed (several
// times smaller than their JSON lines), read back equal, and frames of the
// older, uncompressed format still replay.
func TestSpoolFramesCompressed(t *testing.T) {
	recs := batchOf(0, 200)
	for i, r := range recs {
		r.Request = `[{"role":"user","content":"` + strings.Repeat("please summarise the attached report ", 5) + `"}]`
		r.Response = strings.Repeat("The report says revenue grew. ", 8) + string(rune('a'+i%26))
	}
	var lines int
	for _, r := range recs {
		b, _ := json.Marshal(r)
		lines += len(b) + 1
	}
	frame, err := encodeFrame(recs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("200 transcripts: %d bytes of JSON lines, a %d-byte frame (%.1f×)", lines, len(frame), float64(lines)/float64(len(frame)))
	if binary.LittleEndian.Uint32(frame[4:])&frameZstd == 0 || len(frame)*3 > lines {
		t.Fatalf("frame of %d bytes for %d bytes of JSON: not compressed enough", len(frame), lines)
	}

	dir := t.TempDir()
	// An old frame (JSON lines, flag clear) in an older segment.
	old := recs[:3]
	var payload []byte
	for _, r := range old {
		b, _ := json.Marshal(r)
		payload = append(append(payload, b...), '\n')
	}
	h := make([]byte, frameHeader)
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(old)))
	crc := crc32.Update(0, crcTable, h[4:8])
	binary.LittleEndian.PutUint32(h[8:], crc32.Update(crc, crcTable, payload))
	if err := os.WriteFile(filepath.Join(dir, "seg-00000000000000000000.spool"), append(h, payload...), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := OpenSpool(SpoolOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, err := sp.Append(recs); err != nil {
		t.Fatal(err)
	}
	if _, _, rows := sp.Stats(); rows != 203 {
		t.Fatalf("spool counts %d rows, want 203 (the compressed frame's flag must not count as rows)", rows)
	}
	for _, want := range [][]*Record{old, recs} {
		got, err := sp.Next()
		if err != nil || len(got) != len(want) {
			t.Fatalf("replay: %d records, %v; want %d", len(got), err, len(want))
		}
		for i := range want {
			if got[i].RequestID != want[i].RequestID || got[i].Response != want[i].Response {
				t.Fatalf("record %d differs after the spool", i)
			}
		}
		sp.Ack()
	}
}
