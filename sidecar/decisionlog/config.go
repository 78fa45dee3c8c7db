package decisionlog

import (
	"strings"
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
	DefaultQueueSize = 10000
	// DefaultMaxQueueBytes keeps a queue of large inputs from holding
	// more than a few megabytes: 10,000 records of 10 KiB each would be
	// 100 MB.
	DefaultMaxQueueBytes = 8 << 20
	// MinMaxQueueBytes keeps room for a few records with large inputs.
	MinMaxQueueBytes     = 64 << 10
	DefaultBatchSize     = 100
	DefaultFlushInterval = 250 * time.Millisecond
	// DefaultFlushTimeout leaves a full queue time for its batches to a
	// healthy Redis, and with the default shutdown_timeout (15 s) stays
	// inside Kubernetes' default termination grace period (30 s).
	DefaultFlushTimeout = 5 * time.Second
	DefaultStream       = "deputy:decisions"
	// DefaultMaxLen caps the stream's length when stream_max_bytes would
	// allow more (max_len is what stream_max_bytes leaves beside the
	// once-set, divided by max_record_bytes, by default).
	DefaultMaxLen = 1_000_000
	// DefaultStreamMaxBytes is what the redis sink may take of the Redis
	// that also holds delegation state: the stream's entries times
	// max_record_bytes (a client can make every record that large), plus
	// the once-set of dedup_max_ids ids, must fit in it. At the default
	// max_record_bytes it holds 16,139 records.
	DefaultStreamMaxBytes = 1 << 30
	DefaultBackoffMin     = 100 * time.Millisecond
	// DefaultStatsInterval keeps the stream's figures as fresh as a
	// common scrape interval, for one short script per replica.
	DefaultStatsInterval = 15 * time.Second
	DefaultBackoffMax    = 5 * time.Second
	DefaultSpoolMaxBytes = 256 << 20
	// DefaultDedupWindow covers a retry from memory and a restart that
	// writes the spool again; MaxDedupWindow bounds what it may cost.
	DefaultDedupWindow = 10 * time.Minute
	MaxDedupWindow     = 24 * time.Hour
	// DefaultDedupMaxIDs holds the batches in flight of many replicas
	// writing one stream (each keeps about one batch in the once-set)
	// for 16 MB of Redis (DedupIDBytes each); a smaller stream_max_bytes
	// gives it a sixteenth of itself by default.
	DefaultDedupMaxIDs = 100_000
	// MinSpoolMaxBytes keeps a spool at least a few batches deep.
	MinSpoolMaxBytes = 64 << 10

	DefaultActorTokenHeader = "x-deputy-token"

	// DefaultMaxRecordBytes holds an ordinary record many times over (a
	// storefront request's is 2-4 KiB) while staying under what log
	// shippers take as one line.
	DefaultMaxRecordBytes = 64 << 10
	// MinMaxRecordBytes leaves room for a record without its input, every
	// field at its cut length (see Record.dropInput).
	MinMaxRecordBytes = 8 << 10
	// MaxMaxRecordBytes keeps a spooled record within what the spool reads
	// at once, so the spool never has to skip one.
	MaxMaxRecordBytes = readChunk / 2
)

// Config is the decision_log section of Deputy's configuration.
type Config struct {
	Sink string `yaml:"sink" usage:"where decision records go: stdout (JSON lines), redis (a stream) or none"`
	// Past QueueSize new records are dropped and counted.
	QueueSize int `yaml:"queue_size" usage:"records waiting for the sink; past it new records are dropped and counted"`
	// MaxQueueBytes bounds memory too: a record keeps its input, so the
	// record bound alone does not. A record whose input does not fit
	// waits without it (oversized); one that does not fit even so is
	// dropped and counted.
	MaxQueueBytes int64         `yaml:"max_queue_bytes" usage:"estimated memory of the records waiting for the sink (input included); a new record that does not fit with its input is queued without it (input_dropped: oversized, counted), and one that does not fit even so is dropped and counted"`
	BatchSize     int           `yaml:"batch_size" usage:"records one write to the sink carries"`
	FlushInterval time.Duration `yaml:"flush_interval" usage:"how long a partial batch waits before it is written"`
	FlushTimeout  time.Duration `yaml:"flush_timeout" usage:"on shutdown, once the listeners stopped (whatever shutdown_timeout they used): how long queued records may take to reach the sink; then they go to the spool, or are dropped and counted (0: the default)"`
	Stream        string        `yaml:"stream" usage:"Redis stream of the redis sink (default: <redis.key_prefix>:decisions)"`
	MaxLen        int64         `yaml:"max_len" usage:"approximate length the Redis stream is trimmed to (default: what stream_max_bytes holds of max_record_bytes records beside dedup_max_ids ids, at most 1,000,000); with the redis sink max_len × max_record_bytes must fit in stream_max_bytes with them. The stream is a ring any client rotates: every check, an anonymous one too, adds a record and pushes the oldest out, so a burst of requests erases the records before it; deputy_decision_log_stream_oldest_age_seconds says how far back it reaches (the chart's alert DeputyDecisionLogShort: a sudden fall of it while full) and deputy_decision_log_stream_trimmed_total how many records it discarded"`
	// StatsInterval paces the reads behind the stream's metrics (see
	// Logger.StreamStats).
	StatsInterval time.Duration `yaml:"stats_interval" usage:"how often the redis sink's stream is read for the deputy_decision_log_stream_* metrics (its length, the records trimming discarded, the age of the oldest one kept); a scrape never waits on Redis"`
	// StreamMaxBytes bounds the stream in bytes, not only in entries: a
	// client chooses how large each record is, up to MaxRecordBytes.
	StreamMaxBytes int64 `yaml:"stream_max_bytes" usage:"memory the redis sink may take of Redis at most, whatever clients send: its stream (max_len × max_record_bytes) and the decision ids it keeps to write each record once (dedup_max_ids × 160 bytes); a redis sink whose two together are larger is refused at start"`
	// IncludeInput is a pointer so that an explicit false survives
	// SetDefaults; read it with InputIncluded.
	IncludeInput *bool    `yaml:"include_input" usage:"keep the masked policy input in each record"`
	MaskHeaders  []string `yaml:"mask_headers" usage:"request headers erased from logged input (each read in any case with _ as -, as CGI, PHP and WSGI upstreams read it), besides the actor token header, identity.header, the header carriers of identity.credential_carriers, authorization, proxy-authorization, cookie, x-api-key, x-auth-token, x-access-token, x-csrf-token, x-xsrf-token, x-amz-security-token and every header whose name holds token, secret, session, sessid, password, passwd, cookie, api-key, apikey, credential, signature, assertion, oidc, userinfo, dpop, samlresponse, samlart, hmac, bearer, passcode or passphrase, the word sid, pwd, pw, pswd, psw, pass, passw, pword, cred, creds, key, jwt, sig, ticket, otp, totp, hotp, mfa, 2fa, pin, verifier, cvv or cvc (camelCase words too, and a lower-case word ending in one or in auth, or in one and a plural s, as Envoy and HTTP/2 deliver AppKey: appkey, accesskey, accesskeys, passkey, userpass, basicauth, bypass, but not monkey, turkey, hockey, turnkey, spin, hairpin, compass, overpass, surpass, trespass, sacred or oauth, nor a plural alone such as keys or tickets; one beginning with pwd, passw, pword, otp, totp, mfa, 2fa, cvv or cvc), the word sk (stripe_sk, not task, desk, skip or sku), pan, ssn or iban (not span or company), a card, cc, account or routing number or a credit card, a verification, verify, security, reset, recovery, backup, login, access, activation, confirmation, sms, email, (two) factor, one-time, invite or invitation code, a magic, login or reset link (written apart or as one word), or a word beginning with auth (not authority or author), in any case and _/-/. spelling; the OAuth state and nonce and the PKCE code_challenge stay in clear"`
	// MaskQueryParams: nil takes the defaults; an empty list masks none
	// unless the logger is given query carriers (WithCredentialCarriers).
	MaskQueryParams  []string      `yaml:"mask_query_params" usage:"query parameters that carry credentials, besides the query carriers of identity.credential_carriers and those named as the headers of mask_headers are; their values are masked in the logged path (;name=value path parameters too), URI headers (x-original-url and referer among them) and parsed_query (empty, with no query carrier either: no query masking at all)"`
	ActorTokenHeader string        `yaml:"actor_token_header" usage:"header carrying Deputy's actor token, erased from logged input (default: check.actor_token_header); read in any case with _ as -, as CGI, PHP and WSGI upstreams read it"`
	BackoffMin       time.Duration `yaml:"backoff_min" usage:"first wait after a failed write to the sink"`
	BackoffMax       time.Duration `yaml:"backoff_max" usage:"longest wait between failed writes to the sink"`
	SpoolDir         string        `yaml:"spool_dir" usage:"directory where records wait on disk while the sink is down, kept across restarts (empty: no spool)"`
	SpoolMaxBytes    int64         `yaml:"spool_max_bytes" usage:"bound of the on-disk spool; past it records wait in the queue, and past that are dropped and counted"`
	// DedupWindow and DedupMaxIDs bound what the redis sink keeps to
	// write each record once (see RedisSink).
	DedupWindow time.Duration `yaml:"dedup_window" usage:"how long the redis sink remembers a decision id it wrote whose batch is not known delivered (its reply was lost, or the spool did not acknowledge it), so a batch written again (at once, from the spool, in parts, or by the next process) skips the records Redis already took; a retry later than the window may write a record twice, under its one decision_id"`
	DedupMaxIDs int64         `yaml:"dedup_max_ids" usage:"decision ids the redis sink keeps at most for dedup_window, counted in stream_max_bytes at 160 bytes each: the last batch of each replica and those whose reply was lost; past it the oldest are forgotten, and their retry may write a record twice (default: 100,000, or what a sixteenth of stream_max_bytes holds if less)"`
	// MaxRecordBytes bounds what a client can make Deputy write per
	// check: the path, query and headers it sends all reach the record.
	MaxRecordBytes int `yaml:"max_record_bytes" usage:"largest encoded record; a larger one is written without its input (input_dropped: oversized), its fields cut, and counted"`
}

// DefaultMaskQueryParams are the query parameters that commonly carry
// credentials (OAuth tokens, codes and client secrets, API keys,
// passwords, a refresh token named refresh). Names secretName matches
// are masked besides these.
func DefaultMaskQueryParams() []string {
	return []string{"access_token", "refresh_token", "id_token", "token", "code", "client_secret", "secret",
		"password", "passwd", "api_key", "apikey", "refresh"}
}

// Defaults returns the configuration Deputy starts with.
func Defaults() Config {
	var c Config
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *Config) SetDefaults() {
	if c.Sink == "" {
		c.Sink = SinkStdout
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxQueueBytes == 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = DefaultFlushTimeout
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.MaxRecordBytes == 0 {
		c.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if c.StreamMaxBytes == 0 {
		c.StreamMaxBytes = DefaultStreamMaxBytes
	}
	if c.DedupMaxIDs == 0 {
		c.DedupMaxIDs = max(1, min(DefaultDedupMaxIDs, c.StreamMaxBytes/16/DedupIDBytes))
	}
	// Whatever the sink (it may be set after Defaults): a redis sink's
	// stream then fits stream_max_bytes, beside its once-set, at
	// max_record_bytes per record.
	if c.MaxLen == 0 && c.MaxRecordBytes > 0 {
		c.MaxLen = max(1, min(DefaultMaxLen, c.streamBytes()/int64(c.MaxRecordBytes)))
	}
	if c.MaskQueryParams == nil {
		c.MaskQueryParams = DefaultMaskQueryParams()
	}
	if c.IncludeInput == nil {
		c.IncludeInput = new(true)
	}
	if c.ActorTokenHeader == "" {
		c.ActorTokenHeader = DefaultActorTokenHeader
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
}

// streamBytes is what stream_max_bytes leaves the redis sink's stream
// beside its once-set; negative when the set alone passes it.
func (c Config) streamBytes() int64 {
	if c.DedupMaxIDs > c.StreamMaxBytes/DedupIDBytes {
		return -1 // and no overflow
	}
	return c.StreamMaxBytes - c.DedupMaxIDs*DedupIDBytes
}

// InputIncluded reports whether records keep the policy input.
func (c Config) InputIncluded() bool { return c.IncludeInput == nil || *c.IncludeInput }

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
	if c.MaxQueueBytes < MinMaxQueueBytes {
		return sidecar.Invalid("decision_log.max_queue_bytes", "must be at least %d", MinMaxQueueBytes)
	}
	if c.BatchSize < 1 || c.BatchSize > c.QueueSize {
		return sidecar.Invalid("decision_log.batch_size", "must be between 1 and queue_size (%d)", c.QueueSize)
	}
	if c.FlushInterval <= 0 {
		return sidecar.Invalid("decision_log.flush_interval", "must be positive")
	}
	if c.FlushTimeout <= 0 {
		return sidecar.Invalid("decision_log.flush_timeout", "must be positive")
	}
	if c.Stream == "" {
		return sidecar.Invalid("decision_log.stream", "must not be empty")
	}
	if c.Sink == SinkRedis && strings.Contains(c.Stream, "}") && !hasHashTag(c.Stream) {
		// The sink keeps a key beside the stream, in its Cluster slot.
		return sidecar.Invalid("decision_log.stream", "a name holding '}' must carry a hash tag ({tag}), not %q", c.Stream)
	}
	if c.MaxLen < 0 {
		return sidecar.Invalid("decision_log.max_len", "must not be negative")
	}
	if c.StatsInterval <= 0 {
		return sidecar.Invalid("decision_log.stats_interval", "must be positive")
	}
	if err := sidecar.InvalidHeaderName("decision_log.actor_token_header", c.ActorTokenHeader); err != nil {
		return err
	}
	for i, h := range c.MaskHeaders {
		if h == "" {
			return sidecar.Invalid("decision_log.mask_headers", "entry %d is empty", i)
		}
		if err := sidecar.InvalidHeaderNameEntry("decision_log.mask_headers", i, h); err != nil {
			return err
		}
	}
	if c.BackoffMin <= 0 {
		return sidecar.Invalid("decision_log.backoff_min", "must be positive")
	}
	if c.BackoffMax < c.BackoffMin {
		return sidecar.Invalid("decision_log.backoff_max", "must be at least backoff_min")
	}
	if c.SpoolMaxBytes < MinSpoolMaxBytes {
		return sidecar.Invalid("decision_log.spool_max_bytes", "must be at least %d", MinSpoolMaxBytes)
	}
	if c.DedupWindow < time.Second || c.DedupWindow > MaxDedupWindow {
		return sidecar.Invalid("decision_log.dedup_window", "must be between 1s and %s", MaxDedupWindow)
	}
	if c.MaxRecordBytes < MinMaxRecordBytes || c.MaxRecordBytes > MaxMaxRecordBytes {
		return sidecar.Invalid("decision_log.max_record_bytes", "must be between %d and %d", MinMaxRecordBytes, MaxMaxRecordBytes)
	}
	if c.StreamMaxBytes < int64(c.MaxRecordBytes) {
		return sidecar.Invalid("decision_log.stream_max_bytes", "must hold at least one record of max_record_bytes (%d)", c.MaxRecordBytes)
	}
	if c.DedupMaxIDs < 1 {
		return sidecar.Invalid("decision_log.dedup_max_ids", "must be positive")
	}
	if c.Sink != SinkRedis {
		return nil
	}
	if c.DedupMaxIDs < int64(c.BatchSize) {
		// A batch whose reply was lost must stay whole in the set.
		return sidecar.Invalid("decision_log.dedup_max_ids", "must hold at least one batch (batch_size %d)", c.BatchSize)
	}
	rest := c.streamBytes()
	if rest < int64(c.MaxRecordBytes) {
		return sidecar.Invalid("decision_log.dedup_max_ids", "%d ids of %d bytes and one record of max_record_bytes (%d) must fit in stream_max_bytes (%d): lower dedup_max_ids or raise stream_max_bytes",
			c.DedupMaxIDs, DedupIDBytes, c.MaxRecordBytes, c.StreamMaxBytes)
	}
	// Divided rather than multiplied: max_len × max_record_bytes may
	// overflow.
	if c.MaxLen > rest/int64(c.MaxRecordBytes) {
		return sidecar.Invalid("decision_log.max_len", "%d records of up to max_record_bytes (%d) may take %d MiB of Redis, over what stream_max_bytes (%d MiB) leaves beside dedup_max_ids (%d MiB): lower max_len (at most %d) or max_record_bytes, or raise stream_max_bytes",
			c.MaxLen, c.MaxRecordBytes, c.MaxLen*int64(c.MaxRecordBytes)>>20, c.StreamMaxBytes>>20, c.DedupMaxIDs*DedupIDBytes>>20, rest/int64(c.MaxRecordBytes))
	}
	return nil
}
