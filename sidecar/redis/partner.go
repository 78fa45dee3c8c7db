package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// Partner keys:
//
//	{req:<id>}                 access request record
//	{cust:C}:requests          log index of requests to C
//	{porg:O}:requests          log index of requests from partner org O; both
//	                           kept until their last request is forgotten
//	{cust:C}:grants            hash: "<org>\x00<user>" → grant (user "" = organisation)
//	{cust:C}:grants:exp        sorted set: same fields by expiry (ms), to expire fields
//	{cust:C}:grants:closed     sorted set: ids of C's requests that issue no more grants,
//	                           by when the request is forgotten (ms)
//	{cust:C}:grants:held       hash: "<org>\x00<user>" → JSON [[until ms, level], …], the
//	                           holds the user's revoked or replaced individual
//	                           grants left (sidecar.Hold; an entry [seq, until ms],
//	                           written before holds had a level, holds the user
//	                           back from every organisation grant); kept until
//	                           the last one lapses
//	{cust:C}:grants:seq        hash: "<org>" → last Seq taken for O's access to C;
//	                           "<org>\x00<user>" → Seq of the grant last written or revoked
//	                           there. Kept 2×retention past its last change (every
//	                           request whose Seq it ordered is forgotten by then), and
//	                           at least retention past the expiry of every grant and
//	                           hold it stamped: never shortened, so it cannot restart
//	                           below a Seq still compared
//	{porg:O}:grants            sorted set: "C\x00<user>" by expiry, for "My Customers"
//	grants:expiry              sorted set: "C\x00<org>\x00<user>" by expiry, for "expiring soon"
//	partner:decided            sorted set: ids of requests by their decision, or by
//	                           the marking of their approval recorded if later (ms),
//	                           for RequestsDecided; kept sidecar.AppendOnceWindow
//	partner:revoked            sorted set: "C\x00<grant id>" by revocation (ms), for
//	                           GrantsRevoked; kept sidecar.AppendOnceWindow
//	partner:requested          sorted set: ids of requests by their creation (ms), for
//	                           RequestsCreated; kept sidecar.AppendOnceWindow
//	partner:shared             sorted set: customers by their last share put or
//	                           removed (ms), for SharesChanged; kept
//	                           sidecar.AppendOnceWindow
//	{cust:C}:shares            hash: "<org>\x00<user>\x00<resource>" → share (see shareField)
//	{cust:C}:shares:removed    hash: same fields → the share as last removed, for
//	                           RemovedShares; kept sidecar.AppendOnceWindow past the
//	                           last removal
//	{cust:C}:shares:kept       sorted set: shares as put and as removed (JSON) by the
//	                           time of the change (ms), written with it, for
//	                           SharesChanged; each kept sidecar.AppendOnceWindow
//	{cust:C}:subs              hash: "<user>\x00<kind>" → subscription
//	{puser:U}:subs             set: "C\x00<kind>"
//	                           (a subscription's user is the subscriber key the
//	                           delegation package makes: "<org>\x00<user>", or
//	                           "<org>/<user>" as stored before, still read)

func (s *Store) reqKey(id string) string { return s.tagged("req", id, "") }
func (s *Store) grantsExpiry() string    { return s.prefix + ":grants:expiry" }
func (s *Store) decidedKey() string      { return s.prefix + ":partner:decided" }
func (s *Store) revokesKey() string      { return s.prefix + ":partner:revoked" }
func (s *Store) requestedKey() string    { return s.prefix + ":partner:requested" }
func (s *Store) sharedKey() string       { return s.prefix + ":partner:shared" }

// keepChange keeps member in the set key at at, for a sweep to read back
// (readKept) for sidecar.AppendOnceWindow: never earlier than it was kept
// at before, and forgetting what the window left behind. The set lies in
// another slot than the change, so it is written before the change: a
// fault in between keeps a change not made, which the sweep reading it
// finds not made, never a change made without its mark.
func (s *Store) keepChange(ctx context.Context, key, member string, at time.Time) error {
	return s.keepChanges(ctx, key, []goredis.Z{{Score: ms(at), Member: member}})
}

// keepChanges keeps several members as keepChange keeps one, each at its
// score (ms).
func (s *Store) keepChanges(ctx context.Context, key string, zs []goredis.Z) error {
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.ZAddArgs(ctx, key, goredis.ZAddArgs{GT: true, Members: zs})
		p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatFloat(ms(s.now().Add(-sidecar.AppendOnceWindow)), 'f', 0, 64))
		p.PExpire(ctx, key, sidecar.AppendOnceWindow)
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// How long a narrowing write waits for its mark (keepChangeAhead), and
// how long the mark may go on after that.
const (
	markWait    = 100 * time.Millisecond
	markTimeout = time.Second
)

// keepChangeAhead keeps member as keepChange does, for a write that
// narrows access: the write waits for its mark at most markWait, then
// goes ahead while the mark goes on, on its own deadline. The mark lies
// in another slot, on another node of a Cluster: that node slow or gone
// must not hold back a revocation, nor turn it into a 503 with the grant
// still live. A mark that fails, or lands after the write, leaves the
// write's records to the Recorder and to a retry of the write, as before
// marks were kept. Failures are logged with msg and args.
func (s *Store) keepChangeAhead(ctx context.Context, key, member string, at time.Time, msg string, args ...any) {
	s.keepChangesAhead(ctx, key, []goredis.Z{{Score: ms(at), Member: member}}, msg, args...)
}

// keepChangesAhead keeps several members as keepChangeAhead keeps one.
func (s *Store) keepChangesAhead(ctx context.Context, key string, zs []goredis.Z, msg string, args ...any) {
	done := make(chan struct{})
	s.marks.RLock()
	go func() {
		defer s.marks.RUnlock()
		defer close(done)
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
		defer cancel()
		if err := s.keepChanges(mctx, key, zs); err != nil {
			s.log.Warn(msg, append(args, "err", err)...)
		}
	}()
	wait := time.NewTimer(markWait)
	defer wait.Stop()
	select {
	case <-done:
	case <-wait.C:
	case <-ctx.Done():
	}
}

func field(a, b string) string { return a + "\x00" + b }

// ---- access requests ---------------------------------------------------------

func (s *Store) requestForgetAt(r *sidecar.AccessRequest) time.Time {
	end := r.PendingExpiresAt
	if !r.DecidedAt.IsZero() {
		end = r.DecidedAt
	}
	return end.Add(s.cfg.Retention)
}

// requestIndexes are the log indexes that list r.
func (s *Store) requestIndexes(r *sidecar.AccessRequest) []string {
	return []string{s.cust(r.Customer, "requests"), s.tagged("porg", r.PartnerOrg, "requests")}
}

// keepRequestIndexes keeps r's log indexes at least until r's record is
// forgotten, before the record's TTL is set to that: the indexes lie in
// other slots than the record, outside its transaction, and in this order
// a fault in between leaves an index longer than its record, never
// shorter. A transaction that then retries keeps them again.
func (s *Store) keepRequestIndexes(ctx context.Context, r *sidecar.AccessRequest) error {
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range s.requestIndexes(r) {
			s.keepIndex(ctx, p, k, s.requestForgetAt(r))
		}
		return nil
	})
	if err != nil {
		return unavailable(err)
	}
	return nil
}

func (s *Store) CreateRequest(ctx context.Context, r *sidecar.AccessRequest) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := s.keepChange(ctx, s.requestedKey(), r.ID, r.CreatedAt); err != nil {
		return err
	}
	ok, err := s.c.SetNX(ctx, s.reqKey(r.ID), encode(r), s.ttl(s.requestForgetAt(r))).Result()
	if err != nil {
		return unavailable(err)
	}
	if !ok {
		return sidecar.Errorf(sidecar.ECONFLICT, "access request %s exists", r.ID)
	}
	member := logMember(r.CreatedAt, r.ID, r.Customer)
	prune := "(" + logBound(s.now().Add(-2*s.cfg.Retention))
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, k := range s.requestIndexes(r) {
			s.addToIndex(ctx, p, k, member, prune, s.requestForgetAt(r))
		}
		return nil
	})
	return rerr(err, "access request")
}

func (s *Store) GetRequest(ctx context.Context, id string) (*sidecar.AccessRequest, error) {
	raw, err := s.c.Get(ctx, s.reqKey(id)).Result()
	if err != nil {
		return nil, rerr(err, "access request")
	}
	r, err := decode[sidecar.AccessRequest](raw)
	if err != nil {
		return nil, err
	}
	r.Status = r.StatusAt(s.now())
	return r, nil
}

func (s *Store) DecideRequest(ctx context.Context, id, status, by string, at time.Time) (*sidecar.AccessRequest, error) {
	if status != sidecar.RequestApproved && status != sidecar.RequestRejected {
		return nil, sidecar.Invalid("status", "must be %s or %s", sidecar.RequestApproved, sidecar.RequestRejected)
	}
	key := s.reqKey(id)
	var out *sidecar.AccessRequest
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		v, redisNow, err := getWithTime(ctx, tx, key, "access request")
		if err != nil {
			return err
		}
		r, err := decode[sidecar.AccessRequest](v)
		if err != nil {
			return err
		}
		if st := r.StatusAt(s.now()); st != sidecar.RequestPending {
			return sidecar.Errorf(sidecar.ECONFLICT, "access request is %s", st)
		}
		decided, err := judgedAt(sidecar.LiveAt(at, s.now()), redisNow)
		if err != nil {
			return err
		}
		r.Decide(status, by, decided)
		if status == sidecar.RequestApproved {
			if r.Seq, err = s.nextSeq(ctx, r.Customer, r.PartnerOrg); err != nil {
				return err
			}
		}
		out = r
		if err := s.keepRequestIndexes(ctx, r); err != nil {
			return err
		}
		if err := s.keepChange(ctx, s.decidedKey(), id, at); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Set(ctx, key, encode(r), s.ttl(s.requestForgetAt(r)))
			return nil
		})
		return err
	}, key)
	if err != nil {
		return nil, rerr(err, "access request")
	}
	return out, nil
}

// seqTTL is how long a customer's Seqs are kept past their last change:
// longer than any request they ordered is. Grants and holds, which may
// live longer, extend it to their own expiry (putGrantScript,
// revokeGrantScript); no write shortens it. Were the counter to lapse
// while a grant stamped with a high Seq is live, it would restart below
// that Seq, and a later revocation's hold would not hold a user back from
// an organisation grant approved before it.
func (s *Store) seqTTL() time.Duration { return 2 * s.cfg.Retention }

// nextSeqScript takes the next Seq of a partner org and keeps the counter
// for at least the seq TTL, never shortening it.
// KEYS: seq hash. ARGV: partner org, seq TTL ms.
var nextSeqScript = goredis.NewScript(`
local seq = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return seq
`)

// nextSeq takes the next Seq of partnerOrg's access to customer, in the
// customer's slot where PutGrant and RevokeGrant compare and take them.
func (s *Store) nextSeq(ctx context.Context, customer, partnerOrg string) (int64, error) {
	seq, err := nextSeqScript.Run(ctx, s.c, []string{s.cust(customer, "grants:seq")}, partnerOrg, s.seqTTL().Milliseconds()).Int64()
	if err != nil {
		return 0, unavailable(err)
	}
	return seq, nil
}

// closeGrantsScript records that a request issues no more grants, in its
// customer's slot where putGrantScript checks it, until the request is
// forgotten, and drops the records of requests forgotten since (cut).
// KEYS: closed set. ARGV: request id, forget-at ms, now ms.
var closeGrantsScript = goredis.NewScript(cutLua + `
local now = cut(tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #top == 0 then return 0 end
local ttl = tonumber(top[2]) - now
if ttl < 1000 then ttl = 1000 end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`)

// GrantsIssued closes the request on its customer's side first, where
// PutGrant checks it atomically with the write, then clears the flag on
// the request: a fault in between leaves the request closed to grants, and
// the next approval retry or revocation clears the flag.
func (s *Store) GrantsIssued(ctx context.Context, id string) error {
	r, err := s.GetRequest(ctx, id)
	if err != nil {
		return err
	}
	if !r.GrantsPending {
		return nil
	}
	err = closeGrantsScript.Run(ctx, s.c, []string{s.cust(r.Customer, "grants:closed")},
		id, s.requestForgetAt(r).UnixMilli(), s.now().UnixMilli()).Err()
	if err != nil {
		return unavailable(err)
	}
	return s.updateRequest(ctx, id, func(r *sidecar.AccessRequest) (bool, error) {
		if !r.GrantsPending {
			return false, nil
		}
		r.GrantsPending = false
		return true, nil
	})
}

func (s *Store) RecordApproval(ctx context.Context, id string) (bool, error) {
	recorded := false
	err := s.updateRequest(ctx, id, func(r *sidecar.AccessRequest) (bool, error) {
		recorded = false // set only by the attempt that commits
		switch {
		case r.Status != sidecar.RequestApproved:
			return false, sidecar.Errorf(sidecar.ECONFLICT, "access request is %s", r.StatusAt(s.now()))
		case r.ApprovalRecorded:
			return false, nil
		}
		if err := s.keepChange(ctx, s.decidedKey(), id, s.now()); err != nil {
			return false, err
		}
		r.ApprovalRecorded, recorded = true, true
		return true, nil
	})
	return recorded, err
}

// RequestsDecided reads the requests kept in partner:decided, scanLimit
// at a time: a sweep moves on past what it read, so one left out would
// never be recorded. The set holds an hour's decisions at most.
func (s *Store) RequestsDecided(ctx context.Context, since time.Time) ([]sidecar.AccessRequest, error) {
	var out []sidecar.AccessRequest
	err := s.readKept(ctx, s.decidedKey(), since, func(ids []string) error {
		for _, id := range ids {
			r, err := s.GetRequest(ctx, id)
			if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
				continue // forgotten
			}
			if err != nil {
				return err
			}
			out = append(out, *r)
		}
		return nil
	})
	return out, err
}

// RequestsCreated reads the requests kept in partner:requested, as
// RequestsDecided reads decisions: an id kept whose request was never
// stored (its SetNX failed), or is forgotten, is left out, and so is one
// created before since or past the window (an id taken again kept it
// later than its request was made).
func (s *Store) RequestsCreated(ctx context.Context, since time.Time) ([]sidecar.AccessRequest, error) {
	edge := s.now().Add(-sidecar.AppendOnceWindow)
	var out []sidecar.AccessRequest
	err := s.readKept(ctx, s.requestedKey(), since, func(ids []string) error {
		for _, id := range ids {
			r, err := s.GetRequest(ctx, id)
			if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
				continue
			}
			if err != nil {
				return err
			}
			if !r.CreatedAt.Before(since) && r.CreatedAt.After(edge) {
				out = append(out, *r)
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b sidecar.AccessRequest) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, err
}

// GrantsRevoked reads the revocations kept in partner:revoked, as
// RequestsDecided reads decisions: a revocation kept whose grant is not
// kept revoked (its script failed, or the grant would have expired) is
// left out.
func (s *Store) GrantsRevoked(ctx context.Context, since time.Time) ([]sidecar.Grant, error) {
	var out []sidecar.Grant
	err := s.readKept(ctx, s.revokesKey(), since, func(refs []string) error {
		for _, ref := range refs {
			customer, id, ok := strings.Cut(ref, "\x00")
			if !ok {
				continue
			}
			g, err := s.RevokedGrant(ctx, customer, id)
			if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, *g)
		}
		return nil
	})
	return out, err
}

// updateRequest changes the stored request id with change, which reports
// whether it changed anything, atomically: a concurrent change of the
// request makes it read the request again and run change on that.
func (s *Store) updateRequest(ctx context.Context, id string, change func(*sidecar.AccessRequest) (bool, error)) error {
	key := s.reqKey(id)
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		raw, err := tx.Get(ctx, key).Result()
		if err != nil {
			return rerr(err, "access request")
		}
		r, err := decode[sidecar.AccessRequest](raw)
		if err != nil {
			return err
		}
		if changed, err := change(r); err != nil || !changed {
			return err
		}
		if err := s.keepRequestIndexes(ctx, r); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Set(ctx, key, encode(r), s.ttl(s.requestForgetAt(r)))
			return nil
		})
		return err
	}, key)
	return rerr(err, "access request")
}

func (s *Store) ListRequests(ctx context.Context, f sidecar.RequestFilter) ([]sidecar.AccessRequest, string, error) {
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	index := s.cust(f.Customer, "requests")
	if f.Customer == "" {
		index = s.tagged("porg", f.PartnerOrg, "requests")
	}
	now := s.now()
	var out []sidecar.AccessRequest
	next, err := s.scanIndex(ctx, index, f.CursorScope(), f.Cursor, time.Time{}, time.Time{}, true, f.N(), func(members []string) (int, bool, error) {
		keys := make([]string, len(members))
		for i, m := range members {
			id, _ := splitMember(m)
			keys[i] = s.reqKey(id)
		}
		raws, err := s.getMany(ctx, keys)
		if err != nil {
			return 0, false, err
		}
		for i, raw := range raws {
			if raw == "" {
				s.c.ZRem(ctx, index, members[i])
				continue
			}
			r, err := decode[sidecar.AccessRequest](raw)
			if err != nil {
				return 0, false, err
			}
			if !f.Match(r, now) {
				continue
			}
			r.Status = r.StatusAt(now)
			out = append(out, *r)
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

// ---- grants ----------------------------------------------------------------

// holdLua defines hold(key, field, until ms, level, now ms): it adds the
// hold at level until the given instant to the field's holds in the hash
// key as sidecar.AddHold does (the store contract pins both) and keeps
// the hash until its last hold lapses. Levels rank as sidecar.Level.Rank.
// Callers pass cut's now (cutLua), which holdLua defines too.
var holdLua = func() string {
	var ranks strings.Builder
	for _, l := range sidecar.Levels {
		fmt.Fprintf(&ranks, "[%q]=%d,", l, l.Rank())
	}
	return cutLua + `
local ranks = {` + ranks.String() + `}
local function covers(a, b)
  return a[1] >= b[1] and (ranks[a[2]] or 0) <= (ranks[b[2]] or 0)
end
local function hold(key, f, untl, level, now)
  local h = {untl, level}
  local add = untl > now
  local out = {}
  local raw = redis.call('HGET', key, f)
  if raw then
    for _, o in ipairs(cjson.decode(raw)) do
      if type(o[2]) ~= 'string' then o = {o[2], ''} end
      if o[1] <= now then
      elseif add and covers(o, h) then
        add = false
        table.insert(out, o)
      elseif not add or not covers(h, o) then
        table.insert(out, o)
      end
    end
  end
  if add then table.insert(out, h) end
  if #out == 0 then
    redis.call('HDEL', key, f)
    return
  end
  redis.call('HSET', key, f, cjson.encode(out))
  local ttl = 1000
  for _, o in ipairs(out) do
    if o[1] - now > ttl then ttl = o[1] - now end
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
`
}()

// putGrantScript stores a grant in the customer's hash, unless its
// request is closed (returns -1) or a later approval or revocation of the
// field took a higher Seq (returns -2), drops the fields expired at cut's
// now (cutLua), which it returns, and keeps the hash alive until its last
// grant expires. A grant with a Seq keeps the
// seq hash at least retention past its expiry (and the seq TTL), never
// shortening it. A user's grant (ARGV[9] = "1") replacing a live one that
// ends later leaves a hold on the user in KEYS[5] at the replaced grant's
// level until its end (sidecar.ReplacementHold).
// KEYS: grants hash, expiry set, closed set, seq hash, held hash. ARGV:
// field, grant JSON, expiry ms, now ms, request id, seq, seq TTL ms,
// retention ms, individual.
var putGrantScript = goredis.NewScript(holdLua + `
if ARGV[5] ~= '' and redis.call('ZSCORE', KEYS[3], ARGV[5]) then
  return -1
end
local seq = tonumber(ARGV[6])
if seq < tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0') then
  return -2
end
local now = cut(tonumber(ARGV[4]))
if seq > 0 then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
  local keep = math.max(tonumber(ARGV[7]), tonumber(ARGV[3]) - now + tonumber(ARGV[8]))
  if redis.call('PTTL', KEYS[4]) < keep then redis.call('PEXPIRE', KEYS[4], keep) end
end
if ARGV[9] == '1' then
  local old = redis.call('HGET', KEYS[1], ARGV[1])
  local ends = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0')
  if old and ends > now and ends > tonumber(ARGV[3]) then
    hold(KEYS[5], ARGV[1], ends, cjson.decode(old)['level'], now)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, f in ipairs(dead) do
  redis.call('HDEL', KEYS[1], f)
  redis.call('ZREM', KEYS[2], f)
end
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #top == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return now
end
local ttl = tonumber(top[2]) - now
if ttl < 1000 then ttl = 1000 end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return now
`)

// revokeGrantScript deletes a grant field if it still holds the grant id,
// and marks the field with the next Seq of the grant's partner org, which
// every approval decided before it is below.
// KEYS: grants hash, expiry set, seq hash. ARGV: field, grant id, partner
// org, seq TTL ms.
// It also keeps the grant as it was for RevokedGrant: KEYS[4] holds it by
// id, KEYS[5] its expiry, and both are trimmed of grants past theirs at
// cut's now (cutLua) and live until the last one kept expires.
// A user's individual grant (ARGV[8] = "1") leaves a hold on the user in
// KEYS[6] at the grant's level until its expiry (hold). The seq hash is
// kept at least retention past the grant's expiry (and the seq TTL),
// never shortened.
// KEYS: grants, grants:exp, grants:seq, grants:revoked, grants:revoked:exp,
// grants:held.
// ARGV: field, id, partner org, seq TTL ms, expires-at ms, now ms, grant
// as revoked, individual, retention ms.
var revokeGrantScript = goredis.NewScript(holdLua + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local g = cjson.decode(v)
if g['id'] ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local seq = redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('HSET', KEYS[3], ARGV[1], seq)
local now, untl = cut(tonumber(ARGV[6])), tonumber(ARGV[5])
local keep = math.max(tonumber(ARGV[4]), untl - now + tonumber(ARGV[9]))
if redis.call('PTTL', KEYS[3]) < keep then redis.call('PEXPIRE', KEYS[3], keep) end
if ARGV[8] == '1' and untl > now then
  hold(KEYS[6], ARGV[1], untl, g['level'], now)
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[7])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[2])
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 100)
if #old > 0 then
  redis.call('ZREM', KEYS[5], unpack(old))
  redis.call('HDEL', KEYS[4], unpack(old))
end
local top = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
if #top > 0 then
  local ttl = tonumber(top[2]) - now
  if ttl < 1000 then ttl = 1000 end
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[5], ttl)
end
return v
`)

func (s *Store) PutGrant(ctx context.Context, g *sidecar.Grant) error {
	if err := g.Validate(); err != nil {
		return err
	}
	now := s.now()
	f := field(g.PartnerOrg, g.User)
	keys := []string{s.cust(g.Customer, "grants"), s.cust(g.Customer, "grants:exp"), s.cust(g.Customer, "grants:closed"), s.cust(g.Customer, "grants:seq"),
		s.cust(g.Customer, "grants:held")}
	individual := "0"
	if g.User != "" {
		individual = "1"
	}
	n, err := putGrantScript.Run(ctx, s.c, keys, f, encode(g), g.ExpiresAt.UnixMilli(), now.UnixMilli(), g.RequestID, g.Seq, s.seqTTL().Milliseconds(),
		s.cfg.Retention.Milliseconds(), individual).Int64()
	switch {
	case err != nil:
		// The grant may stand with only its reply lost, and may narrow
		// what the one it replaces allowed.
		return s.evictDespite(ctx, unavailable(err), sidecar.GrantKey(g.Customer))
	case n == -1:
		return sidecar.Errorf(sidecar.ECONFLICT, "access request %s issues no more grants", g.RequestID)
	case n == -2:
		return sidecar.Superseded()
	}
	// The indexes are trimmed at the instant the script judged expiry at
	// (n), so they keep what the hash keeps.
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		porg := s.tagged("porg", g.PartnerOrg, "grants")
		p.ZAdd(ctx, porg, goredis.Z{Score: ms(g.ExpiresAt), Member: field(g.Customer, g.User)})
		p.ZRemRangeByScore(ctx, porg, "-inf", strconv.FormatInt(n, 10))
		p.ZAdd(ctx, s.grantsExpiry(), goredis.Z{Score: ms(g.ExpiresAt), Member: field(g.Customer, f)})
		p.ZRemRangeByScore(ctx, s.grantsExpiry(), "-inf", strconv.FormatInt(n, 10))
		return nil
	})
	// A grant may replace a higher or longer one: a narrowing whose lost
	// eviction the approval's retry, which writes the grant again,
	// publishes again.
	perr := s.publishNarrowed(ctx, sidecar.GrantKey(g.Customer))
	if err != nil {
		// The grant stands, but "My Customers" and the expiry sweep would
		// miss it: report it, so the approval stays pending and its retry
		// stores the grant again, indexes included.
		return unavailable(err)
	}
	return perr
}

// customerGrants returns the live grants of a customer by field: live at
// the store's clock, or, for a write (revoking), at the earlier of it and
// Redis's clock (judgedAt), read in the same round trip. A replica whose
// clock runs ahead must not find over, and so leave in force for the
// others, a grant that Redis's clock and the other replicas still hold
// live.
func (s *Store) customerGrants(ctx context.Context, customer string, write bool) (map[string]*sidecar.Grant, error) {
	var all *goredis.MapStringStringCmd
	var redisNow *goredis.TimeCmd
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		all = p.HGetAll(ctx, s.cust(customer, "grants"))
		if write {
			redisNow = p.Time(ctx)
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	now := s.now()
	if write {
		if now, err = judgedAt(now, redisNow); err != nil {
			return nil, err
		}
	}
	out := make(map[string]*sidecar.Grant, len(all.Val()))
	for f, raw := range all.Val() {
		g, err := decode[sidecar.Grant](raw)
		if err != nil {
			return nil, err
		}
		if g.Live(now) {
			out[f] = g
		}
	}
	return out, nil
}

func (s *Store) GetGrant(ctx context.Context, customer, id string) (*sidecar.Grant, error) {
	gs, err := s.customerGrants(ctx, customer, true)
	if err != nil {
		return nil, err
	}
	for _, g := range gs {
		if g.ID == id {
			return g, nil
		}
	}
	return nil, notFound("grant")
}

func (s *Store) RevokeGrant(ctx context.Context, customer, id, by, byOrg string) (*sidecar.Grant, error) {
	gs, err := s.customerGrants(ctx, customer, true)
	if err != nil {
		return nil, err
	}
	for f, g := range gs {
		if g.ID != id {
			continue
		}
		keys := []string{s.cust(customer, "grants"), s.cust(customer, "grants:exp"), s.cust(customer, "grants:seq"),
			s.cust(customer, "grants:revoked"), s.cust(customer, "grants:revoked:exp"), s.cust(customer, "grants:held")}
		now := s.now()
		kept := *g // the script removes only the grant with this id: this one
		kept.RevokedAt, kept.RevokedBy, kept.RevokedByOrg = now, by, byOrg
		s.keepChangeAhead(ctx, s.revokesKey(), field(customer, id), now, "revocation not kept for the records sweep", "customer", customer, "grant", id)
		individual := "0"
		if g.User != "" {
			individual = "1"
		}
		raw, err := revokeGrantScript.Run(ctx, s.c, keys, f, id, g.PartnerOrg, s.seqTTL().Milliseconds(),
			g.ExpiresAt.UnixMilli(), now.UnixMilli(), encode(&kept), individual, s.cfg.Retention.Milliseconds()).Text()
		if errors.Is(err, goredis.Nil) {
			break // replaced or revoked meanwhile
		}
		if err != nil {
			// The revocation may be made with only its reply lost.
			return nil, s.evictDespite(ctx, unavailable(err), sidecar.GrantKey(customer))
		}
		_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			p.ZRem(ctx, s.tagged("porg", g.PartnerOrg, "grants"), field(customer, g.User))
			p.ZRem(ctx, s.grantsExpiry(), field(customer, f))
			return nil
		})
		if err != nil {
			s.log.Warn("unindex grant", "customer", customer, "grant", id, "err", err)
		}
		perr := s.publishNarrowed(ctx, sidecar.GrantKey(customer))
		g, err := decode[sidecar.Grant](raw)
		if err != nil {
			return nil, err
		}
		return g, perr
	}
	return nil, notFound("grant")
}

// RevokedGrant keeps a revoked grant until it would have ended by the
// earlier of the store's clock and Redis's, as the revocation's lookups
// judge (customerGrants): a retry through a replica whose clock runs ahead
// still finds it revoked.
func (s *Store) RevokedGrant(ctx context.Context, customer, id string) (*sidecar.Grant, error) {
	var rawCmd *goredis.StringCmd
	var redisNow *goredis.TimeCmd
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		rawCmd = p.HGet(ctx, s.cust(customer, "grants:revoked"), id)
		redisNow = p.Time(ctx)
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, unavailable(err)
	}
	raw, err := rawCmd.Result()
	if err != nil {
		return nil, rerr(err, "revoked grant")
	}
	g, err := decode[sidecar.Grant](raw)
	if err != nil {
		return nil, err
	}
	at, err := judgedAt(s.now(), redisNow)
	if err != nil {
		return nil, err
	}
	if !g.Live(at) {
		return nil, notFound("revoked grant")
	}
	return g, nil
}

// EffectiveGrants reads the grants and the user's holds in one
// transaction: a revocation writes both at once, so no read sees the
// individual grant gone and its hold not yet there.
func (s *Store) EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error) {
	var e sidecar.EffectiveGrants
	var grants *goredis.SliceCmd
	var held *goredis.StringCmd
	_, err := s.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		grants = p.HMGet(ctx, s.cust(customer, "grants"), field(partnerOrg, ""), field(partnerOrg, user))
		if user != "" {
			held = p.HGet(ctx, s.cust(customer, "grants:held"), field(partnerOrg, user))
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return e, unavailable(err)
	}
	vals, err := grants.Result()
	if err != nil {
		return e, unavailable(err)
	}
	now := s.now()
	if held != nil && held.Val() != "" {
		holds, err := decode[[][2]any](held.Val())
		if err != nil {
			return e, err
		}
		for _, h := range *holds {
			until, _ := h[0].(float64)
			level, _ := h[1].(string)
			if legacy, ok := h[1].(float64); ok {
				until = legacy // [seq, until]: no level, so it holds the user back from every organisation grant
			}
			if until := time.UnixMilli(int64(until)); now.Before(until) {
				e.Held = append(e.Held, sidecar.Hold{Level: sidecar.Level(level), Until: until})
			}
		}
	}
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok || (i == 1 && user == "") {
			continue
		}
		g, err := decode[sidecar.Grant](raw)
		if err != nil {
			return e, err
		}
		if !g.Live(now) {
			continue
		}
		if i == 0 {
			e.Organisation = g
		} else {
			e.Individual = g
		}
	}
	return e, nil
}

func sortGrants(gs []sidecar.Grant) {
	slices.SortFunc(gs, func(a, b sidecar.Grant) int {
		return strings.Compare(a.Customer+"\x00"+a.PartnerOrg+"\x00"+a.User, b.Customer+"\x00"+b.PartnerOrg+"\x00"+b.User)
	})
}

func (s *Store) GrantsByCustomer(ctx context.Context, customer string) ([]sidecar.Grant, error) {
	gs, err := s.customerGrants(ctx, customer, false)
	if err != nil {
		return nil, err
	}
	out := make([]sidecar.Grant, 0, len(gs))
	for _, g := range gs {
		out = append(out, *g)
	}
	sortGrants(out)
	return out, nil
}

// grantsAt reads grant fields of several customers (any slots) and keeps
// the live ones.
func (s *Store) grantsAt(ctx context.Context, refs [][2]string) ([]sidecar.Grant, error) {
	cmds := make([]*goredis.StringCmd, len(refs))
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = p.HGet(ctx, s.cust(r[0], "grants"), r[1])
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, unavailable(err)
	}
	now := s.now()
	var out []sidecar.Grant
	for _, c := range cmds {
		raw, err := c.Result()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, unavailable(err)
		}
		g, err := decode[sidecar.Grant](raw)
		if err != nil {
			return nil, err
		}
		if g.Live(now) {
			out = append(out, *g)
		}
	}
	return out, nil
}

func (s *Store) GrantsByPartner(ctx context.Context, partnerOrg, user string) ([]sidecar.Grant, error) {
	now := strconv.FormatInt(s.now().UnixMilli(), 10)
	members, err := s.c.ZRangeByScore(ctx, s.tagged("porg", partnerOrg, "grants"), &goredis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	var refs [][2]string
	for _, m := range members {
		c, u, _ := strings.Cut(m, "\x00")
		if u == "" || u == user {
			refs = append(refs, [2]string{c, field(partnerOrg, u)})
		}
	}
	out, err := s.grantsAt(ctx, refs)
	if err != nil {
		return nil, err
	}
	sortGrants(out)
	return out, nil
}

func (s *Store) GrantsExpiringBefore(ctx context.Context, t time.Time, limit int) ([]sidecar.Grant, error) {
	rb := &goredis.ZRangeBy{Min: "(" + strconv.FormatInt(s.now().UnixMilli(), 10), Max: "(" + strconv.FormatInt(t.UnixMilli(), 10)}
	if limit > 0 {
		rb.Count = int64(limit)
	}
	members, err := s.c.ZRangeByScore(ctx, s.grantsExpiry(), rb).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	refs := make([][2]string, 0, len(members))
	for _, m := range members {
		c, f, _ := strings.Cut(m, "\x00")
		refs = append(refs, [2]string{c, f})
	}
	out, err := s.grantsAt(ctx, refs)
	if err != nil {
		return nil, err
	}
	out = slices.DeleteFunc(out, func(g sidecar.Grant) bool { return !g.ExpiresAt.Before(t) })
	slices.SortFunc(out, func(a, b sidecar.Grant) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return strings.Compare(a.Customer+"\x00"+a.ID, b.Customer+"\x00"+b.ID)
	})
	return out, nil
}

// ---- shares ----------------------------------------------------------------

// Shares are fields "<org>\x00<user>\x00<resource>". Before shares named
// their partner organisation in the key the field was "<user>\x00<resource>"
// (legacyShareField); such a share still lists, matches only the
// organisation its record names (none when it names none), and is replaced
// or deleted through that organisation's key.
func shareField(partnerOrg, user, resource string) string {
	return partnerOrg + "\x00" + user + "\x00" + resource
}

func legacyShareField(user, resource string) string { return field(user, resource) }

// putShareScript stores a share and drops the same share stored under the
// legacy field, when that one names the same partner organisation.
// It keeps the share as put in the kept shares (keepShareLua). When the
// field still holds the share the put repeats (sidecar.Share.Retried, as
// read before), it changes nothing. It returns the share as stored.
// KEYS: shares hash, kept shares. ARGV: field, share JSON, legacy field,
// partner org, then keepShareLua's: the put's time, the window's edge
// (ms), the window (ms); then the share the put repeats, or "".
var putShareScript = goredis.NewScript(keepShareLua + `
if ARGV[8] ~= '' and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[8] then
  return ARGV[8]
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local old = redis.call('HGET', KEYS[1], ARGV[3])
if old and (cjson.decode(old)['partner_org'] or '') == ARGV[4] then
  redis.call('HDEL', KEYS[1], ARGV[3])
end
keep(KEYS[2], ARGV[2], ARGV[5], ARGV[6], ARGV[7])
return ARGV[2]
`)

// keepShareLua keeps a share as put or removed in the customer's kept
// shares, written with the change in its slot: a sweep reads back exactly
// the changes made (SharesChanged), and forgets those past the window.
var keepShareLua = `
local function keep(key, share, at, edge, window)
  redis.call('ZADD', key, at, share)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. edge)
  redis.call('PEXPIRE', key, window)
end
`

// keepShareArgs are keepShareLua's arguments for a change at at.
func (s *Store) keepShareArgs(at time.Time) []any {
	return []any{int64(ms(at)), int64(ms(s.now().Add(-sidecar.AppendOnceWindow))), sidecar.AppendOnceWindow.Milliseconds()}
}

// deleteShareScript deletes a share, under its field or under the legacy
// field when that one names the same partner organisation, and keeps it,
// marked removed, in the removed shares' hash; it returns the share as
// kept, or nil when there was none.
// It keeps the share as removed in the kept shares too (keepShareLua).
// KEYS: shares hash, removed shares hash, kept shares. ARGV: field, legacy
// field, partner org, removed_at, removed_by, how long the removed are
// kept (ms), then keepShareLua's: the removal's time, the window's edge
// (ms), the window (ms).
var deleteShareScript = goredis.NewScript(keepShareLua + `
local removed = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
local old = redis.call('HGET', KEYS[1], ARGV[2])
if old and (cjson.decode(old)['partner_org'] or '') == ARGV[3] then
  redis.call('HDEL', KEYS[1], ARGV[2])
  removed = removed or old
end
if not removed then return false end
local sh = cjson.decode(removed)
sh['removed_at'] = ARGV[4]
sh['removed_by'] = ARGV[5]
local kept = cjson.encode(sh)
redis.call('HSET', KEYS[2], ARGV[1], kept)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
keep(KEYS[3], kept, ARGV[7], ARGV[8], ARGV[9])
return kept
`)

func (s *Store) PutShare(ctx context.Context, sh *sidecar.Share) (*sidecar.Share, error) {
	if err := sh.Validate(); err != nil {
		return nil, err
	}
	hash, f := s.cust(sh.Customer, "shares"), shareField(sh.PartnerOrg, sh.User, sh.Resource)
	// The share stored, when sh repeats it, is kept only if the script
	// still finds it there: a withdrawal in between makes sh a new share.
	repeats := ""
	cur, err := s.c.HGet(ctx, hash, f).Result()
	switch {
	case errors.Is(err, goredis.Nil):
	case err != nil:
		return nil, unavailable(err)
	default:
		if old, err := decode[sidecar.Share](cur); err == nil && old.Retried(sh) {
			repeats = cur
		}
	}
	// The customer is marked first, in its own slot: a fault after it
	// marks a put not made, whose share SharesChanged does not find kept.
	if err := s.keepChange(ctx, s.sharedKey(), sh.Customer, sh.SharedAt); err != nil {
		return nil, err
	}
	args := append([]any{f, encode(sh), legacyShareField(sh.User, sh.Resource), sh.PartnerOrg}, s.keepShareArgs(sh.SharedAt)...)
	stored, err := putShareScript.Run(ctx, s.c, []string{hash, s.cust(sh.Customer, "shares:kept")}, append(args, repeats)...).Text()
	if err != nil {
		return nil, unavailable(err)
	}
	if stored == repeats {
		return decode[sidecar.Share](stored)
	}
	s.publish(ctx, sidecar.ShareKey(sh.Customer))
	return decode[sidecar.Share](stored)
}

func (s *Store) DeleteShare(ctx context.Context, customer, resource, partnerOrg, user, by string) (*sidecar.Share, error) {
	now := s.now()
	// A withdrawal narrows access: it goes ahead when its mark cannot be
	// kept (see keepChangeAhead).
	s.keepChangeAhead(ctx, s.sharedKey(), customer, now, "share withdrawal not kept for the records sweep", "customer", customer, "resource", resource)
	args := append([]any{shareField(partnerOrg, user, resource), legacyShareField(user, resource), partnerOrg,
		now.UTC().Format(time.RFC3339Nano), by, sidecar.AppendOnceWindow.Milliseconds()}, s.keepShareArgs(now)...)
	raw, err := deleteShareScript.Run(ctx, s.c, []string{s.cust(customer, "shares"), s.cust(customer, "shares:removed"), s.cust(customer, "shares:kept")},
		args...).Text()
	if errors.Is(err, goredis.Nil) {
		return nil, notFound("share")
	}
	if err != nil {
		// The share may be gone with only the reply lost.
		return nil, s.evictDespite(ctx, unavailable(err), sidecar.ShareKey(customer))
	}
	sh, err := decode[sidecar.Share](raw)
	if err != nil {
		return nil, err
	}
	return sh, s.publishNarrowed(ctx, sidecar.ShareKey(customer))
}

// RemovedShares reads the removed shares' hash; a removal older than
// sidecar.AppendOnceWindow, kept while later ones renew the hash's
// expiry, is left out.
func (s *Store) RemovedShares(ctx context.Context, customer string) ([]sidecar.Share, error) {
	all, err := hashValues[sidecar.Share](ctx, s, s.cust(customer, "shares:removed"))
	if err != nil {
		return nil, err
	}
	now := s.now()
	all = slices.DeleteFunc(all, func(sh sidecar.Share) bool { return now.Sub(sh.RemovedAt) >= sidecar.AppendOnceWindow })
	slices.SortFunc(all, sidecar.ShareOrder)
	return all, nil
}

// SharesChanged reads the customers kept in partner:shared since since,
// then each one's kept shares since since: a customer is kept at its
// last change, so none with a change since since is left out.
func (s *Store) SharesChanged(ctx context.Context, since time.Time) ([]sidecar.Share, error) {
	edge := s.now().Add(-sidecar.AppendOnceWindow)
	from := strconv.FormatInt(int64(ms(since)), 10)
	var out []sidecar.Share
	err := s.readKept(ctx, s.sharedKey(), since, func(customers []string) error {
		for _, c := range customers {
			raws, err := s.c.ZRangeByScore(ctx, s.cust(c, "shares:kept"), &goredis.ZRangeBy{Min: from, Max: "+inf"}).Result()
			if err != nil {
				return unavailable(err)
			}
			for _, raw := range raws {
				sh, err := decode[sidecar.Share](raw)
				if err != nil {
					return err
				}
				if at := shareChangedAt(sh); !at.Before(since) && at.After(edge) {
					out = append(out, *sh)
				}
			}
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b sidecar.Share) int { return shareChangedAt(&a).Compare(shareChangedAt(&b)) })
	return out, err
}

// shareChangedAt is when sh was put or, removed, when it was removed.
func shareChangedAt(sh *sidecar.Share) time.Time {
	if !sh.RemovedAt.IsZero() {
		return sh.RemovedAt
	}
	return sh.SharedAt
}

func (s *Store) IsShared(ctx context.Context, customer, resource, partnerOrg, user string) (bool, error) {
	raws, err := s.c.HMGet(ctx, s.cust(customer, "shares"), shareField(partnerOrg, user, resource), legacyShareField(user, resource)).Result()
	if err != nil {
		return false, unavailable(err)
	}
	for _, raw := range raws {
		str, ok := raw.(string)
		if !ok {
			continue
		}
		sh, err := decode[sidecar.Share](str)
		if err != nil {
			return false, err
		}
		if sh.Resource == resource && sh.For(partnerOrg, user) {
			return true, nil
		}
	}
	return false, nil
}

func (s *Store) ListShares(ctx context.Context, customer string) ([]sidecar.Share, error) {
	out, err := hashValues[sidecar.Share](ctx, s, s.cust(customer, "shares"))
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, sidecar.ShareOrder)
	return out, nil
}

// SharesFor matches the records, not the fields: a legacy share counts
// for the organisation it names, and one that names none for no one.
func (s *Store) SharesFor(ctx context.Context, customer, partnerOrg, user string) ([]string, error) {
	if partnerOrg == "" {
		return nil, nil
	}
	all, err := s.ListShares(ctx, customer)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, sh := range all {
		if sh.For(partnerOrg, user) {
			out = append(out, sh.Resource)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ---- subscriptions ---------------------------------------------------------

func (s *Store) PutSubscription(ctx context.Context, sub *sidecar.Subscription) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.cust(sub.Customer, "subs"), field(sub.User, sub.Kind), encode(sub))
		p.SAdd(ctx, s.tagged("puser", sub.User, "subs"), field(sub.Customer, sub.Kind))
		return nil
	})
	return rerr(err, "subscription")
}

func (s *Store) DeleteSubscription(ctx context.Context, user, customer, kind string) error {
	n, err := s.c.HDel(ctx, s.cust(customer, "subs"), field(user, kind)).Result()
	if err != nil {
		return unavailable(err)
	}
	if err := s.c.SRem(ctx, s.tagged("puser", user, "subs"), field(customer, kind)).Err(); err != nil {
		return unavailable(err)
	}
	if n == 0 {
		return notFound("subscription")
	}
	return nil
}

func sortSubs(out []sidecar.Subscription) {
	slices.SortFunc(out, func(a, b sidecar.Subscription) int {
		return strings.Compare(a.User+"\x00"+a.Customer+"\x00"+a.Kind, b.User+"\x00"+b.Customer+"\x00"+b.Kind)
	})
}

func (s *Store) SubscriptionsByUser(ctx context.Context, user string) ([]sidecar.Subscription, error) {
	members, err := s.c.SMembers(ctx, s.tagged("puser", user, "subs")).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	cmds := make([]*goredis.StringCmd, len(members))
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, m := range members {
			c, kind, _ := strings.Cut(m, "\x00")
			cmds[i] = p.HGet(ctx, s.cust(c, "subs"), field(user, kind))
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, unavailable(err)
	}
	var out []sidecar.Subscription
	for _, c := range cmds {
		raw, err := c.Result()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, unavailable(err)
		}
		sub, err := decode[sidecar.Subscription](raw)
		if err != nil {
			return nil, err
		}
		out = append(out, *sub)
	}
	sortSubs(out)
	return out, nil
}

func (s *Store) SubscriptionsByCustomer(ctx context.Context, customer string) ([]sidecar.Subscription, error) {
	out, err := hashValues[sidecar.Subscription](ctx, s, s.cust(customer, "subs"))
	if err != nil {
		return nil, err
	}
	sortSubs(out)
	return out, nil
}

// hashValues decodes every value of a hash of JSON records.
func hashValues[T any](ctx context.Context, s *Store, key string) ([]T, error) {
	all, err := s.c.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]T, 0, len(all))
	for _, raw := range all {
		v, err := decode[T](raw)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, nil
}
