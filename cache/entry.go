package cache

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"
)

// Entry is one stored answer. Whether it came from a stream or not, it holds
// the answer as a non-stream response body; a stream hit is rendered from it.
type Entry struct {
	// Created is when the answer was stored; a hit's Age counts from it.
	Created time.Time
	// Expires is when the entry stops being served.
	Expires time.Time
	// Body is the JSON response body (a chat.completion, text_completion or
	// embedding list).
	Body []byte
	// PromptTokens and CompletionTokens are the answer's usage, counted as
	// saved on each hit; 0 when the answer reported none.
	PromptTokens, CompletionTokens int64
}

// entryMagic starts every encoded entry: "SLC" and the format version.
// Entries of another version are treated as corrupt (a miss), never misread.
var entryMagic = [4]byte{'S', 'L', 'C', 1}

// entryHeader is magic, created and expires (Unix ms), prompt and completion
// tokens, CRC-32 (Castagnoli) of the body, body length.
const entryHeader = 4 + 8 + 8 + 8 + 8 + 4 + 4

// ErrCorrupt means a stored entry could not be read: wrong version,
// truncated, or its checksum does not match.
var ErrCorrupt = errors.New("cache: corrupt entry")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Encode returns the entry in its stored form.
func (e *Entry) Encode() []byte {
	b := make([]byte, entryHeader, entryHeader+len(e.Body))
	copy(b, entryMagic[:])
	binary.BigEndian.PutUint64(b[4:], uint64(e.Created.UnixMilli()))
	binary.BigEndian.PutUint64(b[12:], uint64(e.Expires.UnixMilli()))
	binary.BigEndian.PutUint64(b[20:], uint64(e.PromptTokens))
	binary.BigEndian.PutUint64(b[28:], uint64(e.CompletionTokens))
	binary.BigEndian.PutUint32(b[36:], crc32.Checksum(e.Body, crcTable))
	binary.BigEndian.PutUint32(b[40:], uint32(len(e.Body)))
	return append(b, e.Body...)
}

// Decode reads an entry in its stored form. The entry's Body aliases b.
func Decode(b []byte) (*Entry, error) {
	if len(b) < entryHeader || [4]byte(b[:4]) != entryMagic {
		return nil, ErrCorrupt
	}
	n := binary.BigEndian.Uint32(b[40:])
	body := b[entryHeader:]
	if uint64(len(body)) != uint64(n) || crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(b[36:]) {
		return nil, ErrCorrupt
	}
	return &Entry{
		Created:          time.UnixMilli(int64(binary.BigEndian.Uint64(b[4:]))),
		Expires:          time.UnixMilli(int64(binary.BigEndian.Uint64(b[12:]))),
		PromptTokens:     int64(binary.BigEndian.Uint64(b[20:])),
		CompletionTokens: int64(binary.BigEndian.Uint64(b[28:])),
		Body:             body,
	}, nil
}
