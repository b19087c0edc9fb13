package sink

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// SpoolOptions configure a Spool.
type SpoolOptions struct {
	// Dir holds the segment files; created if missing. Required.
	Dir string
	// MaxBytes bounds the spool on disk; when a batch would pass it, the
	// oldest segments are dropped (and counted). Default 1 GiB.
	MaxBytes int64
	// SegmentBytes is the size at which the segment being written is sealed
	// and a new one started. Default 16 MiB.
	SegmentBytes int64
	// NoSync skips the fsync after each batch. Default false: every batch is
	// on disk before Append returns.
	NoSync bool
}

// Defaults for SpoolOptions.
const (
	DefaultSpoolMaxBytes     = 1 << 30
	DefaultSpoolSegmentBytes = 16 << 20
)

// ErrBatchTooLarge is returned by Append for a batch larger than MaxBytes.
var ErrBatchTooLarge = errors.New("sink: batch larger than the whole spool")

// errCorrupt marks a frame whose length or checksum does not hold.
var errCorrupt = errors.New("sink: corrupt spool frame")

// A spool segment is a file "seg-<20-digit sequence>.spool" of frames, one
// per batch, appended in order:
//
//	payload length  uint32 little endian
//	rows            uint32 little endian; the top bit set: the payload is
//	                zstd-compressed (frames written before compression
//	                existed have it clear and still read)
//	checksum        uint32, CRC-32C of rows (4 bytes) then payload
//	payload         the batch's records as JSON lines
const frameHeader = 12

// frameZstd flags a compressed payload in the rows field; rowsMask takes it
// off.
const (
	frameZstd = 1 << 31
	rowsMask  = frameZstd - 1
)

// maxPayloadBytes bounds a decompressed payload (a corrupt frame cannot make
// a replay allocate more).
const maxPayloadBytes = 1 << 30

var (
	spoolEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	spoolDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxPayloadBytes))
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Spool is a bounded on-disk FIFO of batches: append-only segment files
// with a checksum per batch, replayed oldest first. It is safe for one
// appender and one reader at a time (a mutex serialises them).
type Spool struct {
	opts SpoolOptions

	// mu protects everything below.
	mu     sync.Mutex
	segs   []*segment // oldest first; the last one may be active
	active *os.File   // the segment being appended to, or nil
	seq    uint64     // the next segment's sequence number
	bytes  int64      // sum of segs' sizes
	// rd is the segment being replayed (segs[0] when not nil), read from
	// rdOff; the frame returned by Next ends at rdNext.
	rd             *os.File
	rdOff, rdNext  int64
	rdRows         int64
	pendingCorrupt int64
}

type segment struct {
	seq  uint64
	path string
	size int64
	// rows counts the rows not yet replayed (an estimate once frames are
	// corrupt).
	rows int64
}

// OpenSpool opens (or creates) the spool in opts.Dir and indexes the
// segments already there, which Next then replays first.
func OpenSpool(opts SpoolOptions) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("sink: spool dir is required")
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultSpoolMaxBytes
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSpoolSegmentBytes
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sink: spool dir: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(opts.Dir, "seg-*.spool"))
	if err != nil {
		return nil, err
	}
	s := &Spool{opts: opts, seq: 1}
	for _, p := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "seg-"), ".spool")
		n, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			continue
		}
		seg := &segment{seq: n, path: p}
		if err := seg.index(); err != nil {
			return nil, err
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
		if n >= s.seq {
			s.seq = n + 1
		}
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].seq < s.segs[j].seq })
	return s, nil
}

// index reads a segment's frame headers to count its size and rows.
func (g *segment) index() error {
	f, err := os.Open(g.path)
	if err != nil {
		return fmt.Errorf("sink: spool: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	g.size = st.Size()
	var h [frameHeader]byte
	for off := int64(0); off+frameHeader <= g.size; {
		if _, err := f.ReadAt(h[:], off); err != nil {
			break
		}
		n := int64(binary.LittleEndian.Uint32(h[0:]))
		if off+frameHeader+n > g.size {
			break
		}
		g.rows += int64(binary.LittleEndian.Uint32(h[4:]) & rowsMask)
		off += frameHeader + n
	}
	return nil
}

// encodeFrame builds one frame for recs, its payload zstd-compressed
// (transcripts' JSON shrinks several times; the spool holds that many more
// rows and writes that much less).
func encodeFrame(recs []*Record) ([]byte, error) {
	lines := make([]byte, 0, len(recs)*512)
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		lines = append(lines, b...)
		lines = append(lines, '\n')
	}
	buf := make([]byte, frameHeader, frameHeader+len(lines)/3)
	buf = spoolEncoder.EncodeAll(lines, buf)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(buf)-frameHeader))
	binary.LittleEndian.PutUint32(buf[4:], uint32(len(recs))|frameZstd)
	crc := crc32.Update(0, crcTable, buf[4:8])
	crc = crc32.Update(crc, crcTable, buf[frameHeader:])
	binary.LittleEndian.PutUint32(buf[8:], crc)
	return buf, nil
}

// decodePayload parses a frame's JSON lines.
func decodePayload(p []byte) ([]*Record, error) {
	var out []*Record
	for len(p) > 0 {
		i := 0
		for i < len(p) && p[i] != '\n' {
			i++
		}
		r := &Record{}
		if err := json.Unmarshal(p[:i], r); err != nil {
			return nil, fmt.Errorf("%w: %v", errCorrupt, err)
		}
		out = append(out, r)
		if i < len(p) {
			i++
		}
		p = p[i:]
	}
	return out, nil
}

// Append writes recs as one frame at the end of the spool (fsynced unless
// NoSync). To stay within MaxBytes it first drops the oldest segments and
// returns how many rows they held.
func (s *Spool) Append(recs []*Record) (dropped int64, err error) {
	frame, err := encodeFrame(recs)
	if err != nil {
		return 0, err
	}
	if int64(len(frame)) > s.opts.MaxBytes {
		return 0, ErrBatchTooLarge
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.bytes+int64(len(frame)) > s.opts.MaxBytes && len(s.segs) > 0 {
		dropped += s.dropOldest()
	}
	var seg *segment
	if s.active != nil {
		seg = s.segs[len(s.segs)-1]
		if seg.size > 0 && seg.size+int64(len(frame)) > s.opts.SegmentBytes {
			s.seal()
			seg = nil
		}
	}
	if seg == nil {
		seg = &segment{seq: s.seq, path: filepath.Join(s.opts.Dir, fmt.Sprintf("seg-%020d.spool", s.seq))}
		f, err := os.OpenFile(seg.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o600)
		if err != nil {
			return dropped, fmt.Errorf("sink: spool: %w", err)
		}
		s.seq++
		s.active = f
		s.segs = append(s.segs, seg)
	}
	if _, err := s.active.Write(frame); err != nil {
		// A partial frame fails its checksum on replay; start a new segment.
		s.seal()
		return dropped, fmt.Errorf("sink: spool write: %w", err)
	}
	if !s.opts.NoSync {
		if err := s.active.Sync(); err != nil {
			s.seal()
			return dropped, fmt.Errorf("sink: spool fsync: %w", err)
		}
	}
	seg.size += int64(len(frame))
	seg.rows += int64(len(recs))
	s.bytes += int64(len(frame))
	return dropped, nil
}

// seal closes the active segment; the next Append starts a new one.
func (s *Spool) seal() {
	if s.active != nil {
		_ = s.active.Close()
		s.active = nil
	}
}

// dropOldest removes the oldest segment and returns its unreplayed rows.
func (s *Spool) dropOldest() int64 {
	seg := s.segs[0]
	if len(s.segs) == 1 {
		s.seal()
	}
	if s.rd != nil {
		_ = s.rd.Close()
		s.rd = nil
	}
	s.removeFirst()
	return seg.rows
}

func (s *Spool) removeFirst() {
	seg := s.segs[0]
	_ = os.Remove(seg.path)
	s.bytes -= seg.size
	s.segs = s.segs[1:]
}

// Next returns the oldest batch not yet replayed, or nil when the spool is
// empty. The batch stays in the spool until Ack. Frames that fail their
// checksum end their segment: the rest of it is dropped and its rows are
// reported by TakeCorrupt.
func (s *Spool) Next() ([]*Record, error) {
	for {
		s.mu.Lock()
		payload, err := s.nextPayload()
		s.mu.Unlock()
		if err != nil || payload == nil {
			return nil, err
		}
		recs, derr := decodePayload(payload)
		if derr == nil {
			return recs, nil
		}
		s.mu.Lock()
		s.corruptRest()
		s.mu.Unlock()
	}
}

// nextPayload reads the next frame's payload under s.mu.
func (s *Spool) nextPayload() ([]byte, error) {
	for len(s.segs) > 0 {
		seg := s.segs[0]
		if s.rd == nil {
			if len(s.segs) == 1 && s.active != nil {
				s.seal() // replay what is there; new batches start a new segment
			}
			f, err := os.Open(seg.path)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					s.removeFirst()
					continue
				}
				return nil, fmt.Errorf("sink: spool: %w", err)
			}
			s.rd, s.rdOff = f, 0
		}
		var h [frameHeader]byte
		_, err := s.rd.ReadAt(h[:], s.rdOff)
		if errors.Is(err, io.EOF) && s.rdOff >= seg.size {
			// The segment is replayed: remove it.
			_ = s.rd.Close()
			s.rd = nil
			s.removeFirst()
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.corruptRest() // a torn header at the end (a crash mid-write)
				continue
			}
			return nil, fmt.Errorf("sink: spool read: %w", err)
		}
		n := int64(binary.LittleEndian.Uint32(h[0:]))
		rows := int64(binary.LittleEndian.Uint32(h[4:]) & rowsMask)
		if s.rdOff+frameHeader+n > seg.size {
			s.corruptRest()
			continue
		}
		payload := make([]byte, n)
		if _, err := s.rd.ReadAt(payload, s.rdOff+frameHeader); err != nil {
			return nil, fmt.Errorf("sink: spool read: %w", err)
		}
		crc := crc32.Update(0, crcTable, h[4:8])
		crc = crc32.Update(crc, crcTable, payload)
		if crc != binary.LittleEndian.Uint32(h[8:]) {
			s.corruptRest()
			continue
		}
		if binary.LittleEndian.Uint32(h[4:])&frameZstd != 0 {
			if payload, err = spoolDecoder.DecodeAll(payload, nil); err != nil {
				s.corruptRest()
				continue
			}
		}
		s.rdNext, s.rdRows = s.rdOff+frameHeader+n, rows
		return payload, nil
	}
	return nil, nil
}

// corruptRest drops the rest of the segment being replayed, counting its
// remaining rows as corrupt.
func (s *Spool) corruptRest() {
	if len(s.segs) == 0 {
		return
	}
	seg := s.segs[0]
	s.pendingCorrupt += max(seg.rows, 1)
	seg.rows = 0
	if s.rd != nil {
		_ = s.rd.Close()
		s.rd = nil
	}
	if len(s.segs) == 1 {
		s.seal()
	}
	s.removeFirst()
}

// Ack marks the batch Next returned as replayed.
func (s *Spool) Ack() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rd == nil || len(s.segs) == 0 {
		return
	}
	s.rdOff = s.rdNext
	s.segs[0].rows = max(s.segs[0].rows-s.rdRows, 0)
}

// TakeCorrupt returns the rows lost to corrupt frames since the last call
// (at least one per corrupt segment tail).
func (s *Spool) TakeCorrupt() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.pendingCorrupt
	s.pendingCorrupt = 0
	return n
}

// Stats returns the spool's bytes on disk, segment files and rows not yet
// replayed.
func (s *Spool) Stats() (bytes int64, segments int, rows int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		rows += g.rows
	}
	return s.bytes, len(s.segs), rows
}

// Close closes the open files; the segments stay for the next start.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seal()
	if s.rd != nil {
		_ = s.rd.Close()
		s.rd = nil
	}
	return nil
}
