package decisionlog

import (
	"bytes"
	"context"
	"io"
	"sync"

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

// AppendJSON adds one entry per encoded record in a single MULTI/EXEC:
// a connection lost mid-batch leaves none of it in the stream, so the
// retry repeats no record (only a reply lost after EXEC still can).
func (s *Stream) AppendJSON(ctx context.Context, batch [][]byte) error {
	if len(batch) == 0 {
		return nil
	}
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, b := range batch {
			p.XAdd(ctx, s.args([]any{RecordField, b}))
		}
		return nil
	})
	if err != nil {
		return sidecar.Unavailable("append to stream "+s.name, err)
	}
	return nil
}

// Range returns up to count entries from start ("-" for the oldest) on.
func (s *Stream) Range(ctx context.Context, start string, count int64) ([]redis.XMessage, error) {
	msgs, err := s.client.XRangeN(ctx, s.name, start, "+", count).Result()
	if err != nil {
		return nil, sidecar.Unavailable("read stream "+s.name, err)
	}
	return msgs, nil
}

// RedisSink writes decision records to a Redis stream, one pipelined
// XADD per batch.
type RedisSink struct{ stream *Stream }

// NewRedisSink returns a sink appending to the stream name, trimmed to
// about maxLen entries.
func NewRedisSink(client redis.UniversalClient, name string, maxLen int64) *RedisSink {
	return &RedisSink{stream: NewStream(client, name, maxLen)}
}

func (s *RedisSink) Write(ctx context.Context, batch [][]byte) error {
	return s.stream.AppendJSON(ctx, batch)
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
