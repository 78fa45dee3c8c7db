package api

import (
	"math"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults of the api config section.
const (
	DefaultMaxBodyBytes = 64 << 10
	DefaultPageSize     = 50
	DefaultMaxPageSize  = 500
	// A person or a script rarely writes more than a few times a second;
	// at this rate one caller needs hours to fill the events stream.
	DefaultWriteRate    = 3.0
	DefaultWriteBurst   = 30
	DefaultWriteCallers = 10000
)

// Config is the "api" section of Deputy's configuration.
type Config struct {
	MaxBodyBytes int64   `yaml:"max_body_bytes" usage:"largest management API request body (at most 16 MiB)"`
	PageSize     int     `yaml:"page_size" usage:"items per page when a list request names no limit"`
	MaxPageSize  int     `yaml:"max_page_size" usage:"largest page a list request may ask for"`
	WriteRate    float64 `yaml:"write_rate" usage:"management writes (POST, PUT, PATCH, DELETE) one caller (issuer and sub) may make per second on one replica; beyond it 429 rate_limited with Retry-After. Writes that narrow access (session ended, consent withdrawn, grant revoked, request rejected, share, subscription, assignment or customer deleted) are never refused and count nothing, unless they find nothing left to narrow"`
	WriteBurst   int     `yaml:"write_burst" usage:"management writes one caller may make at once before write_rate applies"`
	WriteCallers int     `yaml:"write_callers" usage:"callers whose write budget each replica remembers (least recently seen forgotten first)"`
}

// Defaults returns the config with every default set.
func Defaults() Config {
	var c Config
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *Config) SetDefaults() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.MaxPageSize == 0 {
		c.MaxPageSize = DefaultMaxPageSize
	}
	if c.WriteRate == 0 {
		c.WriteRate = DefaultWriteRate
	}
	if c.WriteBurst == 0 {
		c.WriteBurst = DefaultWriteBurst
	}
	if c.WriteCallers == 0 {
		c.WriteCallers = DefaultWriteCallers
	}
}

// Validate checks the section; errors name the field.
func (c Config) Validate() error {
	if c.MaxBodyBytes < 0 {
		return sidecar.Invalid("api.max_body_bytes", "must not be negative")
	}
	if c.MaxBodyBytes > 16<<20 {
		return sidecar.Invalid("api.max_body_bytes", "must be at most 16 MiB")
	}
	if c.PageSize < 0 {
		return sidecar.Invalid("api.page_size", "must not be negative")
	}
	if c.MaxPageSize < 0 {
		return sidecar.Invalid("api.max_page_size", "must not be negative")
	}
	if c.WriteRate < 0 || math.IsNaN(c.WriteRate) || math.IsInf(c.WriteRate, 0) {
		return sidecar.Invalid("api.write_rate", "must be a positive number")
	}
	if c.WriteBurst < 0 {
		return sidecar.Invalid("api.write_burst", "must not be negative")
	}
	if c.WriteCallers < 0 {
		return sidecar.Invalid("api.write_callers", "must not be negative")
	}
	if c.PageSize > 0 && c.MaxPageSize > 0 && c.PageSize > c.MaxPageSize {
		return sidecar.Invalid("api.page_size", "must not exceed api.max_page_size (%d)", c.MaxPageSize)
	}
	return nil
}
