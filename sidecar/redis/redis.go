// Package redis is Deputy's shared state store on Redis (go-redis v9
// UniversalClient: single node, Sentinel or Cluster), for more than one
// replica.
//
// Key layout. Everything that belongs to one customer carries the hash tag
// {cust:<id>}, so the multi-key updates of one customer (a record and its
// index, a grant hash and its expiry index) run in one slot, atomically.
// Records looked up by something else than the customer live under their
// own tag and point to the customer: {sid:<session id>}, {tok:<token
// hash>}, {code:<redeem hash>}, {req:<request id>}. Secondary indexes are
// tagged by their owner — {actor:<staff>}, {porg:<partner org>},
// {puser:<partner user>}, {dom:<reseller domain>} — and are written with
// single-key commands, so no operation ever spans slots. An index may
// briefly point at a record that is gone or changed; readers verify the
// record, which is the truth. TTLs mirror the domain expiries; reads also
// check expiry against the injected clock.
//
// Every write that changes delegation state hands its invalidation key to
// this replica's subscribers before it returns, and publishes it on one
// pub/sub channel (<prefix>:invalidate) for every replica; a write that
// narrows access returns once every replica has applied it
// (invalidation.go).
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/deputyhq/deputy/sidecar"
)

// scanLimit bounds how many stream entries or index members one read
// examines, so a selective filter cannot make a read walk everything.
const scanLimit = 10 * sidecar.MaxPageLimit

// consentHistoryLen is how many consent settings are kept per customer.
const consentHistoryLen = 100

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that decides expiry.
func WithClock(c sidecar.Clock) Option { return func(s *Store) { s.now = c } }

// WithLogger sets the logger for background errors (the invalidation
// subscription).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// Store is the Redis sidecar.Store.
type Store struct {
	c      goredis.UniversalClient
	owned  bool // close c on Close
	cfg    Config
	now    sidecar.Clock
	log    *slog.Logger
	prefix string

	eventsDropped atomic.Uint64 // at the events stream's hard cap

	sealer atomic.Pointer[cursorSealer] // list cursors' key, once read (cursors.go)

	inv  invalidations
	repl replication

	// marks is read-held by each mark of a narrowing write still on its
	// way (keepChangesAhead); Close takes it to wait for them. (A
	// WaitGroup may not gain work while waited on; a write may race a
	// stop.)
	marks sync.RWMutex
}

var _ sidecar.Store = (*Store)(nil)

// New connects to Redis as configured. It does not wait for Redis: a
// store that cannot be reached answers EUNAVAILABLE until it can.
func New(cfg Config, opts ...Option) (*Store, error) {
	c, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	s := NewFromClient(c, cfg, opts...)
	s.owned = true
	return s, nil
}

// NewClient returns a go-redis client (single node, Sentinel or Cluster)
// for cfg, for the parts of Deputy that share the store's Redis (decision
// log stream, metrics hooks). It does not wait for Redis.
func NewClient(cfg Config) (goredis.UniversalClient, error) {
	cfg = cfg.Defaults()
	if !cfg.Enabled() {
		return nil, sidecar.Invalid("redis.addrs", "at least one address is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o, err := cfg.options()
	if err != nil {
		return nil, err
	}
	return goredis.NewUniversalClient(o), nil
}

// NewFromClient uses an existing client; Close does not close it. Only the
// key prefix, stream lengths and retention of cfg are used.
func NewFromClient(c goredis.UniversalClient, cfg Config, opts ...Option) *Store {
	cfg = cfg.Defaults()
	s := &Store{c: c, cfg: cfg, now: time.Now, log: slog.Default(), prefix: cfg.KeyPrefix, inv: newInvalidations()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Ping reports whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return unavailable(err)
	}
	return nil
}

// Close waits for the marks of narrowing writes still on their way (each
// on its own deadline, markTimeout), stops the invalidation subscription
// and, when New made the client, closes it. A replica stopping right
// after a revocation answered must not cut its mark: the revocation's
// records may rest on the sweep that reads it.
func (s *Store) Close() error {
	s.marks.Lock()
	s.marks.Unlock() // nothing to hold: taking it was the wait
	s.closeInvalidations()
	if s.owned {
		return s.c.Close()
	}
	return nil
}

// ---- errors and encoding ----------------------------------------------------

func unavailable(err error) error {
	return sidecar.Unavailable("state store unavailable", err)
}

func notFound(what string) error { return sidecar.Errorf(sidecar.ENOTFOUND, "%s not found", what) }

// rerr maps a go-redis error: redis.Nil to ENOTFOUND for what, the rest to
// EUNAVAILABLE.
func rerr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, goredis.Nil):
		return notFound(what)
	case sidecar.ErrorCode(err) != sidecar.EINTERNAL:
		return err // already a domain error (from inside a transaction)
	}
	return unavailable(err)
}

func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only domain structs are encoded; they always marshal
	}
	return string(b)
}

func decode[T any](raw string) (*T, error) {
	v := new(T)
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return nil, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "corrupt state record", Err: err}
	}
	return v, nil
}

// ttl is the Redis TTL for a record that may be forgotten at t, by the
// store's clock. Never below a second: expiry is decided on read anyway.
func (s *Store) ttl(t time.Time) time.Duration { return ttlFrom(t, s.now()) }

// ttlFrom is the Redis TTL for a record that may be forgotten at t, counted
// from at rather than the store's clock: from the instant a write judged
// at (liveAt), when it moved what it stores to that instant.
func ttlFrom(t, at time.Time) time.Duration { return max(t.Sub(at), time.Second) }

func ms(t time.Time) float64 { return float64(t.UnixMilli()) }

// keepIndexLua keeps an index at least ARGV[1] ms: it lengthens the TTL,
// never shortens it. With ARGV[2] it first adds that member (score 0) and
// drops the members below ARGV[3] (ZREMRANGEBYLEX max), giving an index it
// creates the TTL. An index that already has no TTL keeps none: one
// written before indexes expired lists records whose forget times it does
// not know (an older session may outlive the one being added by hours, a
// record written under a longer retention by more), and any TTL given it
// could be shorter than one of them; it stays, as it was, until its owner
// writes again and the prune drops its old members. So an index always
// lives at least as long as the longest-living record it lists, and goes
// with them. KEYS: the index.
const keepIndexLua = `
local want, t = tonumber(ARGV[1]), redis.call('PTTL', KEYS[1])
if ARGV[2] then
  redis.call('ZADD', KEYS[1], 0, ARGV[2])
  redis.call('ZREMRANGEBYLEX', KEYS[1], '-', ARGV[3])
end
if (t == -2 and ARGV[2]) or (t >= 0 and t < want) then redis.call('PEXPIRE', KEYS[1], want) end
return 0
`

// keepIndex queues keepIndexLua on p: index is to live until at least
// until, by the store's clock (a relative PEXPIRE, as every record's
// TTL). Every write that sets a record's TTL keeps the record's indexes
// so, with the same until: the retention may have been raised since the
// record was indexed, and the index would go first.
func (s *Store) keepIndex(ctx context.Context, p goredis.Pipeliner, index string, until time.Time) {
	p.Eval(ctx, keepIndexLua, []string{index}, s.ttl(until).Milliseconds())
}

// addToIndex queues adding member to index, dropping the members below
// prune (a ZREMRANGEBYLEX max), with keepIndex's TTL.
func (s *Store) addToIndex(ctx context.Context, p goredis.Pipeliner, index, member, prune string, until time.Time) {
	p.Eval(ctx, keepIndexLua, []string{index}, s.ttl(until).Milliseconds(), member, prune)
}

// cutLua defines cut(now ms): the instant a script judges what is over
// at, the earlier of the writer's now and Redis's own clock (TIME, on the
// node that holds the keys). Every replica judges expiry at its own clock
// on read, so what a write drops as over, or declines to hold, must be
// over for the others too: a grant, hold or closed request dropped while
// live restricts no one any more, on every replica. Judged at the writer's
// clock alone, a replica whose clock runs ahead by d would drop them up
// to d early, for everyone; at the earlier of the two clocks, both must
// agree that it is over. TTLs count from the same instant, so Redis keeps
// a key at least as long as the writer's clock would (longer when it runs
// ahead).
const cutLua = `
local function cut(now)
  local t = redis.call('TIME')
  return math.min(now, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
`

// getWithTime reads key (a record, named what in a not-found error) and
// Redis's TIME in one round trip inside tx, for a write that judges the
// record at the store's time (judgedAt).
func getWithTime(ctx context.Context, tx *goredis.Tx, key, what string) (string, *goredis.TimeCmd, error) {
	var raw *goredis.StringCmd
	var redisNow *goredis.TimeCmd
	if _, err := tx.Pipelined(ctx, func(p goredis.Pipeliner) error {
		raw, redisNow = p.Get(ctx, key), p.Time(ctx)
		return nil
	}); err != nil && !errors.Is(err, goredis.Nil) {
		return "", nil, unavailable(err)
	}
	v, err := raw.Result()
	if err != nil {
		return "", nil, rerr(err, what)
	}
	return v, redisNow, nil
}

// judgedAt is the instant a write judges at what it takes or drops as
// due, as the scripts do (cutLua): the earlier of the writer's now and
// Redis's clock, so that a replica whose clock runs ahead takes nothing
// before Redis's clock agrees.
func judgedAt(now time.Time, redisNow *goredis.TimeCmd) (time.Time, error) {
	t, err := redisNow.Result()
	if err != nil {
		return time.Time{}, unavailable(err)
	}
	if t.Before(now) {
		return t, nil
	}
	return now, nil
}

// liveAt is the instant a narrowing write judges at which sessions are
// still live, and so are its to end (sidecar.LiveAt): the earlier of now
// (the writer's clock, or a sweep's now no later than it) and Redis's
// clock (TIME), read through c, a transaction's connection; it is the
// store's time too, which a last-seen or a start is recorded no later
// than. Every replica judges
// a session at its own clock on read; judged at the writer's clock alone,
// a replica whose clock runs ahead by d took a session with less than d
// left for expired, and neither ended nor evicted it, while the others
// went on honouring it.
func liveAt(ctx context.Context, c goredis.Cmdable, now time.Time) (time.Time, error) {
	return judgedAt(now, c.Time(ctx))
}

// logMember orders index members by time, then id, as fixed-width text so
// that lexicographic order is time order; the customer rides along so a
// reader can find the record.
func logMember(t time.Time, id, customer string) string {
	return fmt.Sprintf("%020d:%s\x00%s", t.UnixNano(), id, customer)
}

func logBound(t time.Time) string { return fmt.Sprintf("%020d:", t.UnixNano()) }

func splitMember(m string) (id, customer string) {
	_, rest, _ := strings.Cut(m, ":")
	id, customer, _ = strings.Cut(rest, "\x00")
	return id, customer
}

// ---- keys ------------------------------------------------------------------

func (s *Store) cust(c, suffix string) string { return s.prefix + ":{cust:" + c + "}:" + suffix }
func (s *Store) tagged(tag, v, suffix string) string {
	k := s.prefix + ":{" + tag + ":" + v + "}"
	if suffix != "" {
		k += ":" + suffix
	}
	return k
}

// watch runs an optimistic transaction on keys (one slot), retrying when
// another writer got there first, after a short random pause so that
// writers contending for the same keys spread out instead of colliding
// again.
func (s *Store) watch(ctx context.Context, fn func(*goredis.Tx) error, keys ...string) error {
	for attempt := range 50 {
		err := s.c.Watch(ctx, fn, keys...)
		if !errors.Is(err, goredis.TxFailedErr) {
			return err
		}
		pause := time.Duration(rand.Int64N(int64(time.Millisecond) * int64(min(attempt+1, 10))))
		select {
		case <-ctx.Done():
			return unavailable(ctx.Err())
		case <-time.After(pause):
		}
	}
	return sidecar.Errorf(sidecar.ECONFLICT, "too many concurrent updates, retry")
}

// ---- customers -------------------------------------------------------------

func (s *Store) PutCustomer(ctx context.Context, c *sidecar.Customer, p sidecar.Protection) ([]sidecar.Session, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	raw, key := encode(c), s.customerKey(c.ID)
	// A session start watches the profile, so it cannot slip in between
	// reading the live set and ending it.
	return s.protectCustomer(ctx, c.ID, c.UpdatedBy, sidecar.EndCustomerProtected, func(tx *goredis.Tx) (bool, error) {
		staff, err := tx.SIsMember(ctx, s.staffKey(), c.ID).Result()
		if err != nil {
			return false, unavailable(err)
		}
		return p.Protects(c.ID, c, staff), nil
	}, func(p goredis.Pipeliner) {
		p.Set(ctx, key, raw, 0)
		p.HSet(ctx, s.spellingsKey(c.ID), spellingProfile+c.ID, encode(&sidecar.Customer{ID: c.ID, Protected: c.Protected, Roles: c.Roles}))
	}, key, s.staffKey())
}

// protectCustomer queues write and, when protected says the customer's
// account is protected once written, ends its live sessions (by, reason),
// in one transaction on {imp} keys; watch are the further keys protected
// reads or write changes. It publishes the customer's key and the ended
// sessions' keys; when that fails it returns the ended sessions with
// sidecar.Unpublished.
func (s *Store) protectCustomer(ctx context.Context, customer, by, reason string, protected func(*goredis.Tx) (bool, error),
	write func(goredis.Pipeliner), watch ...string) ([]sidecar.Session, error) {
	live := s.liveCustomerKey(customer)
	var ended []sidecar.Session
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		ended = ended[:0]
		protect, err := protected(tx)
		if err != nil {
			return err
		}
		var sessions []*sidecar.Session
		var stale []string
		if protect {
			now := s.now()
			at, err := liveAt(ctx, tx, now)
			if err != nil {
				return err
			}
			if sessions, stale, err = s.liveSessions(ctx, tx, live, at); err != nil {
				return err
			}
			for _, ss := range sessions {
				ss.EndedAt, ss.EndedBy, ss.EndReason = now, by, reason
			}
		}
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			write(p)
			s.queueEnds(ctx, p, live, sessions, stale, &ended)
			return nil
		})
		return err
	}, append(watch, live)...)
	keys := append(endedKeys(ended), sidecar.CustomerKey(customer))
	if err != nil {
		return nil, s.evictDespite(ctx, rerr(err, "customer"), keys...)
	}
	return ended, s.publishNarrowed(ctx, keys...)
}

func (s *Store) GetCustomer(ctx context.Context, id string) (*sidecar.Customer, error) {
	raw, err := s.c.Get(ctx, s.customerKey(id)).Result()
	if err != nil {
		return nil, rerr(err, "customer")
	}
	return decode[sidecar.Customer](raw)
}

// DeleteCustomer withdraws the customer's consent with the profile, in
// the same transaction: a profile synced later under the same id must not
// inherit it. History keeps the consent given and records the withdrawal.
// The deletion itself is kept ({imp}:deletions:C, scored by its time) in
// that transaction too, for CustomerDeletions, with the deletions before
// it that are not yet sidecar.AppendOnceWindow old.
func (s *Store) DeleteCustomer(ctx context.Context, id, by string) (*sidecar.CustomerDeletion, error) {
	key, consent, hist, kept := s.customerKey(id), s.consentKey(id), s.consentHistKey(id), s.deletedKey(id)
	var del *sidecar.CustomerDeletion // as kept: Withdrawn nil when no consent is in force
	var withdrawal string             // del.Withdrawn, encoded
	var lapse []goredis.Z             // the consent's lapse, due and not taken yet (dueLapse)
	var due time.Time                 // what is due is judged at (judgedAt)
	// The profile and consent are watched, so a session start that read
	// them cannot slip in between reading the live set and ending it.
	ended, err := s.protectCustomer(ctx, id, by, sidecar.EndCustomerDeleted, func(tx *goredis.Tx) (bool, error) {
		var exists *goredis.IntCmd
		var current *goredis.StringCmd
		var lapsing *goredis.FloatCmd
		var redisNow *goredis.TimeCmd
		_, err := tx.Pipelined(ctx, func(p goredis.Pipeliner) error {
			exists, current, lapsing = p.Exists(ctx, key), p.Get(ctx, consent), p.ZScore(ctx, s.lapsingKey(), id)
			redisNow = p.Time(ctx)
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return false, unavailable(err)
		}
		if exists.Val() == 0 {
			return false, notFound("customer")
		}
		now := s.now()
		if due, err = judgedAt(now, redisNow); err != nil {
			return false, err
		}
		del, withdrawal = &sidecar.CustomerDeletion{By: by, At: now}, ""
		lapse = s.dueLapse(id, lapsing, now, due)
		if raw, err := current.Result(); err == nil {
			c, err := decode[sidecar.Consent](raw)
			if err != nil {
				return false, err
			}
			// In force by Redis's clock too is withdrawn, as its lapse is
			// then not due (dueLapse): one of the two records its end.
			if c.Granted(due) {
				del.Withdrawn = &sidecar.Consent{Customer: id, SetBy: by, SetAt: now, Reason: sidecar.EndCustomerDeleted}
				withdrawal = encode(del.Withdrawn)
			}
		}
		return true, nil
	}, func(p goredis.Pipeliner) {
		p.Del(ctx, key, consent)
		p.HDel(ctx, s.spellingsKey(id), spellingProfile+id)
		p.ZRem(ctx, s.lapsingKey(), id)
		if lapse != nil {
			s.keepLapses(ctx, p, due, lapse...)
		}
		if withdrawal != "" {
			p.LPush(ctx, hist, withdrawal)
			p.LTrim(ctx, hist, 0, consentHistoryLen-1)
		}
		p.ZAdd(ctx, kept, goredis.Z{Score: ms(del.At), Member: encode(del)})
		p.ZRemRangeByScore(ctx, kept, "-inf", strconv.FormatFloat(ms(due.Add(-sidecar.AppendOnceWindow)), 'f', 0, 64))
		p.PExpire(ctx, kept, time.Duration(s.removedKeep(del.At))*time.Millisecond)
	}, key, consent)
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, s.evictDespite(ctx, err, sidecar.ConsentKey(id))
	}
	if perr := s.publishNarrowed(ctx, sidecar.ConsentKey(id)); err == nil {
		err = perr
	}
	del.Ended = ended
	return del, err
}

// CustomerDeletions reads at most scanLimit of them.
func (s *Store) CustomerDeletions(ctx context.Context, id string) ([]sidecar.CustomerDeletion, error) {
	edge := "(" + strconv.FormatFloat(ms(s.now().Add(-sidecar.AppendOnceWindow)), 'f', 0, 64)
	raws, err := s.c.ZRangeByScore(ctx, s.deletedKey(id), &goredis.ZRangeBy{Min: edge, Max: "+inf", Count: scanLimit}).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]sidecar.CustomerDeletion, 0, len(raws))
	for _, raw := range raws {
		del, err := decode[sidecar.CustomerDeletion](raw)
		if err != nil {
			return nil, err
		}
		out = append(out, *del)
	}
	return out, nil
}

// ---- staff -----------------------------------------------------------------

func (s *Store) MarkStaff(ctx context.Context, subject string) ([]sidecar.Session, error) {
	if subject == "" {
		return nil, sidecar.Invalid("subject", "subject is required")
	}
	return s.protectCustomer(ctx, subject, sidecar.SweepActor, sidecar.EndCustomerProtected, func(*goredis.Tx) (bool, error) { return true, nil },
		func(p goredis.Pipeliner) {
			p.SAdd(ctx, s.staffKey(), subject)
			p.HSet(ctx, s.spellingsKey(subject), spellingStaff+subject, "1")
		})
}

// Spellings fields: the spellings hash of a FoldID (spellingsKey) holds,
// for each id under it, "p:<id>" (its profile's protection: ID, Protected
// and Roles) while it has a profile and "s:<id>" once it is marked as
// staff, written and removed in the transaction that writes the profile
// or the mark.
const (
	spellingProfile = "p:"
	spellingStaff   = "s:"
)

// GetCustomerState pipelines its four reads: the keys share {imp}, so
// even in a Cluster they go to one node in one round trip.
func (s *Store) GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error) {
	var cust, consent *goredis.StringCmd
	var staff *goredis.BoolCmd
	var spellings *goredis.MapStringStringCmd
	// An id with capitals also reads its lower-case spelling's profile
	// and staff mark directly: those written before the spellings hash
	// existed are in no hash until written again.
	var foldCust *goredis.StringCmd
	var foldStaff *goredis.BoolCmd
	fold := sidecar.FoldID(customer)
	cmds, _ := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		cust = p.Get(ctx, s.customerKey(customer))
		consent = p.Get(ctx, s.consentKey(customer))
		staff = p.SIsMember(ctx, s.staffKey(), customer)
		spellings = p.HGetAll(ctx, s.spellingsKey(customer))
		if fold != customer {
			foldCust = p.Get(ctx, s.customerKey(fold))
			foldStaff = p.SIsMember(ctx, s.staffKey(), fold)
		}
		return nil
	})
	for _, cmd := range cmds { // a missing record is not a failure
		if err := cmd.Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return nil, unavailable(err)
		}
	}
	st := &sidecar.CustomerState{Staff: staff.Val()}
	if raw, err := cust.Result(); err == nil {
		if st.Customer, err = decode[sidecar.Customer](raw); err != nil {
			return nil, err
		}
	}
	sp, err := otherSpellings(customer, spellings.Val())
	if err != nil {
		return nil, err
	}
	if foldCust != nil && !slices.ContainsFunc(sp, func(v sidecar.Spelling) bool { return v.ID == fold }) {
		v := sidecar.Spelling{ID: fold, Staff: foldStaff.Val()}
		if raw, err := foldCust.Result(); err == nil {
			c, err := decode[sidecar.Customer](raw)
			if err != nil {
				return nil, err
			}
			v.Customer = &sidecar.Customer{ID: fold, Protected: c.Protected, Roles: c.Roles}
		}
		if v.Staff || v.Customer != nil {
			sp = append(sp, v)
			slices.SortFunc(sp, func(a, b sidecar.Spelling) int { return strings.Compare(a.ID, b.ID) })
		}
	}
	st.Spellings = sp
	if raw, err := consent.Result(); err == nil {
		c, err := decode[sidecar.Consent](raw)
		if err != nil {
			return nil, err
		}
		if c.ExpiresAt.IsZero() || s.now().Before(c.ExpiresAt) {
			st.Consent = c
		}
	}
	return st, nil
}

// otherSpellings reads a spellings hash (spellingsKey) into the spellings
// other than customer, in the order of their ids.
func otherSpellings(customer string, h map[string]string) ([]sidecar.Spelling, error) {
	if len(h) == 0 {
		return nil, nil
	}
	byID := map[string]*sidecar.Spelling{}
	var out []sidecar.Spelling
	for field, raw := range h {
		kind, id := field[:min(2, len(field))], field[min(2, len(field)):]
		if id == customer {
			continue
		}
		v := byID[id]
		if v == nil {
			v = &sidecar.Spelling{ID: id}
			byID[id] = v
		}
		switch kind {
		case spellingStaff:
			v.Staff = true
		case spellingProfile:
			c, err := decode[sidecar.Customer](raw)
			if err != nil {
				return nil, err
			}
			v.Customer = c
		}
	}
	for _, v := range byID {
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b sidecar.Spelling) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ---- consent ---------------------------------------------------------------

func (s *Store) SetConsent(ctx context.Context, c *sidecar.Consent) ([]sidecar.Session, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	raw := encode(c)
	var ttl time.Duration
	if !c.ExpiresAt.IsZero() {
		ttl = s.ttl(c.ExpiresAt)
	}
	key, hist, live := s.consentKey(c.Customer), s.consentHistKey(c.Customer), s.liveCustomerKey(c.Customer)
	var ended, covered []sidecar.Session
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		ended, covered = ended[:0], covered[:0]
		now := s.now()
		var lapsing *goredis.FloatCmd
		var redisNow *goredis.TimeCmd
		_, err := tx.Pipelined(ctx, func(p goredis.Pipeliner) error {
			lapsing, redisNow = p.ZScore(ctx, s.lapsingKey(), c.Customer), p.Time(ctx)
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return unavailable(err)
		}
		due, err := judgedAt(now, redisNow)
		if err != nil {
			return err
		}
		// The sessions live at due, as liveAt judges them, are the ones
		// this consent must cover or end.
		sessions, stale, err := s.liveSessions(ctx, tx, live, due)
		if err != nil {
			return err
		}
		lapse := s.dueLapse(c.Customer, lapsing, now, due)
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.Set(ctx, key, raw, ttl)
			if lapse != nil {
				s.keepLapses(ctx, p, due, lapse...)
			}
			if c.Allowed && !c.ExpiresAt.IsZero() {
				p.ZAdd(ctx, s.lapsingKey(), goredis.Z{Score: ms(c.ExpiresAt), Member: c.Customer})
			} else {
				p.ZRem(ctx, s.lapsingKey(), c.Customer)
			}
			p.LPush(ctx, hist, raw)
			p.LTrim(ctx, hist, 0, consentHistoryLen-1)
			kept := s.consentsSetKey()
			p.ZAdd(ctx, kept, goredis.Z{Score: ms(c.SetAt), Member: raw})
			p.ZRemRangeByScore(ctx, kept, "-inf", "("+strconv.FormatFloat(ms(due.Add(-sidecar.AppendOnceWindow)), 'f', 0, 64))
			p.PExpire(ctx, kept, sidecar.AppendOnceWindow)
			var uncovered []*sidecar.Session
			for _, ss := range sessions {
				switch {
				case !c.Covers(ss, now):
					ss.EndedAt, ss.EndedBy, ss.EndReason = now, c.SetBy, sidecar.EndConsentWithdrawn
					uncovered = append(uncovered, ss)
				case !ss.ConsentExpiresAt.Equal(c.ExpiresAt): // covered: under this consent from now on
					ss.ConsentExpiresAt = c.ExpiresAt
					s.setSession(ctx, p, ss)
					covered = append(covered, *ss)
				}
			}
			s.queueEnds(ctx, p, live, uncovered, stale, &ended)
			return nil
		})
		return err
	}, key, live)
	keys := append(append(endedKeys(ended), endedKeys(covered)...), sidecar.ConsentKey(c.Customer))
	if err != nil {
		return nil, s.evictDespite(ctx, rerr(err, "consent"), keys...)
	}
	return ended, s.publishNarrowed(ctx, keys...)
}

// TakeLapsedConsents keeps what it takes in {imp}:lapsed, scored by now,
// in the transaction that takes it. It takes what lapsed by Redis's clock
// too (judgedAt), read in the same round trip: a sweeper whose clock runs
// ahead takes a lapse when it comes, not before.
func (s *Store) TakeLapsedConsents(ctx context.Context, now time.Time) ([]sidecar.Consent, error) {
	key := s.lapsingKey()
	var out []sidecar.Consent
	err := s.watch(ctx, func(tx *goredis.Tx) error {
		out = out[:0]
		var lapsing *goredis.ZSliceCmd
		var redisNow *goredis.TimeCmd
		_, err := tx.Pipelined(ctx, func(p goredis.Pipeliner) error {
			lapsing = p.ZRangeByScoreWithScores(ctx, key, &goredis.ZRangeBy{Min: "-inf", Max: strconv.FormatFloat(ms(now), 'f', 0, 64),
				Count: sidecar.MaxPageLimit})
			redisNow = p.Time(ctx)
			return nil
		})
		if err != nil {
			return err
		}
		at, err := judgedAt(now, redisNow)
		if err != nil {
			return err
		}
		due := slices.DeleteFunc(lapsing.Val(), func(z goredis.Z) bool { return z.Score > ms(at) })
		if len(due) == 0 {
			return nil
		}
		members, taken := make([]any, len(due)), make([]goredis.Z, len(due))
		for i, z := range due {
			members[i] = z.Member
			out = append(out, lapsed(z.Member.(string), z.Score))
			taken[i] = goredis.Z{Score: ms(now), Member: encode(&out[i])}
		}
		// Whoever removes them reports them: once across replicas.
		_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.ZRem(ctx, key, members...)
			s.keepLapses(ctx, p, at, taken...)
			return nil
		})
		return err
	}, key)
	if err != nil {
		return nil, rerr(err, "consent")
	}
	return out, nil
}

// lapsed is the consent of customer that lapsed at score, its expiry in
// {imp}:lapsing, as a take reports it.
func lapsed(customer string, score float64) sidecar.Consent {
	return sidecar.Consent{Customer: customer, Allowed: true, ExpiresAt: time.UnixMilli(int64(score)).UTC()}
}

// keepLapses queues keeping taken, lapses scored by when they were
// taken, in {imp}:lapsed, and forgetting the takes past
// sidecar.AppendOnceWindow before due (judgedAt): a replica whose clock
// runs ahead does not forget takes the others may still read back.
func (s *Store) keepLapses(ctx context.Context, p goredis.Pipeliner, due time.Time, taken ...goredis.Z) {
	kept := s.lapsedKey()
	p.ZAdd(ctx, kept, taken...)
	p.ZRemRangeByScore(ctx, kept, "-inf", "("+strconv.FormatFloat(ms(due.Add(-sidecar.AppendOnceWindow)), 'f', 0, 64))
	p.PExpire(ctx, kept, sidecar.AppendOnceWindow)
}

// dueLapse is the lapse of customer's consent, read from {imp}:lapsing
// (score), as kept when taken at now by the write that replaces the
// consent; none when it is not due at due (judgedAt), or there is none:
// a consent replaced before it lapsed by Redis's clock did not lapse. A write that
// replaces a consent removes it from {imp}:lapsing, and a lapse no sweep
// took yet would be recorded by none. A sweep may take it between the
// read and the write (the index is not watched, so that consent writes
// of different customers do not conflict): both then keep the same
// member, recorded once under its Once.
func (s *Store) dueLapse(customer string, score *goredis.FloatCmd, now, due time.Time) []goredis.Z {
	at, err := score.Result()
	if err != nil || at > ms(due) {
		return nil
	}
	c := lapsed(customer, at)
	return []goredis.Z{{Score: ms(now), Member: encode(&c)}}
}

// ConsentsSet reads every setting kept.
func (s *Store) ConsentsSet(ctx context.Context, since time.Time) ([]sidecar.Consent, error) {
	return s.keptConsents(ctx, s.consentsSetKey(), since)
}

// LapsedConsentsTaken reads every take kept.
func (s *Store) LapsedConsentsTaken(ctx context.Context, since time.Time) ([]sidecar.Consent, error) {
	return s.keptConsents(ctx, s.lapsedKey(), since)
}

// keptConsents reads every consent kept under key since since (readKept).
func (s *Store) keptConsents(ctx context.Context, key string, since time.Time) ([]sidecar.Consent, error) {
	var out []sidecar.Consent
	err := s.readKept(ctx, key, since, func(raws []string) error {
		for _, raw := range raws {
			c, err := decode[sidecar.Consent](raw)
			if err != nil {
				return err
			}
			out = append(out, *c)
		}
		return nil
	})
	return out, err
}

func (s *Store) GetConsent(ctx context.Context, customer string) (*sidecar.Consent, error) {
	raw, err := s.c.Get(ctx, s.consentKey(customer)).Result()
	if err != nil {
		return nil, rerr(err, "consent")
	}
	c, err := decode[sidecar.Consent](raw)
	if err != nil {
		return nil, err
	}
	if !c.ExpiresAt.IsZero() && !s.now().Before(c.ExpiresAt) {
		return nil, notFound("consent")
	}
	return c, nil
}

func (s *Store) ConsentHistory(ctx context.Context, customer string, p sidecar.Page) ([]sidecar.Consent, string, error) {
	start := 0
	if p.Cursor != "" {
		n, err := strconv.Atoi(p.Cursor)
		if err != nil || n < 0 {
			return nil, "", sidecar.Invalid("cursor", "malformed cursor")
		}
		start = n
	}
	// One extra tells whether another page follows.
	raws, err := s.c.LRange(ctx, s.consentHistKey(customer), int64(start), int64(start+p.N())).Result()
	if err != nil {
		return nil, "", unavailable(err)
	}
	next := ""
	if len(raws) > p.N() {
		raws = raws[:p.N()]
		next = strconv.Itoa(start + p.N())
	}
	out := make([]sidecar.Consent, 0, len(raws))
	for _, raw := range raws {
		c, err := decode[sidecar.Consent](raw)
		if err != nil {
			return nil, "", err
		}
		out = append(out, *c)
	}
	return out, next, nil
}
