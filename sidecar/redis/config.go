package redis

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults.
const (
	DefaultKeyPrefix    = "deputy"
	DefaultDialTimeout  = 2 * time.Second
	DefaultReadTimeout  = 500 * time.Millisecond
	DefaultWriteTimeout = 500 * time.Millisecond
	DefaultEventsMaxLen = 100_000
	// The events stream's hard cap defaults to this many times its length.
	DefaultEventsHardFactor = 10
	DefaultAuditMaxLen      = 1_000_000
	// DefaultAuditSelfMaxLen bounds the self-service records of the audit
	// trail (sidecar.AuditEntry.SelfService), kept in a stream of their own.
	DefaultAuditSelfMaxLen = 1_000_000
	DefaultRetention       = 90 * 24 * time.Hour
	// One retry: a check that needs state while Redis is down should fail
	// closed fast, not wait out go-redis's default retries and dial backoff.
	DefaultMaxRetries = 1
	// DefaultInvalidationAckTimeout is how long a narrowing write waits
	// for every replica to confirm its invalidation before it answers 503.
	DefaultInvalidationAckTimeout = 2 * time.Second
	// DefaultNarrowingReplicas waits, after a narrowing write, for one
	// replica of the master that took it, when that master had any at
	// its last reading.
	DefaultNarrowingReplicas = NarrowingReplicasAuto
	// DefaultNarrowingReplicaTimeout bounds that wait: a replica on the
	// same network acknowledges within a round trip.
	DefaultNarrowingReplicaTimeout = 300 * time.Millisecond
)

// NarrowingReplicasAuto is the narrowing_replicas setting that waits for
// one replica where the master had one at its last reading, none where
// it had none.
const NarrowingReplicasAuto = "auto"

// Connection buffers. go-redis gives every connection 32 KiB to read and
// 32 KiB to write, and pipeline connections 128 KiB each way: sized for
// bulk traffic, while a sidecar's commands and replies are a few hundred
// bytes (a session, a grant, a set member) and its pipelines a decision-log
// batch. A burst of cache misses (every stream of a fresh load asking for
// the same session at once) leaves a dozen idle connections in the pool,
// and their buffers stay on the heap, whose goal is a multiple of it.
// Longer replies still read whole (bufio refills); a larger batch flushes
// in more writes.
const (
	connBufferBytes          = 4 << 10
	pipelineWriteBufferBytes = 32 << 10
	pipelinePoolSize         = 2
)

// Config is the `redis` section. Redis is used when Addrs is set; the
// embedded memory store otherwise.
type Config struct {
	Addrs      []string `yaml:"addrs" usage:"Redis addresses, host:port (not URLs: the password goes in redis.password): one node; Sentinel addresses with master_name; seed nodes with cluster (empty: embedded store)"`
	MasterName string   `yaml:"master_name" usage:"Sentinel master name"`
	Cluster    bool     `yaml:"cluster" usage:"addrs are Redis Cluster seed nodes"`
	Username   string   `yaml:"username" usage:"Redis ACL user name; needs redis.password"`
	Password   string   `yaml:"password" usage:"Redis password (prefer the environment variable)"`
	DB         int      `yaml:"db" usage:"Redis database number (single node and Sentinel only)"`

	TLS                   bool   `yaml:"tls" usage:"connect to Redis over TLS"`
	TLSCAFile             string `yaml:"tls_ca_file" usage:"PEM CA bundle that verifies the Redis server (default: the system roots)"`
	TLSServerName         string `yaml:"tls_server_name" usage:"server name expected in the Redis certificate (default: the host of the address)"`
	TLSInsecureSkipVerify bool   `yaml:"tls_insecure_skip_verify" usage:"do not verify the Redis certificate (dev mode only)"`

	DialTimeout  time.Duration `yaml:"dial_timeout" usage:"time allowed to connect to Redis"`
	ReadTimeout  time.Duration `yaml:"read_timeout" usage:"time allowed for a Redis reply"`
	WriteTimeout time.Duration `yaml:"write_timeout" usage:"time allowed to send a Redis command"`
	PoolSize     int           `yaml:"pool_size" usage:"connections per Redis node (0: 10 per CPU)"`
	MaxRetries   int           `yaml:"max_retries" usage:"retries of a failed Redis command (-1: none); not of a decision-log sink write, which the decision log writes again itself"`

	KeyPrefix        string        `yaml:"key_prefix" usage:"prefix of every Redis key Deputy writes"`
	EventsMaxLen     int64         `yaml:"events_maxlen" usage:"approximate length the events stream is trimmed to, keeping what a consumer group has not acknowledged (XACK)"`
	EventsHardMaxLen int64         `yaml:"events_hard_maxlen" usage:"length past which the events stream drops entries a consumer group has not acknowledged, counted in deputy_events_dropped_total (0: 10 times events_maxlen)"`
	AuditMaxLen      int64         `yaml:"audit_maxlen" usage:"approximate length the audit stream (staff, partner and reseller actions) is trimmed to"`
	AuditSelfMaxLen  int64         `yaml:"audit_self_maxlen" usage:"approximate length the stream of self-service audit records (accounts acting on their own side: own consent, partner requests, approvals, shares) is trimmed to, apart from the audit stream"`
	Retention        time.Duration `yaml:"retention" usage:"how long ended sessions and decided access requests are kept (at most 876000h, 100 years)"`

	RequireAOF bool `yaml:"require_aof" usage:"fail readiness (/readyz and the probes, as redis_aof) while a Redis master reports AOF off (appendonly no): a restart from an RDB snapshot undoes answered revocations, consent withdrawals and assignment removals, with their audit entries and events; deputy_redis_aof_enabled and a warning report it either way"`

	InvalidationAckTimeout time.Duration `yaml:"invalidation_ack_timeout" usage:"how long a write that narrows access (session ended, consent withdrawn, grant revoked, assignment removed...) waits for every replica to confirm it dropped the cached state; past it the write stands but answers 503 eviction_unpublished, to be retried"`

	NarrowingReplicas       string        `yaml:"narrowing_replicas" usage:"how many Redis replicas of the master that took a write narrowing access must acknowledge it (WAIT) before it is answered as done; fewer within narrowing_replica_timeout answer 503, to be retried, as a failover may undo it: auto waits for one where that master had a replica connected at the last reading (INFO replication, every 30s), none where it had none or was not read; 0 never waits"`
	NarrowingReplicaTimeout time.Duration `yaml:"narrowing_replica_timeout" usage:"how long a write that narrows access waits for narrowing_replicas Redis replicas to acknowledge it"`
}

// Defaults returns the config with every unset field at its default.
func (c Config) Defaults() Config {
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *Config) SetDefaults() {
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.EventsMaxLen == 0 {
		c.EventsMaxLen = DefaultEventsMaxLen
	}
	if c.EventsHardMaxLen == 0 {
		c.EventsHardMaxLen = DefaultEventsHardFactor * c.EventsMaxLen
	}
	if c.AuditMaxLen == 0 {
		c.AuditMaxLen = DefaultAuditMaxLen
	}
	if c.AuditSelfMaxLen == 0 {
		c.AuditSelfMaxLen = DefaultAuditSelfMaxLen
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.InvalidationAckTimeout == 0 {
		c.InvalidationAckTimeout = DefaultInvalidationAckTimeout
	}
	if c.NarrowingReplicas == "" {
		c.NarrowingReplicas = DefaultNarrowingReplicas
	}
	if c.NarrowingReplicaTimeout == 0 {
		c.NarrowingReplicaTimeout = DefaultNarrowingReplicaTimeout
	}
}

// narrowingReplicas is narrowing_replicas: n, or auto. It trusts a
// validated config.
func (c Config) narrowingReplicas() (n int, auto bool) {
	if c.NarrowingReplicas == NarrowingReplicasAuto {
		return 0, true
	}
	n, _ = strconv.Atoi(c.NarrowingReplicas)
	return n, false
}

// Remote reports whether an address is not on loopback: what crosses the
// network to it travels in clear without TLS.
func (c Config) Remote() bool {
	for _, a := range c.Addrs {
		if host, _, err := net.SplitHostPort(a); err != nil || !sidecar.LoopbackHost(host) {
			return true
		}
	}
	return false
}

// Enabled reports whether Redis is configured.
func (c Config) Enabled() bool { return len(c.Addrs) > 0 }

// Validate checks a defaulted config; errors name the field. A config
// without addresses is valid: Redis is simply not used.
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.RequireAOF {
			// The embedded store keeps state in this process only: a
			// restart loses all of it, which no AOF can prevent.
			return sidecar.Invalid("redis.require_aof", "needs redis.addrs: the embedded store keeps state in memory only")
		}
		return nil
	}
	switch {
	case c.Cluster && c.MasterName != "":
		return sidecar.Invalid("redis.master_name", "cannot be combined with redis.cluster")
	case len(c.Addrs) > 1 && !c.Cluster && c.MasterName == "":
		return sidecar.Invalid("redis.addrs", "several addresses need redis.cluster or redis.master_name")
	case c.Cluster && c.DB != 0:
		return sidecar.Invalid("redis.db", "Redis Cluster has only db 0")
	case c.DB < 0:
		return sidecar.Invalid("redis.db", "must not be negative")
	case c.DialTimeout < 0:
		return sidecar.Invalid("redis.dial_timeout", "must not be negative")
	case c.ReadTimeout < 0:
		return sidecar.Invalid("redis.read_timeout", "must not be negative")
	case c.WriteTimeout < 0:
		return sidecar.Invalid("redis.write_timeout", "must not be negative")
	case c.MaxRetries < -1:
		return sidecar.Invalid("redis.max_retries", "must be -1 (none) or more")
	case c.PoolSize < 0:
		return sidecar.Invalid("redis.pool_size", "must not be negative")
	case c.EventsMaxLen < 0:
		return sidecar.Invalid("redis.events_maxlen", "must not be negative")
	case c.EventsHardMaxLen < c.EventsMaxLen:
		return sidecar.Invalid("redis.events_hard_maxlen", "must be at least redis.events_maxlen (%d)", c.EventsMaxLen)
	case c.AuditMaxLen < 0:
		return sidecar.Invalid("redis.audit_maxlen", "must not be negative")
	case c.AuditSelfMaxLen < 0:
		return sidecar.Invalid("redis.audit_self_maxlen", "must not be negative")
	case c.Retention < 0:
		return sidecar.Invalid("redis.retention", "must not be negative")
	case c.Retention > sidecar.MaxSpan:
		// The session log and request indexes are pruned at twice it.
		return sidecar.Invalid("redis.retention", "must be at most %dh (100 years)", sidecar.MaxSpan/time.Hour)
	case c.InvalidationAckTimeout < 0:
		return sidecar.Invalid("redis.invalidation_ack_timeout", "must not be negative")
	case c.NarrowingReplicas != "" && c.NarrowingReplicas != NarrowingReplicasAuto && !nonNegativeInt(c.NarrowingReplicas):
		return sidecar.Invalid("redis.narrowing_replicas", "must be auto or a number of replicas (0: none), not %q", c.NarrowingReplicas)
	case c.NarrowingReplicaTimeout < 0 || c.NarrowingReplicaTimeout > 0 && c.NarrowingReplicaTimeout < time.Millisecond:
		// WAIT counts in milliseconds, and WAIT 0 would wait for ever
		// (0 here takes the default).
		return sidecar.Invalid("redis.narrowing_replica_timeout", "must be at least 1ms")
	case strings.ContainsAny(c.KeyPrefix, "{}"):
		return sidecar.Invalid("redis.key_prefix", "must not contain hash tag braces")
	case c.Username != "" && c.Password == "":
		// go-redis sends no AUTH without a password: the client would
		// connect as the default user.
		return sidecar.Invalid("redis.password", "redis.username needs a password")
	case !c.TLS && (c.TLSCAFile != "" || c.TLSServerName != "" || c.TLSInsecureSkipVerify):
		return sidecar.Invalid("redis.tls", "TLS options are set but redis.tls is false")
	}
	for i, a := range c.Addrs {
		if err := validAddr(i, a); err != nil {
			return err
		}
	}
	if c.TLSCAFile != "" {
		if _, err := os.Stat(c.TLSCAFile); err != nil {
			return sidecar.Invalid("redis.tls_ca_file", "%v", err)
		}
	}
	return nil
}

func (c Config) options() (*goredis.UniversalOptions, error) {
	o := &goredis.UniversalOptions{
		Addrs:         c.Addrs,
		MasterName:    c.MasterName,
		IsClusterMode: c.Cluster,
		Username:      c.Username,
		Password:      c.Password,
		DB:            c.DB,
		DialTimeout:   c.DialTimeout,
		ReadTimeout:   c.ReadTimeout,
		WriteTimeout:  c.WriteTimeout,
		PoolSize:      c.PoolSize,
		MaxRetries:    c.MaxRetries,

		ReadBufferSize:          connBufferBytes,
		WriteBufferSize:         connBufferBytes,
		PipelineReadBufferSize:  connBufferBytes,
		PipelineWriteBufferSize: pipelineWriteBufferBytes,
		PipelinePoolSize:        pipelinePoolSize,
		// One dial attempt per try: retries already cover a flaky dial.
		DialerRetries:      1,
		DialerRetryTimeout: 10 * time.Millisecond,
		// A caller's deadline (a check's state budget) bounds the wait for
		// a reply, not only read_timeout.
		ContextTimeoutEnabled: true,
	}
	if c.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName, InsecureSkipVerify: c.TLSInsecureSkipVerify} //nolint:gosec // opt-in, named in config
		if c.TLSCAFile != "" {
			pem, err := os.ReadFile(c.TLSCAFile)
			if err != nil {
				return nil, sidecar.Invalid("redis.tls_ca_file", "%v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, sidecar.Invalid("redis.tls_ca_file", "no PEM certificates in %s", c.TLSCAFile)
			}
			tc.RootCAs = pool
		}
		o.TLSConfig = tc
	}
	return o, nil
}

// validAddr checks that entry i of redis.addrs is host:port. A URL
// (redis://:password@host:port) or user@host is refused without being
// repeated: its userinfo is a password, which the dial errors logged
// while it fails would otherwise repeat on every attempt.
func validAddr(i int, a string) error {
	if strings.Contains(a, "://") || strings.Contains(a, "@") {
		return sidecar.Invalid("redis.addrs", "entry %d is a URL or user@host, not host:port: "+
			"give the password in redis.password (DEPUTY_REDIS_PASSWORD) and the user in redis.username", i)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || strings.IndexFunc(host, notHostByte) >= 0 || port == "" || strings.IndexFunc(port, notDigit) >= 0 {
		// Not repeated: what a host:port cannot hold (a query, a path, a
		// port that is no number) may be a password put in the wrong
		// place.
		return sidecar.Invalid("redis.addrs", "entry %d is not host:port (a name or IP address, a colon and a port number); "+
			"give the password in redis.password (DEPUTY_REDIS_PASSWORD)", i)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return sidecar.Invalid("redis.addrs", "entry %d: %q has no port between 1 and 65535", i, a)
	}
	return nil
}

// notHostByte reports a rune no host name, IPv4 or IPv6 address (with a
// zone) holds.
func notHostByte(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-_:%", r))
}

func notDigit(r rune) bool { return r < '0' || r > '9' }

func nonNegativeInt(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0
}
