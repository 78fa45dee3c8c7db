package decisionlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// spool keeps encoded records on local disk while the sink is down, so
// an outage longer than the queue, and a restart during it, lose none of
// them. It is a FIFO of segment files of JSON lines (a record's JSON
// never holds a raw newline) plus an ack file naming how far the oldest
// segment was delivered. Only the logger's writer goroutine uses it.
//
// A crash between a delivery and its ack repeats that batch on the next
// start: the sink contract allows repeats, which decision_id tells apart.
//
// The spool also marks the records a write whose reply was lost held
// (spilled after it, or read and written from the spool): such a write
// may still reach the sink, so a sink that skips repeats must remember
// their ids longer. The marks outlive a restart in the unsure file,
// written at close with the extent of the segments it describes; a spool
// without one that matches (an older version's, or a crash's) has every
// record a previous run left marked.
type spool struct {
	dir    string
	max    int64 // bound on bytes not yet delivered
	segMax int64 // a segment is closed once it reaches this size

	segs    []segment // oldest first
	readOff int64     // delivered (acked) bytes of segs[0]
	nextOff int64     // where the lines handed out by read end, in segs[0]
	bytes   int64     // bytes not yet delivered
	w       *os.File  // the newest segment, open for appending
	marks   []span    // the unsure records not yet delivered, in order
	// sealed: a failed write left bytes in the newest segment that could
	// not be cut off, so it takes no more records. Reads stop at its size,
	// which its seal file keeps for the next start to cut the segment to.
	sealed bool
}

type segment struct {
	seq  uint64
	size int64
}

// span is the records at bytes [from, to) of segment seq, whole lines.
type span struct {
	seq      uint64
	from, to int64
}

const (
	segSuffix  = ".seg"
	sealSuffix = ".seal"
	ackFile    = "ack"
	unsureFile = "unsure"
	// readChunk bounds one read of a segment; a batch of records is far
	// smaller.
	readChunk = 1 << 20
)

// openSpool opens (creating it if needed) the spool in dir, bounded to
// max bytes, and finds what a previous run left undelivered.
func openSpool(dir string, max int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &spool{dir: dir, max: max, segMax: min(max/4, 16<<20)}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		seq, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		s.segs = append(s.segs, segment{seq: seq, size: info.Size()})
	}
	slices.SortFunc(s.segs, func(a, b segment) int { return cmpUint(a.seq, b.seq) })
	if err := s.readAck(); err != nil {
		return nil, err
	}
	if err := s.cutSealed(); err != nil {
		return nil, err
	}
	for i := range s.segs {
		if err := s.trimTornTail(&s.segs[i]); err != nil {
			return nil, err
		}
	}
	if len(s.segs) > 0 {
		s.readOff = min(s.readOff, s.segs[0].size)
	}
	for _, g := range s.segs {
		s.bytes += g.size
	}
	s.bytes -= s.readOff
	s.nextOff = s.readOff
	if err := s.readMarks(); err != nil {
		return nil, err
	}
	return s, nil
}

// readMarks restores the marks a previous run left, or, when it left none
// that describe these segments, marks everything undelivered. The file is
// removed: a crash before the next close must not leave marks that miss
// what this run adds.
func (s *spool) readMarks() error {
	name := filepath.Join(s.dir, unsureFile)
	raw, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if s.bytes > 0 {
		marks, ok := parseMarks(string(raw), s.segs[len(s.segs)-1])
		if !ok {
			for _, g := range s.segs {
				marks = append(marks, span{g.seq, 0, g.size})
			}
		}
		s.marks = marks
		s.pruneMarks()
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// parseMarks reads the unsure file: "end <seq> <size>" naming the last
// segment as it was written, then one "<seq> <from> <to>" a span. ok is
// false unless the file is whole and describes last.
func parseMarks(raw string, last segment) (marks []span, ok bool) {
	head, rest, whole := strings.Cut(raw, "\n")
	var end segment
	if !whole {
		return nil, false
	}
	if _, err := fmt.Sscanf(head, "end %d %d", &end.seq, &end.size); err != nil || end != last {
		return nil, false
	}
	for line := range strings.Lines(rest) {
		var m span
		if _, err := fmt.Sscanf(strings.TrimSuffix(line, "\n"), "%d %d %d", &m.seq, &m.from, &m.to); err != nil || m.from >= m.to {
			return nil, false
		}
		marks = append(marks, m)
	}
	return marks, true
}

// writeMarks keeps the marks for the next run.
func (s *spool) writeMarks() error {
	name := filepath.Join(s.dir, unsureFile)
	if len(s.segs) == 0 {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	last := s.segs[len(s.segs)-1]
	b := fmt.Appendf(nil, "end %d %d\n", last.seq, last.size)
	for _, m := range s.marks {
		b = fmt.Appendf(b, "%d %d %d\n", m.seq, m.from, m.to)
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// mark marks the records at [from, to) of segment seq, merging it with
// the span it continues.
func (s *spool) mark(seq uint64, from, to int64) {
	if from >= to {
		return
	}
	i := len(s.marks)
	for i > 0 && (s.marks[i-1].seq > seq || s.marks[i-1].seq == seq && s.marks[i-1].from > from) {
		i--
	}
	if i > 0 && s.marks[i-1].seq == seq && s.marks[i-1].to >= from {
		s.marks[i-1].to = max(s.marks[i-1].to, to)
		return
	}
	s.marks = slices.Insert(s.marks, i, span{seq, from, to})
}

// markRead marks the records read last: a write of them lost its reply.
func (s *spool) markRead() {
	if len(s.segs) > 0 {
		s.mark(s.segs[0].seq, s.readOff, s.nextOff)
	}
}

// unsure reports whether the records read last are marked. A read stops
// where a span starts or ends, so they are all marked, or none.
func (s *spool) unsure() bool {
	if len(s.segs) == 0 || len(s.marks) == 0 {
		return false
	}
	m := s.marks[0]
	return m.seq == s.segs[0].seq && m.from <= s.readOff && s.readOff < m.to
}

// readEnd is where a read of segment seg from s.readOff stops: the end of
// the span it starts in, or the start of the next one.
func (s *spool) readEnd(seg segment) int64 {
	for _, m := range s.marks {
		if m.seq != seg.seq || m.to <= s.readOff {
			continue
		}
		if m.from <= s.readOff {
			return m.to
		}
		return m.from
	}
	return seg.size
}

// pruneMarks forgets the spans delivered.
func (s *spool) pruneMarks() {
	if len(s.segs) == 0 {
		s.marks = s.marks[:0]
		return
	}
	first := s.segs[0].seq
	i := 0
	for i < len(s.marks) && (s.marks[i].seq < first || s.marks[i].seq == first && s.marks[i].to <= s.readOff) {
		i++
	}
	s.marks = s.marks[i:]
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, segSuffix))
}

// readAck restores the delivered position, removing segments a previous
// run delivered but did not get to remove.
func (s *spool) readAck() error {
	raw, err := os.ReadFile(filepath.Join(s.dir, ackFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var seq uint64
	var off int64
	if _, err := fmt.Sscanf(string(raw), "%d %d", &seq, &off); err != nil {
		return nil // unreadable: deliver from the start of the oldest segment
	}
	for len(s.segs) > 0 && s.segs[0].seq < seq {
		if err := os.Remove(s.path(s.segs[0].seq)); err != nil {
			return err
		}
		s.segs = s.segs[1:]
	}
	if len(s.segs) > 0 && s.segs[0].seq == seq {
		s.readOff = min(max(off, 0), s.segs[0].size)
	}
	return nil
}

func (s *spool) sealPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, sealSuffix))
}

// seal records that segment g ends at its size, whatever bytes a failed
// write left after it, so that a next start cuts them off: the records
// they hold were counted as lost and must not be delivered.
func (s *spool) seal(g segment) error {
	tmp := s.sealPath(g.seq) + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d\n", g.size), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.sealPath(g.seq))
}

// cutSealed cuts each sealed segment to the size its seal file records,
// then removes the seal files. A seal file that cannot be read, or names
// no segment or a size past the segment's end, is only removed (a torn
// tail left is cut by trimTornTail).
func (s *spool) cutSealed() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), sealSuffix)
		if !ok {
			if strings.HasSuffix(e.Name(), sealSuffix+".tmp") {
				if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
			continue
		}
		if seq, err := strconv.ParseUint(name, 10, 64); err == nil {
			i := slices.IndexFunc(s.segs, func(g segment) bool { return g.seq == seq })
			raw, rerr := os.ReadFile(filepath.Join(s.dir, e.Name()))
			var size int64
			if _, err := fmt.Sscanf(string(raw), "%d\n", &size); i >= 0 && rerr == nil && err == nil && size >= 0 && size < s.segs[i].size {
				if err := os.Truncate(s.path(seq), size); err != nil {
					return err
				}
				s.segs[i].size = size
			}
		}
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// trimTornTail cuts a partial last line off segment g, which a crash, or
// a failed write whose seal was not recorded, left behind: appends start
// on a line boundary, and no read takes a fragment for a record.
func (s *spool) trimTornTail(g *segment) error {
	if g.size == 0 {
		return nil
	}
	f, err := os.OpenFile(s.path(g.seq), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	end := g.size
	for end > 0 {
		from := max(end-int64(len(buf)), 0)
		chunk := buf[:end-from]
		if _, err := f.ReadAt(chunk, from); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			end = from + int64(i) + 1
			break
		}
		end = from
	}
	if end == g.size {
		return nil
	}
	if err := f.Truncate(end); err != nil {
		return err
	}
	g.size = end
	return nil
}

// empty reports whether every spooled record was delivered.
func (s *spool) empty() bool { return s.bytes == 0 }

// size is the spooled bytes not yet delivered.
func (s *spool) size() int64 { return s.bytes }

// append writes the records that fit within the bound, in order, and
// returns how many it kept (on an error, how many were written before
// it); the rest are the caller's to count as lost. The first unsure
// records of batch are marked. A batch is split across segments so that
// none passes segMax unless a single record does: the spool's directory
// holds at most its bound plus the delivered part of its oldest segment.
func (s *spool) append(batch [][]byte, unsure int) (int, error) {
	kept, room := 0, s.max-s.bytes
	for _, b := range batch {
		if int64(len(b)+1) > room {
			break
		}
		room -= int64(len(b) + 1)
		kept++
	}
	var buf bytes.Buffer
	for done := 0; done < kept; {
		// The records for the newest segment: as many as its room takes,
		// one at least (a new segment's room is segMax).
		free := s.segMax
		if last := len(s.segs) - 1; last >= 0 && s.segs[last].size > 0 {
			free = max(s.segMax-s.segs[last].size, 0)
		}
		buf.Reset()
		n, marked := 0, 0
		for done+n < kept {
			b := batch[done+n]
			if n > 0 && int64(buf.Len()+len(b)+1) > free {
				break
			}
			if n == 0 && int64(len(b)+1) > free && free < s.segMax {
				free = s.segMax // it goes to a new segment
			}
			buf.Write(b)
			buf.WriteByte('\n')
			if done+n < unsure {
				marked = buf.Len()
			}
			n++
		}
		if err := s.writable(int64(buf.Len())); err != nil {
			return done, err
		}
		last := &s.segs[len(s.segs)-1]
		if _, err := s.w.Write(buf.Bytes()); err != nil {
			// Keep the segment on a line boundary: a partial write is lost whole.
			if terr := s.w.Truncate(last.size); terr != nil {
				s.sealed = true
				err = errors.Join(err, terr, s.seal(*last))
			}
			return done, err
		}
		s.mark(last.seq, last.size, last.size+int64(marked))
		last.size += int64(buf.Len())
		s.bytes += int64(buf.Len())
		done += n
	}
	return kept, nil
}

// writable opens the segment the next n bytes go to: the newest one
// while it has room (also one a previous run left) and is not sealed,
// else a new one.
func (s *spool) writable(n int64) error {
	last := len(s.segs) - 1
	if last >= 0 && (s.sealed || s.segs[last].size > 0 && s.segs[last].size+n > s.segMax) {
		if s.w != nil {
			if err := s.w.Close(); err != nil {
				return err
			}
			s.w = nil
		}
	} else if s.w != nil {
		return nil
	} else if last >= 0 {
		f, err := os.OpenFile(s.path(s.segs[last].seq), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		s.w = f
		return nil
	}
	var seq uint64
	if last >= 0 {
		seq = s.segs[last].seq + 1
	}
	f, err := os.OpenFile(s.path(seq), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.w, s.sealed = f, false
	s.segs = append(s.segs, segment{seq: seq})
	return nil
}

// read returns up to n of the oldest undelivered records, all marked or
// none. Reading again before ack returns the same records.
func (s *spool) read(n int) ([][]byte, error) {
	s.nextOff = s.readOff
	for len(s.segs) > 0 {
		seg := s.segs[0]
		if s.readOff < seg.size {
			return s.readSegment(seg, n)
		}
		if len(s.segs) == 1 {
			return nil, nil
		}
		if err := s.dropOldest(); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func (s *spool) readSegment(seg segment, n int) ([][]byte, error) {
	f, err := os.Open(s.path(seg.seq))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, min(s.readEnd(seg)-s.readOff, readChunk))
	if _, err := f.ReadAt(buf, s.readOff); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var out [][]byte
	used := 0
	for len(out) < n {
		i := bytes.IndexByte(buf[used:], '\n')
		if i < 0 {
			break
		}
		out = append(out, buf[used:used+i])
		used += i + 1
	}
	if used == 0 {
		// No whole line in a full chunk: a record past the chunk bound.
		// It cannot be delivered; skip that record alone rather than stall,
		// never the records after it.
		end, whole, err := lineEnd(f, s.readOff+int64(len(buf)), seg.size)
		if err != nil {
			return nil, err
		}
		s.nextOff = end
		skip := fmt.Errorf("spool segment %d: a record of %d bytes passes the %d-byte read bound; that record skipped", seg.seq, end-s.readOff, readChunk)
		if !whole {
			skip = fmt.Errorf("spool segment %d: a torn record of %d bytes, cut short before its line end; that record skipped", seg.seq, end-s.readOff)
		}
		return nil, errors.Join(skip, s.ack())
	}
	s.nextOff = s.readOff + int64(used)
	return out, nil
}

// lineEnd is the offset just after the first newline in f at or after
// off (whole), or size when the segment ends first (a record cut short).
func lineEnd(f *os.File, off, size int64) (int64, bool, error) {
	buf := make([]byte, 64<<10)
	for off < size {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return off + int64(i) + 1, true, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, false, err
		}
		if n == 0 {
			break
		}
		off += int64(n)
	}
	return size, false, nil
}

// ack marks the records read last as delivered.
func (s *spool) ack() error {
	s.bytes -= s.nextOff - s.readOff
	s.readOff = s.nextOff
	s.pruneMarks()
	if len(s.segs) == 1 && s.readOff == s.segs[0].size {
		// Everything delivered: start over with an empty spool.
		return s.dropOldest()
	}
	return s.writeAck()
}

func (s *spool) writeAck() error {
	if len(s.segs) == 0 {
		err := os.Remove(filepath.Join(s.dir, ackFile))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	tmp := filepath.Join(s.dir, ackFile+".tmp")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", s.segs[0].seq, s.readOff), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.dir, ackFile))
}

// dropOldest removes the oldest segment, delivered whole.
func (s *spool) dropOldest() error {
	if len(s.segs) == 1 && s.w != nil {
		if err := s.w.Close(); err != nil {
			return err
		}
		s.w = nil
	}
	s.bytes -= s.segs[0].size - s.readOff
	if err := os.Remove(s.path(s.segs[0].seq)); err != nil {
		return err
	}
	if err := os.Remove(s.sealPath(s.segs[0].seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.segs = s.segs[1:]
	s.readOff, s.nextOff = 0, 0
	s.pruneMarks()
	return s.writeAck()
}

// sync makes what was appended durable.
func (s *spool) sync() error {
	if s.w == nil {
		return nil
	}
	return s.w.Sync()
}

func (s *spool) close() error {
	var err error
	if s.w != nil {
		err = errors.Join(s.w.Sync(), s.w.Close())
		s.w = nil
	}
	return errors.Join(err, s.writeMarks())
}
