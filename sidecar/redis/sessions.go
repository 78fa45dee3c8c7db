package redis

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Impersonation keys. Every key of Login as Customer — customer
// profiles, consent, sessions, their pointers, redeem codes and indexes —
// carries the one hash tag {imp}, so that a session start (customer not
// protected, consent granted, the staff member's old session ended, the new
// session and its redeem code stored) and a consent change (consent
// replaced, the sessions it no longer covers ended) are each one
// WATCH/MULTI/EXEC transaction on one slot, also in Redis Cluster. A
// per-customer tag cannot do this: a start touches the staff member's old
// session, which may belong to another customer, and the consent of the
// new one. The price is that this state lives on one Cluster node; it is
// small (profiles and consent per customer, a session per staff member and
// retention) and, on the check path, read through the local cache.
//
//	{imp}:customer:C     profile (JSON)
//	{imp}:deletions:C    its deletions (JSON: by, at, withdrawn; by at), each
//	                     kept sidecar.AppendOnceWindow past it
//	{imp}:staff          set of subjects that acted as staff
//	{imp}:consent:C      consent (JSON), TTL its expiry
//	{imp}:consenthist:C  consent history (list, newest first)
//	{imp}:sess:<id>      session record (JSON)
//	{imp}:tok:<hash>     → session id
//	{imp}:code:<hash>    redeem code → [session id, expiry]
//	{imp}:live           set of possibly live session ids (for the sweep)
//	{imp}:lapsing        customers whose consent was given until a time (by it)
//	{imp}:lapsed         consents taken from lapsing (JSON, by the taker's now),
//	                     kept sidecar.AppendOnceWindow past it
//	{imp}:ended          ids of the sessions ended (by their end), each kept
//	                     sidecar.AppendOnceWindow past it
//	{imp}:consentset     consents set (JSON, by their SetAt), each kept
//	                     sidecar.AppendOnceWindow past it
//	{imp}:live:a:A       set of A's possibly live session ids
//	{imp}:live:c:C       set of C's possibly live session ids
//	{imp}:slog, {imp}:slog:a:A, {imp}:slog:c:C  session log indexes; {imp}:slog
//	                     is also where SessionsStarted reads the starts back
//
// Records and pointers live until the session ended plus the retention,
// and the log indexes until their last session is forgotten;
// live sets are pruned of ended members in the transactions that read
// them; index members whose record is gone are skipped and dropped on read.

func (s *Store) imp(suffix string) string    { return s.prefix + ":{imp}:" + suffix }
func (s *Store) customerKey(c string) string { return s.imp("customer:" + c) }
func (s *Store) deletedKey(c string) string  { return s.imp("deletions:" + c) }
func (s *Store) staffKey() string            { return s.imp("staff") }

// spellingsKey is the hash of the ids that fold to c's FoldID and have a
// profile or a staff mark (see spellingProfile); in {imp} with them, so it
// is written in their transaction and read in GetCustomerState's round trip.
func (s *Store) spellingsKey(c string) string    { return s.imp("spellings:" + sidecar.FoldID(c)) }
func (s *Store) consentKey(c string) string      { return s.imp("consent:" + c) }
func (s *Store) consentHistKey(c string) string  { return s.imp("consenthist:" + c) }
func (s *Store) sessionKey(id string) string     { return s.imp("sess:" + id) }
func (s *Store) tokKey(hash string) string       { return s.imp("tok:" + hash) }
func (s *Store) codeKey(hash string) string      { return s.imp("code:" + hash) }
func (s *Store) liveKey() string                 { return s.imp("live") }
func (s *Store) lapsingKey() string              { return s.imp("lapsing") }
func (s *Store) lapsedKey() string               { return s.imp("lapsed") }
func (s *Store) endedKey() string                { return s.imp("ended") }
func (s *Store) consentsSetKey() string          { return s.imp("consentset") }
func (s *Store) liveActorKey(a string) string    { return s.imp("live:a:" + a) }
func (s *Store) liveCustomerKey(c string) string { return s.imp("live:c:" + c) }
func (s *Store) sessionLogKey(actor, customer string) string {
	switch {
	case customer != "":
		return s.imp("slog:c:" + customer)
	case actor != "":
		return s.imp("slog:a:" + actor)
	}
	return s.imp("slog")
}

// sessionLogKeys are the log indexes that list ss.
func (s *Store) sessionLogKeys(ss *sidecar.Session) []string {
	return []string{s.sessionLogKey("", ""), s.sessionLogKey(ss.Actor, ""), s.sessionLogKey("", ss.Customer)}
}

// setSession queues writing ss's record, kept until it is forgotten, and
// keeping its log indexes at least as long, in the same transaction (all
// in {imp}); it returns the record's TTL.
func (s *Store) setSession(ctx context.Context, p goredis.Pipeliner, ss *sidecar.Session) time.Duration {
	until := s.forgetAt(ss)
	for _, k := range s.sessionLogKeys(ss) {
		s.keepIndex(ctx, p, k, until)
	}
	ttl := s.ttl(until)
	p.Set(ctx, s.sessionKey(ss.ID), encode(ss), ttl)
	return ttl
}

// forgetAt is when an ended or expired session may be dropped.
func (s *Store) forgetAt(ss *sidecar.Session) time.Time {
	end := ss.ExpiresAt
	if !ss.EndedAt.IsZero() && ss.EndedAt.Before(end) {
		end = ss.EndedAt
	}
	return end.Add(s.cfg.Retention)
}

// getRecord reads a JSON record inside a transaction; nil when absent.
func getRecord[T any](ctx context.Context, tx *goredis.Tx, key string) (*T, error) {
	raw, err := tx.Get(ctx, key).Result()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil, nil
	case err != nil:
		return nil, unavailable(err)
	}
	return decode[T](raw)
}

// setSessions reads the members of a live set inside a transaction,
// watching their records: those want picks, and the ids to drop from the
// set (record gone, ended, or neither picked nor live at now).
func (s *Store) setSessions(ctx context.Context, tx *goredis.Tx, set string, now time.Time,
	want func(*sidecar.Session) bool) (picked []*sidecar.Session, stale []string, err error) {
	ids, err := tx.SMembers(ctx, set).Result()
	if err != nil || len(ids) == 0 {
		return nil, nil, rerr(err, "sessions")
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.sessionKey(id)
	}
	if err := tx.Watch(ctx, keys...).Err(); err != nil {
		return nil, nil, unavailable(err)
	}
	raws, err := tx.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, nil, unavailable(err)
	}
	for i, raw := range raws {
		str, ok := raw.(string)
		if !ok {
			stale = append(stale, ids[i])
			continue
		}
		ss, err := decode[sidecar.Session](str)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case !ss.EndedAt.IsZero():
			stale = append(stale, ids[i])
		case want(ss):
			picked = append(picked, ss)
		case !ss.Live(now):
			stale = append(stale, ids[i])
		}
	}
	return picked, stale, nil
}

// liveSessions is setSessions picking the sessions live at now.
func (s *Store) liveSessions(ctx context.Context, tx *goredis.Tx, set string, now time.Time) ([]*sidecar.Session, []string, error) {
	return s.setSessions(ctx, tx, set, now, func(ss *sidecar.Session) bool { return ss.Live(now) })
}

// queueEnds queues the writes that end sessions (already marked ended),
// appending them to out, and drops stale ids from set.
func (s *Store) queueEnds(ctx context.Context, p goredis.Pipeliner, set string, ended []*sidecar.Session, stale []string, out *[]sidecar.Session) {
	for _, ss := range ended {
		s.writeEnded(ctx, p, ss)
		*out = append(*out, *ss)
	}
	if len(stale) > 0 {
		p.SRem(ctx, set, stale)
	}
}

// writeEnded queues the writes that end ss (already marked ended),
// keeping its end in {imp}:ended for SessionsEnded.
func (s *Store) writeEnded(ctx context.Context, p goredis.Pipeliner, ss *sidecar.Session) {
	ttl := s.setSession(ctx, p, ss)
	p.SRem(ctx, s.liveKey(), ss.ID)
	p.SRem(ctx, s.liveActorKey(ss.Actor), ss.ID)
	p.SRem(ctx, s.liveCustomerKey(ss.Customer), ss.ID)
	if ss.TokenHash != "" {
		p.Expire(ctx, s.tokKey(ss.TokenHash), ttl)
	}
	kept := s.endedKey()
	p.ZAdd(ctx, kept, goredis.Z{Score: ms(ss.EndedAt), Member: ss.ID})
	p.ZRemRangeByScore(ctx, kept, "-inf", "("+strconv.FormatFloat(ms(ss.EndedAt.Add(-sidecar.AppendOnceWindow)), 'f', 0, 64))
	p.PExpire(ctx, kept, sidecar.AppendOnceWindow)
}

// SessionsEnded reads every end kept, scanLimit at a time: a sweep moves
// on past what it read, so one left out would never be recorded. The set
// holds an hour's ends at most.
func (s *Store) SessionsEnded(ctx context.Context, since time.Time) ([]sidecar.Session, error) {
	var out []sidecar.Session
	err := s.readKept(ctx, s.endedKey(), since, func(ids []string) error {
		kept, err := s.sessionsOf(ctx, ids)
		for _, ss := range kept {
			if !ss.EndedAt.IsZero() {
				out = append(out, *ss)
			}
		}
		return err
	})
	return out, err
}

// sessionsOf reads the sessions ids name in one MGET (the keys share
// {imp}), leaving out those forgotten.
func (s *Store) sessionsOf(ctx context.Context, ids []string) ([]*sidecar.Session, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.sessionKey(id)
	}
	raws, err := s.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]*sidecar.Session, 0, len(raws))
	for _, raw := range raws {
		str, ok := raw.(string)
		if !ok {
			continue // forgotten
		}
		ss, err := decode[sidecar.Session](str)
		if err != nil {
			return nil, err
		}
		out = append(out, ss)
	}
	return out, nil
}

// SessionsStarted reads the session log's index ({imp}:slog), which
// StartSession writes in the transaction that stores the session, from
// since on, scanLimit members at a time: a sweep moves on past what it
// read, so one left out would never be recorded.
func (s *Store) SessionsStarted(ctx context.Context, since time.Time) ([]sidecar.Session, error) {
	if edge := s.now().Add(-sidecar.AppendOnceWindow); !since.After(edge) {
		since = edge.Add(time.Nanosecond) // a start at the edge is past the window
	}
	var out []sidecar.Session
	lo := "[" + logBound(since)
	for {
		members, err := s.c.ZRangeByLex(ctx, s.sessionLogKey("", ""), &goredis.ZRangeBy{Min: lo, Max: "+", Count: scanLimit}).Result()
		if err != nil {
			return nil, unavailable(err)
		}
		if len(members) == 0 {
			return out, nil
		}
		ids := make([]string, len(members))
		for i, m := range members {
			ids[i], _ = splitMember(m)
		}
		kept, err := s.sessionsOf(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, ss := range kept {
			out = append(out, *ss)
		}
		if len(members) < int(scanLimit) {
			return out, nil
		}
		lo = "(" + members[len(members)-1]
	}
}

// readKept hands fn the members of a set kept for the once window (scored
// by time in ms) from since on, earliest first, scanLimit at a time, until
// none is left. Each read resumes at the last score read, skipping the
// members already handed at it: pruning the set's head between two reads
// moves no member past an offset.
func (s *Store) readKept(ctx context.Context, key string, since time.Time, fn func([]string) error) error {
	from := strconv.FormatFloat(ms(since), 'f', 0, 64)
	if edge := s.now().Add(-sidecar.AppendOnceWindow); !since.After(edge) {
		from = "(" + strconv.FormatFloat(ms(edge), 'f', 0, 64)
	}
	var atLast map[string]bool // members handed at the last score
	for {
		zs, err := s.c.ZRangeByScoreWithScores(ctx, key, &goredis.ZRangeBy{Min: from, Max: "+inf", Count: scanLimit + int64(len(atLast))}).Result()
		if err != nil {
			return unavailable(err)
		}
		members := make([]string, 0, len(zs))
		for _, z := range zs {
			if m, _ := z.Member.(string); !atLast[m] {
				members = append(members, m)
			}
		}
		if len(members) > 0 {
			if err := fn(members); err != nil {
				return err
			}
		}
		if len(members) == 0 || len(zs) < int(scanLimit)+len(atLast) {
			return nil
		}
		last := zs[len(zs)-1].Score
		if from != strconv.FormatFloat(last, 'f', 0, 64) {
			atLast = map[string]bool{}
		}
		for _, z := range zs {
			if z.Score == last {
				atLast[z.Member.(string)] = true
			}
		}
		from = strconv.FormatFloat(last, 'f', 0, 64)
	}
}

// publishEnded evicts the ended sessions from every replica's cache.
func (s *Store) publishEnded(ctx context.Context, ended []sidecar.Session) {
	if keys := endedKeys(ended); len(keys) > 0 {
		s.publish(ctx, keys...)
	}
}

// endedKeys are the invalidation keys of the ended sessions that were
// redeemed (a session without a token is cached nowhere).
func endedKeys(ended []sidecar.Session) []string {
	var keys []string
	for _, ss := range ended {
		if ss.TokenHash != "" {
			keys = append(keys, sidecar.SessionKey(ss.TokenHash))
		}
	}
	return keys
}

func (s *Store) StartSession(ctx context.Context, st sidecar.SessionStart) ([]sidecar.Session, error) {
	ss := st.Session
	if ss == nil || ss.ID == "" || ss.Customer == "" || ss.Actor == "" || st.CodeHash == "" {
		return nil, st.Check(s.now(), nil, nil, false)
	}
	if ss.TokenHash != "" {
		return nil, sidecar.Invalid("token_hash", "a new session has no token until redeemed")
	}
	var replaced []sidecar.Session
	key, code, liveActor := s.sessionKey(ss.ID), s.codeKey(st.CodeHash), s.liveActorKey(ss.Actor)
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		replaced = replaced[:0]
		now := s.now()
		// The store's time: the start moves back to it (StartNoLater),
		// and the sessions it replaces are judged at it.
		at, err := liveAt(ctx, tx, now)
		if err != nil {
			return err
		}
		st.MoveStart(at)
		cust, err := getRecord[sidecar.Customer](ctx, tx, s.customerKey(ss.Customer))
		if err != nil {
			return err
		}
		consent, err := getRecord[sidecar.Consent](ctx, tx, s.consentKey(ss.Customer))
		if err != nil {
			return err
		}
		staff, err := tx.SIsMember(ctx, s.staffKey(), ss.Customer).Result()
		if err != nil {
			return unavailable(err)
		}
		if err := st.Check(now, cust, consent, staff); err != nil {
			return err
		}
		if n, err := tx.Exists(ctx, key, code).Result(); err != nil {
			return unavailable(err)
		} else if n > 0 {
			return sidecar.Errorf(sidecar.ECONFLICT, "session id or redeem code in use")
		}
		var old []*sidecar.Session
		var stale []string
		if st.ReplaceLive {
			// Every session of the actor nobody ended, lapsed or not; which
			// lapsed is judged at at.
			if old, stale, err = s.setSessions(ctx, tx, liveActor, at, func(*sidecar.Session) bool { return true }); err != nil {
				return err
			}
		}
		member := logMember(ss.StartedAt, ss.ID, ss.Customer)
		prune := "(" + logBound(now.Add(-2*s.cfg.Retention))
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			for _, o := range old {
				st.Supersede(o, now, at)
			}
			s.queueEnds(ctx, p, liveActor, old, stale, &replaced)
			for _, k := range s.sessionLogKeys(ss) {
				s.addToIndex(ctx, p, k, member, prune, s.forgetAt(ss))
			}
			// Kept from at: a start moved back to it would otherwise
			// lose its redeem code that much early.
			p.Set(ctx, key, encode(ss), ttlFrom(s.forgetAt(ss), at))
			p.Set(ctx, code, encode(redeemRef{ss.ID, st.CodeExpiresAt}), ttlFrom(st.CodeExpiresAt, at))
			p.SAdd(ctx, s.liveKey(), ss.ID)
			p.SAdd(ctx, liveActor, ss.ID)
			p.SAdd(ctx, s.liveCustomerKey(ss.Customer), ss.ID)
			return nil
		})
		return err
	}, key, code, liveActor, s.customerKey(ss.Customer), s.consentKey(ss.Customer), s.staffKey())
	if err != nil {
		return nil, s.evictDespite(ctx, rerr(err, "session"), endedKeys(replaced)...)
	}
	return replaced, s.publishNarrowed(ctx, endedKeys(replaced)...)
}

func (s *Store) EndLapsedSessions(ctx context.Context, now time.Time, l sidecar.SessionLimits) ([]sidecar.Session, error) {
	return s.sweepLive(ctx, func(tx *goredis.Tx) ([]*sidecar.Session, []string, error) {
		lapsed, stale, err := s.setSessions(ctx, tx, s.liveKey(), now, func(ss *sidecar.Session) bool { return !ss.LiveWithin(now, l) })
		for _, ss := range lapsed {
			ss.EndLapsed(now, l)
		}
		return lapsed, stale, err
	})
}

// sweepLive ends, in one transaction on the live set, the sessions pick
// returns (marked ended) and drops the stale ids it returns; of
// concurrent sweepers each session goes to one.
func (s *Store) sweepLive(ctx context.Context, pick func(*goredis.Tx) ([]*sidecar.Session, []string, error)) ([]sidecar.Session, error) {
	key := s.liveKey()
	var ended []sidecar.Session
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		ended = ended[:0]
		ending, stale, err := pick(tx)
		if err != nil || len(ending)+len(stale) == 0 {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			s.queueEnds(ctx, p, key, ending, stale, &ended)
			return nil
		})
		return err
	}, key)
	if err != nil {
		return nil, s.evictDespite(ctx, rerr(err, "session"), endedKeys(ended)...)
	}
	s.publishEnded(ctx, ended)
	return ended, nil
}

func (s *Store) EndProtectedSessions(ctx context.Context, p sidecar.Protection, now time.Time) ([]sidecar.Session, error) {
	return s.sweepLive(ctx, func(tx *goredis.Tx) ([]*sidecar.Session, []string, error) {
		at, err := liveAt(ctx, tx, sidecar.LiveAt(now, s.now()))
		if err != nil {
			return nil, nil, err
		}
		live, _, err := s.liveSessions(ctx, tx, s.liveKey(), at) // stale ids are EndLapsedSessions' to drop
		if err != nil || len(live) == 0 {
			return nil, nil, err
		}
		var customers []string
		for _, ss := range live {
			if !slices.Contains(customers, ss.Customer) {
				customers = append(customers, ss.Customer)
			}
		}
		keys := make([]string, len(customers))
		for i, c := range customers {
			keys[i] = s.customerKey(c)
		}
		if err := tx.Watch(ctx, append(keys, s.staffKey())...).Err(); err != nil {
			return nil, nil, unavailable(err)
		}
		raws, err := tx.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, nil, unavailable(err)
		}
		staff, err := tx.SMIsMember(ctx, s.staffKey(), anys(customers)...).Result()
		if err != nil {
			return nil, nil, unavailable(err)
		}
		protected := map[string]bool{}
		for i, c := range customers {
			var cust *sidecar.Customer
			if raw, ok := raws[i].(string); ok {
				if cust, err = decode[sidecar.Customer](raw); err != nil {
					return nil, nil, err
				}
			}
			protected[c] = p.Protects(c, cust, staff[i])
		}
		var ending []*sidecar.Session
		for _, ss := range live {
			if protected[ss.Customer] {
				ss.EndedAt, ss.EndedBy, ss.EndReason = now, sidecar.SweepActor, sidecar.EndCustomerProtected
				ending = append(ending, ss)
			}
		}
		return ending, nil, nil
	})
}

func (s *Store) EndUnpermittedSessions(ctx context.Context, granting []string, now time.Time) ([]sidecar.Session, error) {
	return s.sweepLive(ctx, func(tx *goredis.Tx) ([]*sidecar.Session, []string, error) {
		at, err := liveAt(ctx, tx, sidecar.LiveAt(now, s.now()))
		if err != nil {
			return nil, nil, err
		}
		live, _, err := s.liveSessions(ctx, tx, s.liveKey(), at) // stale ids are EndLapsedSessions' to drop
		if err != nil {
			return nil, nil, err
		}
		var ending []*sidecar.Session
		for _, ss := range live {
			if !ss.ActorPermitted(granting) {
				ss.EndedAt, ss.EndedBy, ss.EndReason = now, sidecar.SweepActor, sidecar.EndActorNotPermitted
				ending = append(ending, ss)
			}
		}
		return ending, nil, nil
	})
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, v := range ss {
		out[i] = v
	}
	return out
}

func (s *Store) GetSession(ctx context.Context, id string) (*sidecar.Session, error) {
	raw, err := s.c.Get(ctx, s.sessionKey(id)).Result()
	if err != nil {
		return nil, rerr(err, "session")
	}
	return decode[sidecar.Session](raw)
}

func (s *Store) SessionByToken(ctx context.Context, tokenHash string) (*sidecar.Session, error) {
	if tokenHash == "" {
		return nil, notFound("session")
	}
	id, err := s.c.Get(ctx, s.tokKey(tokenHash)).Result()
	if err != nil {
		return nil, rerr(err, "session")
	}
	return s.GetSession(ctx, id)
}

// updateSession applies change to the session record atomically and
// returns the result; more queues writes that go with it. The record and
// Redis's clock (TIME, for judgedAt) are read in one round trip: change
// judges at the store's time without a read of its own.
func (s *Store) updateSession(ctx context.Context, id string, change func(ss *sidecar.Session, redisNow *goredis.TimeCmd) error,
	more func(goredis.Pipeliner, *sidecar.Session)) (*sidecar.Session, error) {
	key := s.sessionKey(id)
	var out *sidecar.Session
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		v, redisNow, err := getWithTime(ctx, tx, key, "session")
		if err != nil {
			return err
		}
		ss, err := decode[sidecar.Session](v)
		if err != nil {
			return err
		}
		if err := change(ss, redisNow); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			s.setSession(ctx, p, ss)
			if more != nil {
				more(p, ss)
			}
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

func (s *Store) RedeemSession(ctx context.Context, codeHash, tokenHash, host, redeemer string, l sidecar.SessionLimits) (*sidecar.Session, error) {
	if tokenHash == "" {
		return nil, sidecar.Invalid("token_hash", "token hash is required")
	}
	return s.takeCode(ctx, codeHash, tokenHash, host, redeemer, l)
}

// BurnRedeemCode takes the code as RedeemSession does and attaches nothing.
func (s *Store) BurnRedeemCode(ctx context.Context, codeHash string) (*sidecar.Session, error) {
	return s.takeCode(ctx, codeHash, "", "", "", sidecar.SessionLimits{})
}

// takeCode uses the redeem code up, whatever comes of it, in one
// transaction with attaching tokenHash and host to its session when it is
// redeemable by redeemer; with no tokenHash (a burn) nothing is attached.
func (s *Store) takeCode(ctx context.Context, codeHash, tokenHash, host, redeemer string, l sidecar.SessionLimits) (*sidecar.Session, error) {
	if codeHash == "" {
		return nil, notFound("redeem code")
	}
	burn := tokenHash == ""
	code, tok := s.codeKey(codeHash), s.tokKey(tokenHash)
	watched := []string{code, tok}
	if burn {
		watched = watched[:1]
	}
	var out *sidecar.Session
	var refused error
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		refused = nil
		ref, err := getRecord[redeemRef](ctx, tx, code)
		if err != nil {
			return err
		}
		if ref == nil {
			return notFound("redeem code")
		}
		key := s.sessionKey(ref.Session)
		if err := tx.Watch(ctx, key).Err(); err != nil {
			return unavailable(err)
		}
		ss, err := getRecord[sidecar.Session](ctx, tx, key)
		if err != nil {
			return err
		}
		var taken int64
		if !burn {
			if taken, err = tx.Exists(ctx, tok).Result(); err != nil {
				return unavailable(err)
			}
		}
		now := s.now()
		switch {
		case !now.Before(ref.Expires) || ss == nil:
			refused = notFound("redeem code")
		case burn:
		case redeemer != "" && redeemer != ss.Actor:
			refused = sidecar.RedeemActorMismatch()
		case ss.TokenHash != "":
			refused = sidecar.Errorf(sidecar.ECONFLICT, "session already redeemed")
		case !ss.LiveWithin(now, l):
			b := ss.Within(l)
			refused = sidecar.SessionOver(b.EndState(now))
		case taken > 0:
			refused = sidecar.Errorf(sidecar.ECONFLICT, "session token in use")
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Del(ctx, code) // used up, whatever the outcome
			if refused == nil && !burn {
				ss.TokenHash, ss.Host = tokenHash, host
				ttl := s.setSession(ctx, p, ss)
				p.Set(ctx, tok, ss.ID, ttl)
			}
			return nil
		})
		out = ss
		return err
	}, watched...)
	if err != nil {
		return nil, rerr(err, "redeem code")
	}
	if refused != nil {
		if sidecar.ErrorReason(refused) == sidecar.ReasonRedeemActorMismatch {
			return out, refused // the session, for the record of who opened the link
		}
		return nil, refused
	}
	if !burn {
		s.publish(ctx, sidecar.SessionKey(tokenHash))
	}
	return out, nil
}

// TouchSession takes the store's time (sidecar.Session.Touch) as the
// earlier of its clock and Redis's, read with the record (judgedAt).
func (s *Store) TouchSession(ctx context.Context, id string, at time.Time) error {
	_, err := s.updateSession(ctx, id, func(ss *sidecar.Session, redisNow *goredis.TimeCmd) error {
		now, err := judgedAt(s.now(), redisNow)
		if err != nil {
			return err
		}
		moved, err := ss.Touch(at, now)
		if err == nil && !moved {
			err = errUnchanged
		}
		return err
	}, nil)
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return err
}

func (s *Store) EndSession(ctx context.Context, id, by, reason string, at time.Time, l sidecar.SessionLimits) (*sidecar.Session, error) {
	var already, queued *sidecar.Session
	ss, err := s.updateSession(ctx, id, func(ss *sidecar.Session, redisNow *goredis.TimeCmd) error {
		if !ss.EndedAt.IsZero() {
			already = ss
			return errUnchanged
		}
		now, err := judgedAt(sidecar.LiveAt(at, s.now()), redisNow)
		if err != nil {
			return err
		}
		if !ss.EndLapsed(now, l) {
			ss.EndedAt, ss.EndedBy, ss.EndReason = at, by, reason
		}
		return nil
	}, func(p goredis.Pipeliner, ss *sidecar.Session) {
		queued = ss
		s.writeEnded(ctx, p, ss)
	})
	if already != nil {
		return already, nil
	}
	if err != nil {
		if queued != nil {
			err = s.evictDespite(ctx, err, endedKeys([]sidecar.Session{*queued})...)
		}
		return nil, err
	}
	return ss, s.publishNarrowed(ctx, endedKeys([]sidecar.Session{*ss})...)
}

func (s *Store) ListSessions(ctx context.Context, f sidecar.SessionFilter) ([]sidecar.Session, string, error) {
	index := s.sessionLogKey(f.Actor, f.Customer)
	now := s.now()
	var out []sidecar.Session
	next, err := s.scanIndex(ctx, index, f.CursorScope(), f.Cursor, f.From, f.To, true, f.N(), func(members []string) (int, bool, error) {
		keys := make([]string, len(members))
		for i, m := range members {
			id, _ := splitMember(m)
			keys[i] = s.sessionKey(id)
		}
		// One MGET (the keys share {imp}): a snapshot, so a live list never
		// mixes a session from before a start with one from after it.
		vals, err := s.c.MGet(ctx, keys...).Result()
		if err != nil {
			return 0, false, unavailable(err)
		}
		for i, v := range vals {
			raw, _ := v.(string)
			if raw == "" {
				s.c.ZRem(ctx, index, members[i]) // forgotten session
				continue
			}
			ss, err := decode[sidecar.Session](raw)
			if err != nil {
				return 0, false, err
			}
			if (f.Actor != "" && ss.Actor != f.Actor) || (f.Customer != "" && ss.Customer != f.Customer) ||
				(f.LiveOnly && !ss.LiveWithin(now, f.Limits)) {
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
// consumed; it stops consuming when it has a full page, or when it has
// consumed scanLimit members. The returned cursor resumes after the last
// consumed member, "" only at the end of the index: a read that stopped at
// scanLimit returns a cursor even with a short or empty page, so that a
// client following cursors never takes a cut list for the whole one.
// That member may be one the caller's filter dropped: the cursor is
// sealed for the list scope names (sealCursor), telling nothing of it.
func (s *Store) scanIndex(ctx context.Context, index, scope, cursor string, from, to time.Time, reverse bool, n int,
	take func([]string) (used int, full bool, err error)) (string, error) {
	lo, hi := "-", "+"
	if !from.IsZero() {
		lo = "[" + logBound(from)
	}
	if !to.IsZero() {
		hi = "(" + logBound(to)
	}
	if cursor != "" {
		m, err := s.openCursor(ctx, scope, cursor)
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
	read := func(count int64) ([]string, error) {
		rb := &goredis.ZRangeBy{Min: lo, Max: hi, Count: count}
		var members []string
		var err error
		if reverse {
			members, err = s.c.ZRevRangeByLex(ctx, index, rb).Result()
		} else {
			members, err = s.c.ZRangeByLex(ctx, index, rb).Result()
		}
		if err != nil {
			return nil, unavailable(err)
		}
		return members, nil
	}
	scanned, last := 0, ""
	for scanned < scanLimit {
		members, err := read(batch)
		if err != nil {
			return "", err
		}
		if len(members) == 0 {
			return "", nil
		}
		used, full, err := take(members)
		if err != nil {
			return "", err
		}
		scanned += used
		last = members[used-1]
		if full {
			if used == len(members) && int64(len(members)) < batch {
				return "", nil // page full and index exhausted
			}
			return s.sealCursor(ctx, scope, last)
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
	// Stopped at scanLimit: resume after last, unless nothing is left.
	if more, err := read(1); err != nil {
		return "", err
	} else if len(more) == 0 {
		return "", nil
	}
	return s.sealCursor(ctx, scope, last)
}

// ---- redeem codes ------------------------------------------------------------

type redeemRef struct {
	Session string    `json:"s"`
	Expires time.Time `json:"exp"`
}
