package decisionlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// WriterSink writes JSON lines to w (stdout by default), one Write per
// batch so lines of concurrent writers do not interleave.
type WriterSink struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
}

// NewWriterSink returns a sink writing JSON lines to w.
func NewWriterSink(w io.Writer) *WriterSink { return &WriterSink{w: w} }

func (s *WriterSink) Write(_ context.Context, batch [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	for _, b := range batch {
		s.buf.Write(b)
		s.buf.WriteByte('\n')
	}
	_, err := s.w.Write(s.buf.Bytes())
	return err
}

// DiscardSink drops every record; it backs sink "none".
type DiscardSink struct{}

func (DiscardSink) Write(context.Context, [][]byte) error { return nil }

// RecordField is the stream entry field holding the record's JSON.
const RecordField = "record"

// Stream appends entries to one Redis stream, trimmed to an approximate
// length. The decision log writes through one; the audit and events
// streams belong to the state store (sidecar/redis), which keeps their
// own retention.
type Stream struct {
	client redis.UniversalClient
	name   string
	maxLen int64
}

// NewStream returns an appender for the stream name, trimmed to about
// maxLen entries (0 keeps everything).
func NewStream(client redis.UniversalClient, name string, maxLen int64) *Stream {
	return &Stream{client: client, name: name, maxLen: maxLen}
}

// Name is the stream's key.
func (s *Stream) Name() string { return s.name }

func (s *Stream) args(values any) *redis.XAddArgs {
	a := &redis.XAddArgs{Stream: s.name, Values: values}
	if s.maxLen > 0 {
		a.MaxLen = s.maxLen
		a.Approx = true
	}
	return a
}

// Append adds one entry with the given field/value pairs and returns its id.
func (s *Stream) Append(ctx context.Context, values map[string]any) (string, error) {
	id, err := s.client.XAdd(ctx, s.args(values)).Result()
	if err != nil {
		return "", sidecar.Unavailable("append to stream "+s.name, err)
	}
	return id, nil
}

// Range returns up to count entries from start ("-" for the oldest) on.
func (s *Stream) Range(ctx context.Context, start string, count int64) ([]redis.XMessage, error) {
	msgs, err := s.client.XRangeN(ctx, s.name, start, "+", count).Result()
	if err != nil {
		return nil, sidecar.Unavailable("read stream "+s.name, err)
	}
	return msgs, nil
}

// RedisSink writes decision records to a Redis stream, one script call
// per batch, each record at most once.
//
// A write whose reply is lost (a Redis stall past the read timeout, a
// connection cut after the command left) may still have been executed,
// and the logger writes the batch again: at once, later from the spool,
// split in parts when the spool took only some of it, or from the next
// process after a restart. So the script adds each record's decision id
// to a sorted set beside the stream, {stream}:once in the stream's
// Cluster slot, scored by when it expires, and appends a record only when
// its id is new. The memory is Redis's, not the sink's: no sink instance
// or restart forgets an id before the window, decision_log.dedup_window,
// has passed.
//
// An id is only needed until its record will never be written again: the
// logger says so (Settled) once a write is confirmed and the batch is off
// its queue or acknowledged in the spool, and the next write removes the
// settled ids. But an attempt whose reply was lost may still be on its way
// to Redis, and run after the removal: finding no id, it would append its
// records again. So the script runs once per Write (go-redis never retries
// it, whatever redis.max_retries says), every lost reply reaches the sink,
// and the ids of a record any attempt of which went unconfirmed stay for
// the window. The set holds the last batch of each live sink, plus the ids
// of writes whose reply was lost, however many decisions a second there
// are; decision_log.dedup_max_ids caps it, the oldest ids going first.
//
// Write and Settled are called from one goroutine, the logger's writer.
type RedisSink struct {
	stream *Stream
	head   []any // the script's first arguments, boxed once
	args   []any
	kbuf   []byte
	// written holds the ids of the last write, if it succeeded; settled
	// the ids the next write removes from the set. Each is one argument
	// of the script: the ids of a batch, one a line.
	written string
	settled []any
	// unsure holds the ids of records an unconfirmed write held, until
	// they are settled: those stay in the set for the window. Only
	// records the logger still holds, in its queue or spool, are here.
	unsure map[string]struct{}
}

// DedupIDBytes is what one decision id in the once-set may cost Redis, as
// decision_log.stream_max_bytes counts it: 144 bytes measured for a
// 32-character id (Redis 7, jemalloc, a skiplist-encoded sorted set),
// with room for the allocator. Ids are at most 32 characters (longer ones
// go by a digest of that length).
const DedupIDBytes = 160

// maxIDLen is the longest id the once-set holds as it is.
const maxIDLen = 32

// appendOnce appends to the stream KEYS[1] each record whose id the
// sorted set KEYS[2] does not hold, adding the id. ARGV[1] is the
// stream's approximate MAXLEN (0 keeps everything), ARGV[2] the window in
// milliseconds, ARGV[3] the set's bound, ARGV[4] the batch's n ids, one a
// line (an id as JSON encodes it holds no raw newline); ARGV[5] to
// ARGV[4+n] are the records, and each argument after them a line-separated
// list of ids to forget. Ids go as one argument per batch, not one per
// record: the client boxes and sends one string. Redis's own clock scores
// the ids, so that sinks on hosts whose clocks differ agree on what has
// expired. A script is atomic: a retry never runs beside the write it
// repeats.
const appendOnceSrc = `
local function lines(s)
  local t, pos = {}, 1
  while true do
    local e = string.find(s, '\n', pos, true)
    if not e then
      t[#t + 1] = string.sub(s, pos)
      return t
    end
    t[#t + 1] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
end
local once = KEYS[2]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = lines(ARGV[4])
for i = 5 + #ids, #ARGV do
  local gone = lines(ARGV[i])
  for j = 1, #gone, 1000 do
    redis.call('ZREM', once, unpack(gone, j, math.min(j + 999, #gone)))
  end
end
redis.call('ZREMRANGEBYSCORE', once, '-inf', now)
local written = 0
for i, id in ipairs(ids) do
  if redis.call('ZADD', once, 'NX', now + window, id) == 1 then
    if ARGV[1] == '0' then
      redis.call('XADD', KEYS[1], '*', 'record', ARGV[4 + i])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'record', ARGV[4 + i])
    end
    written = written + 1
  end
end
local over = redis.call('ZCARD', once) - cap
if over > 0 then
  redis.call('ZREMRANGEBYRANK', once, 0, over - 1)
end
redis.call('PEXPIRE', once, window)
return written
`

var appendOnce = redis.NewScript(appendOnceSrc)

// onceCmd is a command go-redis sends at most once: it retries a command
// whose reply was lost on another connection (redis.max_retries), and
// the first attempt may still reach Redis after the retry's success.
type onceCmd struct{ *redis.Cmd }

func (onceCmd) NoRetry() bool { return true }

// NewRedisSink returns a sink appending to the stream name, trimmed to
// about maxLen entries, that remembers the decision ids it wrote for
// window (DefaultDedupWindow when not positive), at most maxIDs of them
// (DefaultDedupMaxIDs when not positive).
func NewRedisSink(client redis.UniversalClient, name string, maxLen int64, window time.Duration, maxIDs int64) *RedisSink {
	if window <= 0 {
		window = DefaultDedupWindow
	}
	if maxIDs <= 0 {
		maxIDs = DefaultDedupMaxIDs
	}
	return &RedisSink{
		stream: NewStream(client, name, maxLen),
		head: []any{"evalsha", appendOnce.Hash(), 2, name, sameSlot(name) + ":once",
			maxLen, max(1, window.Milliseconds()), maxIDs},
	}
}

// run runs appendOnce with args (s.head's first), once: EVALSHA, and EVAL
// when Redis has not cached the script.
func (s *RedisSink) run(ctx context.Context, args []any) error {
	err := s.runOnce(ctx, args)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		args[0], args[1] = "eval", appendOnceSrc
		err = s.runOnce(ctx, args)
	}
	return err
}

func (s *RedisSink) runOnce(ctx context.Context, args []any) error {
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	_ = s.stream.client.Process(ctx, onceCmd{cmd})
	return cmd.Err()
}

func (s *RedisSink) Write(ctx context.Context, batch [][]byte) error {
	s.written = ""
	if len(batch) == 0 {
		return nil
	}
	kbuf := s.kbuf[:0]
	for i, b := range batch {
		if i > 0 {
			kbuf = append(kbuf, '\n')
		}
		kbuf = appendRecordKey(kbuf, b)
	}
	s.kbuf = kbuf
	ids := string(kbuf)
	args := append(append(s.args[:0], s.head...), ids)
	for _, b := range batch {
		args = append(args, b)
	}
	args = append(args, s.settled...)
	s.args = args
	if err := ctx.Err(); err != nil {
		// Nothing leaves: go-redis answers an ended context before it
		// sends, and the records are surely not written.
		clear(args)
		return sidecar.Unavailable("append to stream "+s.stream.name, err)
	}
	err := s.run(ctx, args)
	clear(args) // the batch's records' memory holds the next batch
	if err != nil {
		if mayHaveRun(err) {
			err = fmt.Errorf("%w: %w", ErrUnconfirmed, err)
			s.keepUnsure(ids)
		}
		return sidecar.Unavailable("append to stream "+s.stream.name, err)
	}
	// Removed. A failed write keeps them for the next, which removes them
	// again (ZREM of an absent id is nothing).
	clear(s.settled)
	s.settled, s.written = s.settled[:0], ids
	return nil
}

// Settled tells the sink that the logger will never write the records of
// its last write, which succeeded, again: the next write removes their
// ids from the once-set, but for those of records an unconfirmed write
// held, and all of them with keep. Those stay for the window, and the
// sink forgets that they were unsure.
func (s *RedisSink) Settled(keep bool) {
	written := s.written
	s.written = ""
	if len(s.unsure) > 0 {
		written = s.settleUnsure(written)
	}
	if written != "" && !keep {
		s.settled = append(s.settled, written)
	}
}

// keepUnsure notes the ids of a write whose reply was lost.
func (s *RedisSink) keepUnsure(ids string) {
	if s.unsure == nil {
		s.unsure = map[string]struct{}{}
	}
	for id := range strings.SplitSeq(ids, "\n") {
		s.unsure[id] = struct{}{}
	}
}

// settleUnsure returns the settled ids that no unconfirmed write held,
// one a line, and forgets those that one did: they stay in the set for
// the window, and their records are never written again.
func (s *RedisSink) settleUnsure(written string) string {
	var keep strings.Builder
	for id := range strings.SplitSeq(written, "\n") {
		if _, ok := s.unsure[id]; ok {
			delete(s.unsure, id)
			continue
		}
		if keep.Len() > 0 {
			keep.WriteByte('\n')
		}
		keep.WriteString(id)
	}
	return keep.String()
}

var _ Settler = (*RedisSink)(nil)

// ErrUnconfirmed marks a failed write the sink may still have made: the
// command left, its reply did not come back.
var ErrUnconfirmed = errors.New("reply lost, the records may be written")

// mayHaveRun reports whether a failed command may have reached Redis and
// run: every failure but a connection never made, the client's own pool
// giving up, and an error reply (Redis answered, and refused).
func mayHaveRun(err error) bool {
	var op *net.OpError
	var reply redis.Error
	switch {
	case errors.As(err, &op) && op.Op == "dial",
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed),
		errors.As(err, &reply):
		return false
	}
	return true
}

// appendRecordKey appends what tells the record b from every other: its
// decision_id as encoded (appendJSON writes it first), or, for a record
// that does not start so or whose id is longer than maxIDLen, a digest of
// that length, which bounds what an id costs Redis. The key never holds a
// newline, which separates the ids of a batch.
func appendRecordKey(dst, b []byte) []byte {
	const prefix = `{"decision_id":"`
	if bytes.HasPrefix(b, []byte(prefix)) {
		for i := len(prefix); i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				// A raw newline is not JSON, but the sink takes any bytes.
				id := b[len(prefix):i]
				if len(id) <= maxIDLen && bytes.IndexByte(id, '\n') < 0 {
					return append(dst, id...)
				}
				return appendDigest(dst, id)
			}
		}
	}
	return appendDigest(dst, b)
}

// appendDigest appends '#' and 120 bits of b's SHA-256 in hex: 31
// characters, within maxIDLen.
func appendDigest(dst, b []byte) []byte {
	sum := sha256.Sum256(b)
	return hex.AppendEncode(append(dst, '#'), sum[:15])
}

// sameSlot returns a key prefix that Redis Cluster places in the slot of
// the key name: name itself when it carries a hash tag, else name as the
// tag (Validate refuses a name with a '}' and no tag, which no tag can
// place).
func sameSlot(name string) string {
	if hasHashTag(name) {
		return name
	}
	return "{" + name + "}"
}

// hasHashTag reports whether Redis Cluster hashes only a part of the key
// name: a non-empty {tag}, the first '}' after the first '{'.
func hasHashTag(name string) bool {
	open := strings.IndexByte(name, '{')
	return open >= 0 && strings.IndexByte(name[open+1:], '}') > 0
}

// Probe asks Redis for a PONG: cheaper than retrying a batch, and as
// prompt.
func (s *RedisSink) Probe(ctx context.Context) error {
	if err := s.stream.client.Ping(ctx).Err(); err != nil {
		return sidecar.Unavailable("ping the stream's Redis", err)
	}
	return nil
}

var _ Prober = (*RedisSink)(nil)

// NewSink builds the sink cfg names. client may be nil unless the sink is
// redis; w is where the stdout sink writes.
func NewSink(cfg Config, client redis.UniversalClient, w io.Writer) (Sink, error) {
	switch cfg.Sink {
	case SinkStdout:
		return NewWriterSink(w), nil
	case SinkRedis:
		if client == nil {
			return nil, sidecar.Invalid("decision_log.sink", "redis needs a configured Redis connection")
		}
		return NewRedisSink(client, cfg.Stream, cfg.MaxLen, cfg.DedupWindow, cfg.DedupMaxIDs), nil
	case SinkNone:
		return DiscardSink{}, nil
	}
	return nil, sidecar.Invalid("decision_log.sink", "unknown sink %q", cfg.Sink)
}

// streamStatsSrc reads what the stream's metrics show, in one round trip
// and one small reply: XINFO STREAM's length and entries-added (Redis
// 7.0 on; -1 before), the first entry's id ("" when the stream is empty or
// missing) and Redis's clock, which made that id, so the oldest record's
// age owes nothing to this host's clock. XINFO's reply carries the first
// and last entries whole, up to max_record_bytes each: the script keeps
// them in Redis.
const streamStatsSrc = `
local t = redis.call('TIME')
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, '', t[1], t[2]}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, added, first = 0, -1, ''
for i = 1, #info, 2 do
  local k, v = info[i], info[i + 1]
  if k == 'length' then
    length = v
  elseif k == 'entries-added' then
    added = v
  elseif k == 'first-entry' and v then
    first = v[1]
  end
end
return {length, added, first, t[1], t[2]}
`

var streamStats = redis.NewScript(streamStatsSrc)

// streamRead is one read of the stream for its metrics.
type streamRead struct {
	length int64
	// trimmed is entries-added minus length: what the stream discarded
	// since it was created; -1 when Redis does not report entries-added.
	trimmed int64
	// oldestAge is the first entry's age by Redis's clock; 0 when the
	// stream holds nothing.
	oldestAge time.Duration
}

// readStats reads the stream's length, how many entries it discarded and
// how old its oldest entry is. The stream is the same for every replica
// writing to it, and so are these.
func (s *RedisSink) readStats(ctx context.Context) (streamRead, error) {
	v, err := streamStats.Run(ctx, s.stream.client, []string{s.stream.name}).Slice()
	if err != nil {
		return streamRead{}, sidecar.Unavailable("read stream "+s.stream.name, err)
	}
	if len(v) != 5 {
		return streamRead{}, sidecar.Unavailable("read stream "+s.stream.name, fmt.Errorf("unexpected reply %v", v))
	}
	length, _ := v[0].(int64)
	added, _ := v[1].(int64)
	first, _ := v[2].(string)
	sec, _ := v[3].(string)
	usec, _ := v[4].(string)
	r := streamRead{length: length, trimmed: -1}
	if added >= 0 {
		r.trimmed = max(0, added-length)
	}
	if first != "" {
		ms, err1 := strconv.ParseInt(strings.SplitN(first, "-", 2)[0], 10, 64)
		secs, err2 := strconv.ParseInt(sec, 10, 64)
		us, err3 := strconv.ParseInt(usec, 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return streamRead{}, sidecar.Unavailable("read stream "+s.stream.name, err)
		}
		now := time.UnixMicro(secs*1e6 + us)
		r.oldestAge = max(0, now.Sub(time.UnixMilli(ms)))
	}
	return r, nil
}
