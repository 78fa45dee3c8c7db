package api

import "github.com/deputyhq/deputy/sidecar"

// Defaults of the api config section.
const (
	DefaultMaxBodyBytes = 64 << 10
	DefaultPageSize     = 50
	DefaultMaxPageSize  = 500
)

// Config is the "api" section of Deputy's configuration.
type Config struct {
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	PageSize     int   `yaml:"page_size"`
	MaxPageSize  int   `yaml:"max_page_size"`
}

// Defaults returns the config with every default set.
func Defaults() Config {
	return Config{MaxBodyBytes: DefaultMaxBodyBytes, PageSize: DefaultPageSize, MaxPageSize: DefaultMaxPageSize}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.PageSize <= 0 {
		c.PageSize = d.PageSize
	}
	if c.MaxPageSize <= 0 {
		c.MaxPageSize = d.MaxPageSize
	}
	return c
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
	if c.PageSize > 0 && c.MaxPageSize > 0 && c.PageSize > c.MaxPageSize {
		return sidecar.Invalid("api.page_size", "must not exceed api.max_page_size (%d)", c.MaxPageSize)
	}
	return nil
}
