package resolve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// SessionState is what the check path reads: sessions by token hash, the
// customer's current consent and protection, the occasional last-seen
// write, and eviction messages from other replicas.
type SessionState interface {
	SessionByToken(ctx context.Context, tokenHash string) (*sidecar.Session, error)
	GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error)
	TouchSession(ctx context.Context, id string, at time.Time) error
	Subscribe(fn func(key string)) (cancel func())
}

// SessionResolver resolves the Login as Customer session cookie of a
// storefront request into a delegation. Sessions are cached locally and
// evicted by invalidation messages; at steady state a check costs no store
// round trip except one refresh per CacheTTL and one last-seen write per
// TouchInterval for each live session (or per third of its idle timeout,
// if shorter; never more than one a second).
//
// Idleness is the store's to judge, from the last-seen it holds: the
// resolver counts only last-seen times the store holds (read, or written
// here), never requests whose write was skipped or failed, and reads a
// session again before denying it as idle, since another replica may have
// written since. The store refuses the last-seen write of a session it
// holds ended or lapsed, and that refusal denies the request here.
//
// Consent and protection are part of every decision: the customer's
// current consent, profile and staff mark are read together (one store
// round trip) through a second cache, evicted by the consent and the
// customer invalidation keys, so a withdrawal or a lapse denies the next
// request on every replica even if the session itself were still cached
// as live. The resolver refuses what consent refuses; it hands the
// customer's protection to policy (Delegation.SubjectProtected and
// SubjectRoles), which owns the protected_roles and protected_customers
// lists, so a change of policy data also takes effect on the next request.
//
// A session is bounded by the session limits of the policy data deciding
// the request (impersonation.max_session and idle_timeout,
// sidecar.Session.Within) as well as by those it stored at its start: a
// cached session that lowered limits cut is denied at its next request,
// on every replica serving that data, as expired or idle.
//
// A cookie that names no live session resolves to no delegation and an
// EUNAUTHORIZED error whose Message is the reason for policy
// (session_unknown, session_ended, session_expired, session_idle,
// session_replaced, session_consent_withdrawn, session_consent_expired,
// session_revoked); the error carries a sidecar.ClearCookie so the denial
// tells the browser to drop the cookie. A refusal of a cookie that named
// a session carries it as a sidecar.Attempt (its id, actor and customer)
// for the decision record.
//
// A live session is bound: honoured only on the storefront hosts (those
// configured, else the host its link was redeemed on: session_wrong_host),
// and never for a request whose verified identity is someone other than
// its actor (session_actor_mismatch). Those cookies are not cleared: they
// are still good where and for whom they were issued.
type SessionResolver struct {
	state      SessionState
	cookie     string
	clear      *sidecar.ClearCookie
	hosts      []string // lower case; empty: the session's own host
	cacheTTL   time.Duration
	touchEvery time.Duration
	maxEntries int
	clock      sidecar.Clock
	logger     *slog.Logger
	obs        CacheObserver
	rules      *delegation.RuleBook // session limits of the policy data
	cancel     func()

	mu      sync.RWMutex // simplelru is not safe for concurrent use; Peek only reads
	entries *simplelru.LRU[[sha256.Size]byte, *sessionEntry]
	gen     uint64 // under mu; bumped by every session eviction, so a fetch that raced one is not cached
	// deaf is set from sidecar.InvalidationsLost to the next InvalidateAll:
	// a hit is read again, as Cache.Load does.
	deaf atomic.Bool

	// customers holds each customer's state under its folded id
	// (sidecar.FoldID), keyed by the id as the session names it, evicted
	// by the "consent:" and "customer:" keys of any spelling: the other
	// spellings' profiles and staff marks protect it too.
	customers *Cache[string, *sidecar.CustomerState]
}

type sessionEntry struct {
	session   *sidecar.Session // never mutated once cached
	deleg     sidecar.Delegation
	fetchedAt time.Time
	// seen is the latest last-seen (unix nanos; the start before any)
	// this replica knows the store holds: read with the session, or
	// written here since. Requests
	// the store never heard of do not count: idleness is the store's to
	// judge, and a replica that counted them would honour a session the
	// store holds idle (and a new start of its actor ends).
	seen      atomic.Int64
	lastTouch atomic.Int64 // unix nanos of the last last-seen write attempt
}

var _ sidecar.DelegationResolver = (*SessionResolver)(nil)

// Cache kinds the session resolver reports to a CacheObserver. The
// consents cache holds each customer's consent with its profile and staff
// mark (sidecar.CustomerState).
const (
	CacheSessions = "sessions"
	CacheConsents = "consents"
)

// minTouchInterval bounds how often a session's last-seen is written
// because its idle timeout is short.
const minTouchInterval = time.Second

// touchInterval is the least time between last-seen writes for a session
// with idle timeout idle: the configured interval, but at most a third of
// the idle timeout, so that a session used at least every two thirds of
// its idle timeout never lapses between writes, whatever the two settings.
// The idle timeout is the session's own (policy data at its start), or
// the current one if shorter. Below three seconds of idle timeout the
// third is rounded up to a second.
func touchInterval(every, idle time.Duration) time.Duration {
	if idle <= 0 {
		return every
	}
	return min(every, max(idle/3, minTouchInterval))
}

// consentNegativeTTL bounds how long "no consent" is remembered: a
// customer granting consent publishes an eviction anyway.
const consentNegativeTTL = time.Second

// SessionResolverOption configures a SessionResolver.
type SessionResolverOption func(*SessionResolver)

// WithSessionClock sets the clock.
func WithSessionClock(c sidecar.Clock) SessionResolverOption {
	return func(r *SessionResolver) { r.clock = c }
}

// WithSessionLogger sets the logger.
func WithSessionLogger(l *slog.Logger) SessionResolverOption {
	return func(r *SessionResolver) { r.logger = l }
}

// WithSessionPolicyData sets where the session limits are read when a
// request carries no policy data (sidecar.Request.PolicyData): the active
// policy data. Without it such a request's sessions are bounded only by
// what they stored at their start.
func WithSessionPolicyData(data delegation.PolicyData) SessionResolverOption {
	return func(r *SessionResolver) { r.rules = delegation.NewRuleBook(data) }
}

// WithSessionObserver counts cache hits, misses and evictions.
func WithSessionObserver(o CacheObserver) SessionResolverOption {
	return func(r *SessionResolver) { r.obs = o }
}

// NewSessionResolver returns a resolver on state with the impersonation
// config section. Close stops its subscription.
func NewSessionResolver(state SessionState, cfg delegation.ImpersonationConfig, opts ...SessionResolverOption) *SessionResolver {
	cfg.SetDefaults()
	r := &SessionResolver{
		state:      state,
		cookie:     cfg.SessionCookie,
		clear:      &sidecar.ClearCookie{SetCookie: cfg.SessionCookie + "=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"},
		cacheTTL:   cfg.CacheTTL,
		touchEvery: cfg.TouchInterval,
		maxEntries: cfg.CacheSize,
		clock:      time.Now,
		logger:     slog.Default(),
		obs:        nopObserver{},
		rules:      delegation.NewRuleBook(nil),
	}
	for _, h := range cfg.StorefrontHosts {
		r.hosts = append(r.hosts, sidecar.HostName(h))
	}
	for _, o := range opts {
		o(r)
	}
	// The size is positive, the only way NewLRU fails.
	r.entries, _ = simplelru.NewLRU[[sha256.Size]byte, *sessionEntry](max(1, r.maxEntries), nil)
	r.customers = NewCache[string, *sidecar.CustomerState](CacheConsents, sidecar.ConsentKey(""),
		CacheConfig{TTL: r.cacheTTL, NegativeTTL: min(consentNegativeTTL, r.cacheTTL), Size: r.maxEntries}, r.clock, r.obs)
	r.customers.hears = hearingOf(state)
	r.cancel = state.Subscribe(r.evict)
	return r
}

// Close stops listening for evictions.
func (r *SessionResolver) Close() error {
	if r.cancel != nil {
		r.cancel()
	}
	return nil
}

func (r *SessionResolver) evict(key string) {
	if c, ok := strings.CutPrefix(key, sidecar.CustomerKey("")); ok {
		key = sidecar.ConsentKey(c) // the profile is cached with the consent
	}
	if c, ok := strings.CutPrefix(key, sidecar.ConsentKey("")); ok {
		r.customers.Evict(sidecar.ConsentKey(sidecar.FoldID(c)))
	} else {
		r.customers.Evict(key)
	}
	if key == sidecar.InvalidationsLost {
		r.deaf.Store(true)
		return
	}
	if key == sidecar.InvalidateAll { // messages may have been lost: trust nothing cached
		r.mu.Lock()
		r.entries.Purge()
		r.gen++
		r.mu.Unlock()
		r.deaf.Store(false)
		r.obs.Evict(CacheSessions)
		return
	}
	h, ok := strings.CutPrefix(key, "session:")
	if !ok {
		return
	}
	var k [sha256.Size]byte
	if n, err := hex.Decode(k[:], []byte(h)); err != nil || n != sha256.Size {
		return
	}
	r.mu.Lock()
	had := r.entries.Remove(k)
	r.gen++ // even with nothing cached: a fetch may be in flight
	r.mu.Unlock()
	if had {
		r.obs.Evict(CacheSessions)
	}
}

// Resolve implements sidecar.DelegationResolver.
func (r *SessionResolver) Resolve(ctx context.Context, req *sidecar.Request, id *sidecar.Identity) (*sidecar.Delegation, error) {
	header := req.Header("cookie")
	token, rest := cookieValue(header, r.cookie)
	if token == "" {
		return nil, nil
	}
	if next, _ := cookieValue(rest, r.cookie); next != "" {
		return r.resolveAmong(ctx, req, id, header)
	}
	return r.resolveToken(ctx, req, id, token)
}

// maxSessionCookies bounds the values of the session cookie one request
// may carry: each may be a store read. An honest browser sends one.
const maxSessionCookies = 4

// resolveAmong resolves a request carrying several values of the session
// cookie. A browser sends them when a host under the same registrable
// domain, or a script on one, set a cookie of that name with a Domain or a
// longer Path: the planted one comes first. Going by the first alone let
// a junk value deny the request and its clearing answer delete the real
// cookie. So every value is read, and values that name no session at all
// are passed over: the one live session among the rest is honoured. When
// another value names a session too (someone else's, or an ended one, as
// a planted live session beside the browser's own ended one would be),
// neither can be told to be the browser's own: the request is refused
// (session_ambiguous) and no cookie is cleared, as one may be good. A
// request whose values all fail is refused as the first that named a
// session is, so its record says whose session it was (attempted_*), or
// else as the first. A value refused for a fault of the store (not a
// refusal of the value) is returned as it is: it may have been the other
// live session.
func (r *SessionResolver) resolveAmong(ctx context.Context, req *sidecar.Request, id *sidecar.Identity, header string) (*sidecar.Delegation, error) {
	ambiguous := sidecar.Refused(sidecar.EUNAUTHORIZED, "session_ambiguous", nil)
	var tokens []string
	n := 0
	for v, rest := cookieValue(header, r.cookie); v != ""; v, rest = cookieValue(rest, r.cookie) {
		if n++; n > maxSessionCookies {
			return nil, ambiguous
		}
		if !slices.Contains(tokens, v) {
			tokens = append(tokens, v)
		}
	}
	var found *sidecar.Delegation
	var refused, named error
	for _, token := range tokens {
		d, err := r.resolveToken(ctx, req, id, token)
		var a *sidecar.Attempt
		switch {
		case err != nil && sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED:
			return nil, err
		case err != nil:
			if refused == nil {
				refused = err
			}
			if named == nil && errors.As(err, &a) {
				named = err
			}
		case d == nil:
		case found != nil && found.ID != d.ID:
			return nil, ambiguous
		default:
			found = d
		}
	}
	switch {
	case found != nil && named != nil:
		return nil, ambiguous
	case found != nil:
		return found, nil
	case named != nil:
		return nil, named
	}
	return nil, refused
}

// resolveToken resolves one value of the session cookie.
func (r *SessionResolver) resolveToken(ctx context.Context, req *sidecar.Request, id *sidecar.Identity, token string) (*sidecar.Delegation, error) {
	if len(token) > maxToken {
		return nil, r.sessionError("unknown")
	}
	// Hash from a stack buffer: []byte(token) would allocate for tokens
	// longer than 32 bytes, and this is every impersonated check.
	var buf [maxToken]byte
	key := sha256.Sum256(buf[:copy(buf[:], token)])
	now := r.clock()
	lim, err := r.rules.Limits(req.PolicyData)
	if err != nil { // refused at activation; never served
		return nil, sidecar.Refused(sidecar.EUNAVAILABLE, "session_state_unavailable", err)
	}

	r.mu.RLock()
	e, _ := r.entries.Peek(key)
	r.mu.RUnlock()
	// A cached session that looks idle is read again before it is denied:
	// another replica may have written its last-seen since.
	// While the store does not hear invalidations, a fresh entry is read
	// again too (an end on another replica would not drop it); it decides
	// only when the store cannot be read, as during any outage.
	fresh := e != nil && now.Sub(e.fetchedAt) < r.cacheTTL && !e.lapsedIdle(now, lim)
	if fresh && !r.deaf.Load() && r.customers.trusted() {
		r.obs.Hit(CacheSessions)
	} else {
		r.obs.Miss(CacheSessions)
		read, err := r.fetch(ctx, key, now)
		switch {
		case err != nil && !fresh:
			return nil, err
		case err != nil: // unavailable: the fresh entry decides
		case read == nil:
			return nil, r.sessionError("unknown")
		default:
			e = read
		}
	}

	b := e.session.Within(lim)
	// From here the cookie named a session: a refusal says which, for
	// the decision record (a cookie used with someone else's token, or
	// after its end, is one that left its owner's browser).
	if st := e.endState(&b, now); st != "" {
		return nil, attempted(r.sessionError(st), e.session)
	}
	cs, err := r.customerState(ctx, e.session, now)
	if err != nil {
		return nil, attempted(err, e.session)
	}
	if !r.hostAllowed(req.Host, e.session.Host) {
		return nil, attempted(sidecar.Refused(sidecar.EUNAUTHORIZED, "session_wrong_host", nil), e.session)
	}
	if id != nil && id.Subject != e.session.Actor {
		return nil, attempted(sidecar.Refused(sidecar.EUNAUTHORIZED, "session_actor_mismatch", nil), e.session)
	}
	if err := r.touch(ctx, key, e, touchInterval(r.touchEvery, b.IdleTimeout), now); err != nil {
		return nil, attempted(err, e.session)
	}
	d := new(sidecar.Delegation)
	*d = e.deleg
	d.ExpiresAt = b.ExpiresAt
	d.SubjectProtected = cs.Staff || cs.SpellingProtected()
	if c := cs.Customer; c != nil {
		d.SubjectProtected = d.SubjectProtected || c.Protected
		d.SubjectRoles = c.Roles // cached values are never modified
	}
	// The other spellings' roles count as the customer's: policy refuses
	// a protected role on any of them. Usually there are none.
	for _, v := range cs.Spellings {
		if v.Customer != nil && len(v.Customer.Roles) > 0 {
			d.SubjectRoles = append(slices.Clip(d.SubjectRoles), v.Customer.Roles...)
		}
	}
	return d, nil
}

func (r *SessionResolver) fetch(ctx context.Context, key [sha256.Size]byte, now time.Time) (*sessionEntry, error) {
	// An eviction between the store's answer and the Add below would
	// otherwise be undone: the session ended there would stay live here
	// until cacheTTL. As Cache.put does, the generation read before the
	// store read must still hold when the answer is cached.
	r.mu.RLock()
	gen := r.gen
	r.mu.RUnlock()
	s, err := r.state.SessionByToken(ctx, hex.EncodeToString(key[:]))
	switch sidecar.ErrorCode(err) {
	case "":
	case sidecar.ENOTFOUND:
		return nil, nil
	default:
		return nil, sidecar.Refused(sidecar.EUNAVAILABLE, "session_state_unavailable", err)
	}
	e := &sessionEntry{
		session:   s,
		fetchedAt: now,
		deleg: sidecar.Delegation{
			Mode:        sidecar.ModeImpersonation,
			ID:          s.ID,
			Actor:       s.Actor,
			ActorName:   s.ActorName,
			ActorRoles:  s.ActorRoles,
			Subject:     s.Customer,
			SubjectName: s.CustomerName,
			StoreView:   s.StoreView,
			Reason:      s.Reason,
			Ticket:      s.Ticket,
			ExpiresAt:   s.ExpiresAt,
		},
	}
	// The store's last-seen counts as a touch, so a refreshed entry does
	// not write again straight away.
	if s.LastSeen.After(s.StartedAt) {
		e.seen.Store(s.LastSeen.UnixNano())
	} else {
		e.seen.Store(s.StartedAt.UnixNano())
	}
	e.lastTouch.Store(s.LastSeen.UnixNano())
	r.mu.RLock()
	if old, _ := r.entries.Peek(key); old != nil {
		// A write of this replica the read may have missed: the store
		// keeps the latest last-seen, so it holds that one or a later one.
		if t := old.seen.Load(); t > e.seen.Load() {
			e.seen.Store(t)
		}
		if t := old.lastTouch.Load(); t > e.lastTouch.Load() {
			e.lastTouch.Store(t)
		}
	}
	r.mu.RUnlock()
	r.mu.Lock()
	if r.gen == gen {
		r.entries.Add(key, e) // drops the oldest entry when full
	}
	r.mu.Unlock()
	return e, nil
}

// customerState is the current consent and protection of s's customer; it
// denies when the consent does not allow impersonation at now, or ends
// before s does: the store ended s when the consent was narrowed so
// (sidecar.Consent.Covers), and the consent's eviction alone then ends s
// on every replica, even where the session's own eviction was lost.
func (r *SessionResolver) customerState(ctx context.Context, s *sidecar.Session, now time.Time) (*sidecar.CustomerState, error) {
	customer := s.Customer
	tag := sidecar.FoldID(customer)
	cs, _, hit := r.customers.peek(tag, customer)
	if hit && r.customers.trusted() {
		r.obs.Hit(CacheConsents)
	} else {
		var err error
		// "Found" is a live consent: without one the entry lives only for
		// the negative TTL, and the request is denied either way.
		cs, _, err = r.customers.Load(ctx, tag, customer, func(ctx context.Context) (*sidecar.CustomerState, bool, error) {
			cs, err := r.state.GetCustomerState(ctx, customer)
			if err != nil {
				return nil, false, err
			}
			return cs, cs.Consent != nil, nil
		})
		if err != nil {
			return nil, sidecar.Refused(sidecar.EUNAVAILABLE, "session_state_unavailable", err)
		}
	}
	switch c := cs.Consent; {
	case c == nil || !c.Allowed:
		return nil, r.sessionError(sidecar.EndConsentWithdrawn)
	case !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt):
		return nil, r.sessionError(sidecar.EndConsentExpired)
	case !c.ExpiresAt.IsZero() && s.ExpiresAt.After(c.ExpiresAt):
		return nil, r.sessionError(sidecar.EndConsentWithdrawn)
	}
	return cs, nil
}

// touch writes the session's last-seen at most once per every (the
// touchInterval of its idle timeout within the current limits). The store
// refuses a session it no longer holds live (ended, or lapsed by its own
// last-seen): that refusal is the session's end here too, the request is
// denied and its cookie cleared, and the entry is dropped so the next
// request reads what the store holds. Any other failure is logged: the
// session was live at its last-seen as this replica knows it, which the
// store holds too, or a later one.
func (r *SessionResolver) touch(ctx context.Context, key [sha256.Size]byte, e *sessionEntry, every time.Duration, now time.Time) error {
	nowNS := now.UnixNano()
	last := e.lastTouch.Load()
	if nowNS-last < int64(every) || !e.lastTouch.CompareAndSwap(last, nowNS) {
		return nil
	}
	err := r.state.TouchSession(ctx, e.session.ID, now)
	if err == nil {
		if nowNS > e.seen.Load() {
			e.seen.Store(nowNS)
		}
		return nil
	}
	state, over := sidecar.SessionOverState(err)
	if !over && sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		state, over = "unknown", true
	}
	if !over {
		r.logger.Warn("session last-seen not recorded", "session", e.session.ID, "error", err)
		return nil
	}
	r.mu.Lock()
	if cur, _ := r.entries.Peek(key); cur == e {
		r.entries.Remove(key)
	}
	r.mu.Unlock()
	return r.sessionError(state)
}

// endState is Session.EndState of b, the entry's session within the
// current limits, with last-seen as this replica knows the store holds it
// (seen).
func (e *sessionEntry) endState(b *sidecar.Session, now time.Time) string {
	switch {
	case !b.EndedAt.IsZero(), !now.Before(b.ExpiresAt):
		return b.EndState(now) // its end, expired, or consent_expired
	case lapsedIdle(b, e.seen.Load(), now):
		return sidecar.EndIdle
	}
	return ""
}

// lapsedIdle reports whether the session, not ended nor expired within
// l, is idle at now within l by the latest last-seen this replica knows
// the store holds.
func (e *sessionEntry) lapsedIdle(now time.Time, l sidecar.SessionLimits) bool {
	b := e.session.Within(l)
	return lapsedIdle(&b, e.seen.Load(), now)
}

// lapsedIdle reports whether b, not ended nor expired, is idle at now
// with its last-seen at seen (unix nanos).
func lapsedIdle(b *sidecar.Session, seen int64, now time.Time) bool {
	if !b.EndedAt.IsZero() || !now.Before(b.ExpiresAt) || b.IdleTimeout <= 0 {
		return false
	}
	return now.UnixNano()-seen >= int64(b.IdleTimeout)
}

// maxToken bounds the cookie value: real tokens are 43 bytes.
const maxToken = 128

// attempted is err naming s as the session a refused cookie named: its
// id, actor and customer, never its token.
func attempted(err error, s *sidecar.Session) error {
	return sidecar.WithAttempt(err, sidecar.Attempt{OnBehalfOf: s.Customer, Session: s.ID, SessionActor: s.Actor})
}

// sessionError is the denial of a cookie that names no live session.
func (r *SessionResolver) sessionError(state string) error {
	return sidecar.Refused(sidecar.EUNAUTHORIZED, "session_"+state, r.clear)
}

// hostAllowed reports whether a request to host may use a session
// redeemed on own, both read strictly (sidecar.ParseHost: the check hands
// its decided host, a session records the host it was redeemed on) and
// compared by name. Ports are ignored, as browsers ignore them for
// cookies. A session bound to no host (redeemed before redeeming required
// one), or a host that is not one, matches none.
func (r *SessionResolver) hostAllowed(host, own string) bool {
	name := sidecar.HostName(host)
	if name == "" {
		return false
	}
	if len(r.hosts) == 0 {
		return sidecar.HostName(own) == name
	}
	return slices.Contains(r.hosts, name)
}

// cookieValue finds name's first non-empty value in a Cookie header
// without allocating, and returns it with the rest of the header after it.
func cookieValue(header, name string) (value, rest string) {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if ok && k == name {
			if v = strings.Trim(v, `"`); v != "" {
				return v, header
			}
		}
	}
	return "", ""
}
