package decisionlog

import (
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Sink names accepted in Config.Sink.
const (
	SinkStdout = "stdout"
	SinkRedis  = "redis"
	SinkNone   = "none"
)

// Defaults.
const (
	DefaultQueueSize     = 10000
	DefaultBatchSize     = 100
	DefaultFlushInterval = 250 * time.Millisecond
	DefaultStream        = "deputy:decisions"
	DefaultMaxLen        = 1_000_000
	DefaultBackoffMin    = 100 * time.Millisecond
	DefaultBackoffMax    = 5 * time.Second
)

// Config is the decision_log section of Deputy's configuration.
type Config struct {
	// Sink is where records go: stdout (JSON lines), redis (a stream) or none.
	Sink string `yaml:"sink"`
	// QueueSize bounds the records waiting for the sink; past it new
	// records are dropped and counted.
	QueueSize int `yaml:"queue_size"`
	// BatchSize is how many records one write to the sink carries.
	BatchSize int `yaml:"batch_size"`
	// FlushInterval is how long a partial batch waits for company.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// Stream and MaxLen name the Redis stream and its approximate length.
	Stream string `yaml:"stream"`
	MaxLen int64  `yaml:"max_len"`
	// IncludeInput keeps the (masked) policy input in each record.
	IncludeInput bool `yaml:"include_input"`
	// MaskHeaders are request headers erased from the logged input in
	// addition to authorization, cookie and the actor-token header.
	MaskHeaders []string `yaml:"mask_headers"`
	// ActorTokenHeader is the header carrying Deputy's actor token.
	ActorTokenHeader string `yaml:"actor_token_header"`
	// BackoffMin and BackoffMax bound the wait between failed writes.
	BackoffMin time.Duration `yaml:"backoff_min"`
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// Defaults returns the configuration Deputy starts with.
func Defaults() Config {
	return Config{
		Sink:             SinkStdout,
		QueueSize:        DefaultQueueSize,
		BatchSize:        DefaultBatchSize,
		FlushInterval:    DefaultFlushInterval,
		Stream:           DefaultStream,
		MaxLen:           DefaultMaxLen,
		IncludeInput:     true,
		ActorTokenHeader: "x-deputy-token",
		BackoffMin:       DefaultBackoffMin,
		BackoffMax:       DefaultBackoffMax,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch c.Sink {
	case SinkStdout, SinkRedis, SinkNone:
	default:
		return sidecar.Invalid("decision_log.sink", "must be stdout, redis or none, not %q", c.Sink)
	}
	if c.QueueSize < 1 {
		return sidecar.Invalid("decision_log.queue_size", "must be at least 1")
	}
	if c.BatchSize < 1 || c.BatchSize > c.QueueSize {
		return sidecar.Invalid("decision_log.batch_size", "must be between 1 and queue_size (%d)", c.QueueSize)
	}
	if c.FlushInterval <= 0 {
		return sidecar.Invalid("decision_log.flush_interval", "must be positive")
	}
	if c.Stream == "" {
		return sidecar.Invalid("decision_log.stream", "must not be empty")
	}
	if c.MaxLen < 0 {
		return sidecar.Invalid("decision_log.max_len", "must not be negative (0 keeps everything)")
	}
	if c.ActorTokenHeader == "" {
		return sidecar.Invalid("decision_log.actor_token_header", "must not be empty")
	}
	for i, h := range c.MaskHeaders {
		if h == "" {
			return sidecar.Invalid("decision_log.mask_headers", "entry %d is empty", i)
		}
	}
	if c.BackoffMin <= 0 {
		return sidecar.Invalid("decision_log.backoff_min", "must be positive")
	}
	if c.BackoffMax < c.BackoffMin {
		return sidecar.Invalid("decision_log.backoff_max", "must be at least backoff_min")
	}
	return nil
}
