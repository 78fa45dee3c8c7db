package decisionlog

import (
	"bytes"
	"context"
	"io"
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
// and the logger writes the batch again. So the script remembers, in a
// hash beside the stream, the decision ids it wrote since this sink's last
// acknowledged write (its generation), and skips them on a retry. A write
// with a new generation starts the hash afresh: the reply of the one
// before came back, so nothing of the new batch can be in the stream yet.
// The hash holds at most what was written while replies were lost, and
// expires once the sink is gone.
type RedisSink struct {
	stream  *Stream
	written string // key of the hash of decision ids written
	gen     uint64 // acknowledged writes; owned by the logger's worker
	args    []any
}

// writtenTTL keeps a retry's memory of what was written long enough to
// outlast an outage; a sink that writes again refreshes it.
const writtenTTL = 24 * time.Hour

// appendOnce writes each record whose id the hash KEYS[2] does not hold
// under the generation ARGV[2]; ARGV[1] is the stream's approximate
// MAXLEN (0 keeps everything), ARGV[3] the hash's TTL in seconds, the
// rest (decision id, record) pairs. A script is atomic: a retry never
// runs beside the write it repeats.
var appendOnce = redis.NewScript(`
local fresh = redis.call('HGET', KEYS[2], 'gen') ~= ARGV[2]
if fresh then redis.call('DEL', KEYS[2]) end
local n = 0
for i = 4, #ARGV, 2 do
  local id = 'id:' .. ARGV[i]
  if fresh or redis.call('HEXISTS', KEYS[2], id) == 0 then
    if ARGV[1] == '0' then
      redis.call('XADD', KEYS[1], '*', 'record', ARGV[i+1])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'record', ARGV[i+1])
    end
    redis.call('HSET', KEYS[2], id, 1)
    n = n + 1
  end
end
redis.call('HSET', KEYS[2], 'gen', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return n
`)

// NewRedisSink returns a sink appending to the stream name, trimmed to
// about maxLen entries.
func NewRedisSink(client redis.UniversalClient, name string, maxLen int64) *RedisSink {
	return &RedisSink{
		stream:  NewStream(client, name, maxLen),
		written: sameSlot(name) + ":written:" + randomID(),
	}
}

func (s *RedisSink) Write(ctx context.Context, batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	args := append(s.args[:0], s.stream.maxLen, s.gen, int64(writtenTTL/time.Second))
	for _, b := range batch {
		args = append(args, recordID(b), b)
	}
	s.args = args
	err := appendOnce.Run(ctx, s.stream.client, []string{s.stream.name, s.written}, args...).Err()
	clear(args) // the records' memory holds the next batch
	if err != nil {
		return sidecar.Unavailable("append to stream "+s.stream.name, err)
	}
	s.gen++
	return nil
}

// recordID is what tells a record from every other: its decision_id as
// encoded (appendJSON writes it first), or, for a record that does not
// start so, the whole record.
func recordID(b []byte) []byte {
	const prefix = `{"decision_id":"`
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return b
	}
	for i := len(prefix); i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return b[len(prefix):i]
		}
	}
	return b
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
		return NewRedisSink(client, cfg.Stream, cfg.MaxLen), nil
	case SinkNone:
		return DiscardSink{}, nil
	}
	return nil, sidecar.Invalid("decision_log.sink", "unknown sink %q", cfg.Sink)
}
