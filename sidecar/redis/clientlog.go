package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// DefaultClientLogInterval is how often one kind of go-redis message
// reaches the log at warn level: during an outage go-redis reports every
// failed dial, many per second.
const DefaultClientLogInterval = time.Minute

// maxClientLogKinds bounds the message kinds tracked; later kinds share
// one interval.
const maxClientLogKinds = 64

// ClientLogger writes go-redis's internal log (redis.SetLogger) through
// slog, so it reads like the rest of Deputy's log and stays bounded: the
// first message of a kind (its format string) is logged at warn level,
// then at most one per interval, with held_back: how many like it were held
// back; the ones in between go to debug level. Whether state is usable is
// told by the state-lookup breaker's own lines, once per outage.
type ClientLogger struct {
	log   *slog.Logger
	every time.Duration
	now   sidecar.Clock

	mu    sync.Mutex
	kinds map[string]*clientLogKind
}

type clientLogKind struct {
	last     time.Time
	repeated int
}

// NewClientLogger logs go-redis messages to log, each kind at most once
// per every at warn level.
func NewClientLogger(log *slog.Logger, every time.Duration, now sidecar.Clock) *ClientLogger {
	return &ClientLogger{log: log, every: every, now: now, kinds: make(map[string]*clientLogKind)}
}

// Printf is go-redis's logging interface.
func (l *ClientLogger) Printf(ctx context.Context, format string, v ...any) {
	l.mu.Lock()
	k := l.kinds[format]
	if k == nil {
		if len(l.kinds) >= maxClientLogKinds {
			format = ""
		}
		if k = l.kinds[format]; k == nil {
			k = &clientLogKind{}
			l.kinds[format] = k
		}
	}
	now := l.now()
	warn := k.last.IsZero() || now.Sub(k.last) >= l.every
	repeated := k.repeated
	if warn {
		k.last, k.repeated = now, 0
	} else {
		k.repeated++
	}
	l.mu.Unlock()

	level := slog.LevelWarn
	if !warn {
		level = slog.LevelDebug
	}
	if !l.log.Enabled(ctx, level) {
		return
	}
	detail := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	attrs := []slog.Attr{slog.String("detail", detail)}
	if warn && repeated > 0 {
		attrs = append(attrs, slog.Int("held_back", repeated))
	}
	l.log.LogAttrs(ctx, level, "redis client", attrs...)
}
