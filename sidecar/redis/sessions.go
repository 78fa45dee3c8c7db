package redis

import (
	"context"
	"errors"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Session keys:
//
//	{cust:C}:session:<id>  the record (JSON)
//	{cust:C}:sessions      log index of C's sessions (sorted set, by start)
//	{sid:<id>}             → C
//	{tok:<hash>}           → [C, id]
//	{actor:A}:sessions     log index of A's sessions
//	sessions               log index of all sessions
//	{code:<hash>}          redeem code → [session id, expiry]
//
// Records and pointers live until the session ended plus the retention;
// index members whose record is gone are skipped and dropped on read.

func (s *Store) sessionKey(customer, id string) string { return s.cust(customer, "session:"+id) }
func (s *Store) sidKey(id string) string               { return s.tagged("sid", id, "") }
func (s *Store) tokKey(hash string) string             { return s.tagged("tok", hash, "") }
func (s *Store) codeKey(hash string) string            { return s.tagged("code", hash, "") }
func (s *Store) globalSessions() string                { return s.prefix + ":sessions" }

// forgetAt is when an ended or expired session may be dropped.
func (s *Store) forgetAt(ss *sidecar.Session) time.Time {
	end := ss.ExpiresAt
	if !ss.EndedAt.IsZero() && ss.EndedAt.Before(end) {
		end = ss.EndedAt
	}
	return end.Add(s.cfg.Retention)
}

type tokenRef struct {
	Customer string `json:"c"`
	ID       string `json:"id"`
}

func (s *Store) CreateSession(ctx context.Context, ss *sidecar.Session) error {
	switch {
	case ss.ID == "":
		return sidecar.Invalid("id", "session id is required")
	case ss.Customer == "":
		return sidecar.Invalid("customer", "customer is required")
	}
	ttl := s.ttl(s.forgetAt(ss))
	ok, err := s.c.SetNX(ctx, s.sidKey(ss.ID), ss.Customer, ttl).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return sidecar.Errorf(sidecar.ECONFLICT, "session %s exists", ss.ID)
	}
	if ss.TokenHash != "" {
		ok, err := s.c.SetNX(ctx, s.tokKey(ss.TokenHash), encode(tokenRef{ss.Customer, ss.ID}), ttl).Result()
		if err != nil {
			return unavailable(err)
		}
		if !ok {
			s.c.Del(ctx, s.sidKey(ss.ID))
			return sidecar.Errorf(sidecar.ECONFLICT, "session token in use")
		}
	}
	member := logMember(ss.StartedAt, ss.ID, ss.Customer)
	prune := logBound(s.now().Add(-2 * s.cfg.Retention))
	_, err = s.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, s.sessionKey(ss.Customer, ss.ID), encode(ss), ttl)
		p.ZAdd(ctx, s.cust(ss.Customer, "sessions"), goredis.Z{Member: member})
		p.ZRemRangeByLex(ctx, s.cust(ss.Customer, "sessions"), "-", "("+prune)
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range []string{s.tagged("actor", ss.Actor, "sessions"), s.globalSessions()} {
			p.ZAdd(ctx, k, goredis.Z{Member: member})
			p.ZRemRangeByLex(ctx, k, "-", "("+prune)
		}
		return nil
	})
	return rerr(err, "session")
}

// locate finds the customer a session id belongs to.
func (s *Store) locate(ctx context.Context, id string) (string, error) {
	c, err := s.c.Get(ctx, s.sidKey(id)).Result()
	return c, rerr(err, "session")
}

func (s *Store) readSession(ctx context.Context, customer, id string) (*sidecar.Session, error) {
	raw, err := s.c.Get(ctx, s.sessionKey(customer, id)).Result()
	if err != nil {
		return nil, rerr(err, "session")
	}
	return decode[sidecar.Session](raw)
}

func (s *Store) GetSession(ctx context.Context, id string) (*sidecar.Session, error) {
	c, err := s.locate(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.readSession(ctx, c, id)
}

func (s *Store) SessionByToken(ctx context.Context, tokenHash string) (*sidecar.Session, error) {
	if tokenHash == "" {
		return nil, notFound("session")
	}
	raw, err := s.c.Get(ctx, s.tokKey(tokenHash)).Result()
	if err != nil {
		return nil, rerr(err, "session")
	}
	ref, err := decode[tokenRef](raw)
	if err != nil {
		return nil, err
	}
	return s.readSession(ctx, ref.Customer, ref.ID)
}

// updateSession applies change to the session record atomically and
// returns the result.
func (s *Store) updateSession(ctx context.Context, id string, change func(*sidecar.Session) error) (*sidecar.Session, error) {
	c, err := s.locate(ctx, id)
	if err != nil {
		return nil, err
	}
	key := s.sessionKey(c, id)
	var out *sidecar.Session
	err = s.watch(ctx, func(tx *goredis.Tx) error {
		raw, err := tx.Get(ctx, key).Result()
		if err != nil {
			return rerr(err, "session")
		}
		ss, err := decode[sidecar.Session](raw)
		if err != nil {
			return err
		}
		if err := change(ss); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Set(ctx, key, encode(ss), s.ttl(s.forgetAt(ss)))
			return nil
		})
		out = ss
		return err
	}, key)
	if err != nil {
		return nil, rerr(err, "session")
	}
	return out, nil
}

var errUnchanged = errors.New("unchanged")

func (s *Store) SetSessionToken(ctx context.Context, id, tokenHash string) error {
	if tokenHash == "" {
		return sidecar.Invalid("token_hash", "token hash is required")
	}
	c, err := s.locate(ctx, id)
	if err != nil {
		return err
	}
	cur, err := s.readSession(ctx, c, id)
	if err != nil {
		return err
	}
	if cur.TokenHash != "" {
		return sidecar.Errorf(sidecar.ECONFLICT, "session already redeemed")
	}
	// Claim the token pointer first: a hash collision or a second redeem
	// racing this one loses here.
	ok, err := s.c.SetNX(ctx, s.tokKey(tokenHash), encode(tokenRef{c, id}), s.ttl(s.forgetAt(cur))).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return sidecar.Errorf(sidecar.ECONFLICT, "session token in use")
	}
	_, err = s.updateSession(ctx, id, func(ss *sidecar.Session) error {
		now := s.now()
		switch {
		case ss.TokenHash != "":
			return sidecar.Errorf(sidecar.ECONFLICT, "session already redeemed")
		case !ss.Live(now):
			return sidecar.Errorf(sidecar.ECONFLICT, "session is %s", ss.EndState(now))
		}
		ss.TokenHash = tokenHash
		return nil
	})
	if err != nil {
		s.c.Del(context.WithoutCancel(ctx), s.tokKey(tokenHash))
		return err
	}
	s.publish(ctx, sidecar.SessionKey(tokenHash))
	return nil
}

func (s *Store) TouchSession(ctx context.Context, id string, at time.Time) error {
	_, err := s.updateSession(ctx, id, func(ss *sidecar.Session) error {
		if !at.After(ss.LastSeen) {
			return errUnchanged
		}
		ss.LastSeen = at
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

func (s *Store) EndSession(ctx context.Context, id, by, reason string, at time.Time) (*sidecar.Session, error) {
	var already bool
	ss, err := s.updateSession(ctx, id, func(ss *sidecar.Session) error {
		if !ss.EndedAt.IsZero() {
			already = true
			return errUnchanged
		}
		ss.EndedAt, ss.EndedBy, ss.EndReason = at, by, reason
		return nil
	})
	if already {
		return s.GetSession(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	// The pointers now expire with the record.
	ttl := s.ttl(s.forgetAt(ss))
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.Expire(ctx, s.sidKey(id), ttl)
		if ss.TokenHash != "" {
			p.Expire(ctx, s.tokKey(ss.TokenHash), ttl)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("shorten session pointers", "session", id, "err", err)
	}
	if ss.TokenHash != "" {
		s.publish(ctx, sidecar.SessionKey(ss.TokenHash))
	}
	return ss, nil
}

func (s *Store) ListSessions(ctx context.Context, f sidecar.SessionFilter) ([]sidecar.Session, string, error) {
	index := s.globalSessions()
	switch {
	case f.Customer != "":
		index = s.cust(f.Customer, "sessions")
	case f.Actor != "":
		index = s.tagged("actor", f.Actor, "sessions")
	}
	now := s.now()
	var out []sidecar.Session
	next, err := s.scanIndex(ctx, index, f.Cursor, f.From, f.To, true, f.N(), func(members []string) (int, bool, error) {
		keys := make([]string, len(members))
		for i, m := range members {
			id, c := splitMember(m)
			keys[i] = s.sessionKey(c, id)
		}
		raws, err := s.getMany(ctx, keys)
		if err != nil {
			return 0, false, err
		}
		for i, raw := range raws {
			if raw == "" {
				s.c.ZRem(ctx, index, members[i]) // forgotten session
				continue
			}
			ss, err := decode[sidecar.Session](raw)
			if err != nil {
				return 0, false, err
			}
			if (f.Actor != "" && ss.Actor != f.Actor) || (f.Customer != "" && ss.Customer != f.Customer) ||
				(f.LiveOnly && !ss.Live(now)) {
				continue
			}
			out = append(out, *ss)
			if len(out) == f.N() {
				return i + 1, true, nil
			}
		}
		return len(members), false, nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}

// getMany reads string keys, in any slots; missing keys read as "".
func (s *Store) getMany(ctx context.Context, keys []string) ([]string, error) {
	cmds := make([]*goredis.StringCmd, len(keys))
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, unavailable(err)
	}
	out := make([]string, len(keys))
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, goredis.Nil):
		case err != nil:
			return nil, unavailable(err)
		default:
			out[i] = v
		}
	}
	return out, nil
}

// scanIndex walks a log index (members from logMember) in time order —
// newest first when reverse — from the cursor, within [from, to), handing
// batches to take, which returns how many members of the batch it
// consumed; it stops consuming when it has a full page. The returned
// cursor resumes after the last consumed member, "" at the end.
func (s *Store) scanIndex(ctx context.Context, index, cursor string, from, to time.Time, reverse bool, n int,
	take func([]string) (used int, full bool, err error)) (string, error) {
	lo, hi := "-", "+"
	if !from.IsZero() {
		lo = "[" + logBound(from)
	}
	if !to.IsZero() {
		hi = "(" + logBound(to)
	}
	if cursor != "" {
		m, err := decodeCursor(cursor)
		if err != nil {
			return "", err
		}
		if reverse {
			if hi == "+" || m < hi[1:] {
				hi = "(" + m
			}
		} else if lo == "-" || m > lo[1:] {
			lo = "(" + m
		}
	}
	batch := int64(min(max(2*n, 20), sidecar.MaxPageLimit))
	scanned := 0
	for scanned < scanLimit {
		var members []string
		var err error
		rb := &goredis.ZRangeBy{Min: lo, Max: hi, Count: batch}
		if reverse {
			members, err = s.c.ZRevRangeByLex(ctx, index, rb).Result()
		} else {
			members, err = s.c.ZRangeByLex(ctx, index, rb).Result()
		}
		if err != nil {
			return "", unavailable(err)
		}
		if len(members) == 0 {
			return "", nil
		}
		used, full, err := take(members)
		if err != nil {
			return "", err
		}
		scanned += used
		last := members[used-1]
		if full {
			if used == len(members) && int64(len(members)) < batch {
				return "", nil // page full and index exhausted
			}
			return encodeCursor(last), nil
		}
		if int64(len(members)) < batch {
			return "", nil // index exhausted
		}
		if reverse {
			hi = "(" + last
		} else {
			lo = "(" + last
		}
	}
	return "", nil
}

// ---- redeem codes ------------------------------------------------------------

type redeemRef struct {
	Session string    `json:"s"`
	Expires time.Time `json:"exp"`
}

func (s *Store) PutRedeemCode(ctx context.Context, codeHash, sessionID string, expiresAt time.Time) error {
	if codeHash == "" {
		return sidecar.Invalid("code_hash", "code hash is required")
	}
	ok, err := s.c.SetNX(ctx, s.codeKey(codeHash), encode(redeemRef{sessionID, expiresAt}), s.ttl(expiresAt)).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return sidecar.Errorf(sidecar.ECONFLICT, "redeem code in use")
	}
	return nil
}

func (s *Store) TakeRedeemCode(ctx context.Context, codeHash string) (string, error) {
	raw, err := s.c.GetDel(ctx, s.codeKey(codeHash)).Result()
	if err != nil {
		return "", rerr(err, "redeem code")
	}
	ref, err := decode[redeemRef](raw)
	if err != nil {
		return "", err
	}
	if !s.now().Before(ref.Expires) {
		return "", notFound("redeem code")
	}
	return ref.Session, nil
}
