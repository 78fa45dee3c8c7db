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
// process after a restart. So the script sets a key per decision id,
// {stream}:once:<id> in the stream's Cluster slot, with SET NX and a TTL,
// and appends a record only when its key is new. The memory is Redis's,
// not the sink's: no sink instance, restart or acknowledged write forgets
// it before the TTL.
type RedisSink struct {
	stream *Stream
	once   string // key prefix of the written decision ids
	ttl    int64  // seconds Redis keeps a written decision id
	keys   []string
	args   []any
	kbuf   []byte
	ends   []int
}

// A written decision id costs about 150 bytes of Redis memory (measured:
// a 32-character id under the default stream name, Redis 7), held for the
// sink's window (decision_log.dedup_window): 90 MB at a thousand decisions
// a second for the default ten minutes.

// appendOnce appends each record ARGV[i+1] whose key KEYS[i] (i ≥ 2) SET
// NX creates, to the stream KEYS[1]; ARGV[1] is the stream's approximate
// MAXLEN (0 keeps everything), ARGV[2] the keys' TTL in seconds. A script
// is atomic: a retry never runs beside the write it repeats.
var appendOnce = redis.NewScript(`
local n = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], 1, 'NX', 'EX', ARGV[2]) then
    if ARGV[1] == '0' then
      redis.call('XADD', KEYS[1], '*', 'record', ARGV[i+1])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'record', ARGV[i+1])
    end
    n = n + 1
  end
end
return n
`)

// NewRedisSink returns a sink appending to the stream name, trimmed to
// about maxLen entries, that remembers the decision ids it wrote for
// window (DefaultDedupWindow when not positive).
func NewRedisSink(client redis.UniversalClient, name string, maxLen int64, window time.Duration) *RedisSink {
	if window <= 0 {
		window = DefaultDedupWindow
	}
	return &RedisSink{
		stream: NewStream(client, name, maxLen),
		once:   sameSlot(name) + ":once:",
		ttl:    max(1, int64(window/time.Second)),
	}
}

func (s *RedisSink) Write(ctx context.Context, batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	// The keys are cut from one string: one allocation per batch, not
	// one per record.
	kbuf, ends := s.kbuf[:0], s.ends[:0]
	for _, b := range batch {
		kbuf = append(kbuf, s.once...)
		kbuf = appendRecordKey(kbuf, b)
		ends = append(ends, len(kbuf))
	}
	all := string(kbuf)
	keys := append(s.keys[:0], s.stream.name)
	args := append(s.args[:0], s.stream.maxLen, s.ttl)
	off := 0
	for i, b := range batch {
		keys = append(keys, all[off:ends[i]])
		args = append(args, b)
		off = ends[i]
	}
	s.kbuf, s.ends, s.keys, s.args = kbuf, ends, keys, args
	if err := ctx.Err(); err != nil {
		// Nothing leaves: go-redis answers an ended context before it
		// sends, and the records are surely not written.
		clear(keys)
		clear(args)
		return sidecar.Unavailable("append to stream "+s.stream.name, err)
	}
	err := appendOnce.Run(ctx, s.stream.client, keys, args...).Err()
	clear(keys) // the batch's keys and records' memory hold the next batch
	clear(args)
	if err != nil {
		if mayHaveRun(err) {
			err = fmt.Errorf("%w: %w", ErrUnconfirmed, err)
		}
		return sidecar.Unavailable("append to stream "+s.stream.name, err)
	}
	return nil
}

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
// that does not start so, a digest of the whole record, which keeps the
// key short.
func appendRecordKey(dst, b []byte) []byte {
	const prefix = `{"decision_id":"`
	if bytes.HasPrefix(b, []byte(prefix)) {
		for i := len(prefix); i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return append(dst, b[len(prefix):i]...)
			}
		}
	}
	sum := sha256.Sum256(b)
	return hex.AppendEncode(append(dst, "sha256:"...), sum[:])
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
		return NewRedisSink(client, cfg.Stream, cfg.MaxLen, cfg.DedupWindow), nil
	case SinkNone:
		return DiscardSink{}, nil
	}
	return nil, sidecar.Invalid("decision_log.sink", "unknown sink %q", cfg.Sink)
}
