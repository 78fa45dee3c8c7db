package redis

import (
	"context"
	"errors"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// cursorSealer is the key list cursors are sealed with, as this replica
// read it from Redis.
type cursorSealer struct {
	key string
	c   *sidecar.Cursors
}

// cursorKeyKey holds the key every replica seals list cursors with: made
// once (SET NX) by the first replica to need it, without expiry, so that
// a cursor one replica answered opens on any other. Losing it (a flush,
// an allkeys eviction policy) only refuses the cursors sealed before:
// their callers start the list again.
func (s *Store) cursorKeyKey() string { return s.prefix + ":cursor-key" }

// cursorKey returns the sealer of the key in Redis, reading it (and
// making it, when there is none) on first use, or when reload says the
// one held may be stale.
func (s *Store) cursorKey(ctx context.Context, reload bool) (*cursorSealer, error) {
	if held := s.sealer.Load(); held != nil && !reload {
		return held, nil
	}
	key, err := s.c.Get(ctx, s.cursorKeyKey()).Result()
	if errors.Is(err, goredis.Nil) {
		fresh := string(sidecar.NewCursorKey())
		if held := s.sealer.Load(); held != nil {
			fresh = held.key // a lost key comes back as this replica's, so its open lists resume
		}
		if err = s.c.SetNX(ctx, s.cursorKeyKey(), fresh, 0).Err(); err == nil {
			key, err = s.c.Get(ctx, s.cursorKeyKey()).Result()
		}
	}
	if err != nil {
		return nil, unavailable(err)
	}
	if held := s.sealer.Load(); held != nil && held.key == key {
		return held, nil
	}
	c, err := sidecar.NewCursors([]byte(key))
	if err != nil {
		return nil, sidecar.Unavailable("state store unavailable", fmt.Errorf("%s: %w", s.cursorKeyKey(), err))
	}
	sl := &cursorSealer{key: key, c: c}
	s.sealer.Store(sl)
	return sl, nil
}

// sealCursor makes the cursor that resumes the list scope names after
// member: whatever member is (one the caller's filter dropped, in a read
// that stopped at scanLimit), the cursor tells nothing of it.
func (s *Store) sealCursor(ctx context.Context, scope, member string) (string, error) {
	sl, err := s.cursorKey(ctx, false)
	if err != nil {
		return "", err
	}
	return sl.c.Seal(scope, member), nil
}

// openCursor returns the member a cursor of the list scope names. One
// that does not open with the key held is tried again with the key in
// Redis, which another replica may have made after this one read its
// own (when the key was lost).
func (s *Store) openCursor(ctx context.Context, scope, cursor string) (string, error) {
	sl, err := s.cursorKey(ctx, false)
	if err != nil {
		return "", err
	}
	m, err := sl.c.Open(scope, cursor)
	if err == nil {
		return m, nil
	}
	again, rerr := s.cursorKey(ctx, true)
	if rerr != nil {
		return "", rerr
	}
	if again == sl {
		return "", err
	}
	return again.c.Open(scope, cursor)
}
