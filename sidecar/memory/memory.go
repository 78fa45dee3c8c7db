// Package memory is Deputy's embedded state store: every sidecar.Store
// method on mutex-protected maps in this process, expiries decided by the
// injected clock, streams as bounded slices and invalidations delivered
// locally. It is the default for a single replica and for trying Deputy
// out; state does not survive a restart.
package memory

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults.
const (
	DefaultRetention    = 90 * 24 * time.Hour // ended sessions and decided requests
	DefaultEventsMaxLen = 100_000
	DefaultAuditMaxLen  = 100_000
	// DefaultAuditSelfMaxLen bounds the self-service records of the audit
	// trail (sidecar.AuditEntry.SelfService), kept apart from the others.
	DefaultAuditSelfMaxLen = 100_000
	DefaultConsentMaxLen   = 100 // history entries kept per customer
)

// scanLimit bounds how many stream entries one read examines, so a
// selective filter cannot make a read walk the whole stream.
const scanLimit = 10 * sidecar.MaxPageLimit

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that decides expiry.
func WithClock(c sidecar.Clock) Option { return func(s *Store) { s.now = c } }

// WithRetention sets how long ended sessions and decided or expired
// access requests are kept for the logs.
func WithRetention(d time.Duration) Option { return func(s *Store) { s.retention = d } }

// WithStreamMaxLen bounds the events and audit streams; the oldest entries
// are dropped first.
func WithStreamMaxLen(events, audit int) Option {
	return func(s *Store) { s.eventsMax, s.auditMax = events, audit }
}

// WithAuditSelfMaxLen bounds the self-service records of the audit trail,
// which are trimmed apart from the others.
func WithAuditSelfMaxLen(n int) Option { return func(s *Store) { s.auditSelfMax = n } }

// Store is the in-process sidecar.Store.
type Store struct {
	now          sidecar.Clock
	cursors      *sidecar.Cursors // the process's own key: cursors live as long as the records
	retention    time.Duration
	eventsMax    int
	auditMax     int
	auditSelfMax int

	mu        sync.RWMutex
	customers map[string]*sidecar.Customer
	deletions map[string][]sidecar.CustomerDeletion // customer → its deletions, oldest first, for sidecar.AppendOnceWindow
	deleted   []deletedRef                          // every kept deletion, in the order made: pruned from the front
	staff     map[string]bool                       // subjects that acted as staff
	spellings map[string]map[string]struct{}        // FoldID → the ids under it with a profile or a staff mark
	consent   map[string]*sidecar.Consent
	history   map[string][]sidecar.Consent // oldest first
	lapsing   map[string]time.Time         // customer → expiry of a consent given until then
	lapsed    window[sidecar.Consent]      // consents taken from lapsing, for sidecar.AppendOnceWindow
	set       window[sidecar.Consent]      // consents set, by SetAt, for sidecar.AppendOnceWindow
	ended     window[string]               // ids of sessions ended, in the order of their end, for sidecar.AppendOnceWindow
	// budgets: the changes each customer made to their own consent in
	// the current window; windows that ended are pruned once the map has
	// doubled since the last pruning (pruneAt).
	budgets    map[string]consentWindow
	pruneAt    int
	sessions   map[string]*sidecar.Session
	tokens     map[string]string // token hash → session id
	sessionLog []string          // logKey(started, id), ascending
	redeem     map[string]redeemCode
	requests   map[string]*sidecar.AccessRequest
	requestLog []string                             // logKey(created, id), ascending
	grants     map[string]map[string]*sidecar.Grant // customer → org\x00user → grant
	order      map[string]map[string]int64          // customer → org: last Seq taken; org\x00user: Seq of the last grant written or revocation
	revoked    map[string]map[string]sidecar.Grant  // customer → grant id → the grant as revoked, until it would have expired
	decided    window[string]                       // ids of requests decided or marked recorded, for sidecar.AppendOnceWindow
	created    window[string]                       // ids of requests created, by CreatedAt, for sidecar.AppendOnceWindow
	revokes    window[[2]string]                    // customer and id of grants revoked, by RevokedAt, for sidecar.AppendOnceWindow
	held       map[string]map[string][]sidecar.Hold // customer → org\x00user → holds the user's revoked or replaced individual grants left
	shares     map[string]map[string]*sidecar.Share // customer → partner org\x00user\x00resource → share
	unshared   map[string]map[string]sidecar.Share  // as shares: the last removal of each, for sidecar.AppendOnceWindow
	reshared   window[sidecar.Share]                // shares as put and as removed, by SharedAt or RemovedAt, for sidecar.AppendOnceWindow
	subs       map[string]*sidecar.Subscription     // user\x00customer\x00kind → subscription
	assign     map[string]*sidecar.Assignment
	unassigned map[string]sidecar.Assignment   // folded customer id → assignment as last removed, for sidecar.AppendOnceWindow
	written    window[sidecar.AssignmentWrite] // assignments written and removed (AssignmentChange.Kept), for sidecar.AppendOnceWindow
	events     []sidecar.Event
	audit      []sidecar.AuditEntry
	selfAudit  []sidecar.AuditEntry // SelfService entries, trimmed apart
	lastID     sidecar.StreamID     // of all three streams: ids never repeat across the audit trail's two
	// appended remembers the Once of events ("e") and audit entries
	// ("a") appended within sidecar.AppendOnceWindow, as Redis does.
	appended onceLog

	subMu  sync.Mutex
	subs2  map[int]func(string)
	nextID int
	closed bool
}

type redeemCode struct {
	session string
	expires time.Time
}

var _ sidecar.Store = (*Store)(nil)

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{
		now:          time.Now,
		retention:    DefaultRetention,
		eventsMax:    DefaultEventsMaxLen,
		auditMax:     DefaultAuditMaxLen,
		auditSelfMax: DefaultAuditSelfMaxLen,
		customers:    map[string]*sidecar.Customer{},
		deletions:    map[string][]sidecar.CustomerDeletion{},
		staff:        map[string]bool{},
		spellings:    map[string]map[string]struct{}{},
		consent:      map[string]*sidecar.Consent{},
		history:      map[string][]sidecar.Consent{},
		lapsing:      map[string]time.Time{},
		sessions:     map[string]*sidecar.Session{},
		tokens:       map[string]string{},
		redeem:       map[string]redeemCode{},
		requests:     map[string]*sidecar.AccessRequest{},
		grants:       map[string]map[string]*sidecar.Grant{},
		order:        map[string]map[string]int64{},
		revoked:      map[string]map[string]sidecar.Grant{},
		held:         map[string]map[string][]sidecar.Hold{},
		shares:       map[string]map[string]*sidecar.Share{},
		unshared:     map[string]map[string]sidecar.Share{},
		subs:         map[string]*sidecar.Subscription{},
		assign:       map[string]*sidecar.Assignment{},
		unassigned:   map[string]sidecar.Assignment{},
		subs2:        map[int]func(string){},
	}
	cursors, err := sidecar.NewCursors(sidecar.NewCursorKey())
	if err != nil {
		panic(err) // a key of the right size
	}
	s.cursors = cursors
	for _, o := range opts {
		o(s)
	}
	return s
}

// Ping always succeeds: the store is this process.
func (s *Store) Ping(context.Context) error { return nil }

// Close drops all subscribers.
func (s *Store) Close() error {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	s.closed = true
	clear(s.subs2)
	return nil
}

// Invalidate delivers keys to this process's subscribers.
func (s *Store) Invalidate(_ context.Context, keys ...string) error {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for _, k := range keys {
		for _, fn := range s.subs2 {
			fn(k)
		}
	}
	return nil
}

// Subscribe registers fn for every key invalidated from now on.
func (s *Store) Subscribe(fn func(key string)) (cancel func()) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.closed {
		return func() {}
	}
	id := s.nextID
	s.nextID++
	s.subs2[id] = fn
	return func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		delete(s.subs2, id)
	}
}

func (s *Store) publish(keys ...string) { _ = s.Invalidate(context.Background(), keys...) }

func notFound(what string) error { return sidecar.Errorf(sidecar.ENOTFOUND, "%s not found", what) }

// ---- customers -------------------------------------------------------------

func (s *Store) PutCustomer(_ context.Context, c *sidecar.Customer, p sidecar.Protection) ([]sidecar.Session, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cp := cloneCustomer(c)
	s.mu.Lock()
	s.customers[c.ID] = cp
	s.spell(c.ID)
	var ended []sidecar.Session
	if p.Protects(c.ID, cp, s.staff[c.ID]) {
		ended = s.endLive(func(ss *sidecar.Session) bool { return ss.Customer == c.ID },
			c.UpdatedBy, sidecar.EndCustomerProtected, s.now())
	}
	s.mu.Unlock()
	s.publish(sidecar.CustomerKey(c.ID))
	s.publishEnded(ended)
	return ended, nil
}

func (s *Store) GetCustomer(_ context.Context, id string) (*sidecar.Customer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.customers[id]
	if !ok {
		return nil, notFound("customer")
	}
	return cloneCustomer(c), nil
}

func cloneCustomer(c *sidecar.Customer) *sidecar.Customer {
	cp := *c
	cp.StoreViews = slices.Clone(c.StoreViews)
	cp.Roles = slices.Clone(c.Roles)
	return &cp
}

func (s *Store) MarkStaff(_ context.Context, subject string) ([]sidecar.Session, error) {
	if subject == "" {
		return nil, sidecar.Invalid("subject", "subject is required")
	}
	s.mu.Lock()
	s.staff[subject] = true
	s.spell(subject)
	ended := s.endLive(func(ss *sidecar.Session) bool { return ss.Customer == subject },
		sidecar.SweepActor, sidecar.EndCustomerProtected, s.now())
	s.mu.Unlock()
	s.publish(sidecar.CustomerKey(subject))
	s.publishEnded(ended)
	return ended, nil
}

func (s *Store) GetCustomerState(_ context.Context, customer string) (*sidecar.CustomerState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := &sidecar.CustomerState{Staff: s.staff[customer], Consent: s.liveConsent(customer)}
	if c, ok := s.customers[customer]; ok {
		st.Customer = cloneCustomer(c)
	}
	for id := range s.spellings[sidecar.FoldID(customer)] {
		if id == customer {
			continue
		}
		v := sidecar.Spelling{ID: id, Staff: s.staff[id]}
		if c, ok := s.customers[id]; ok {
			v.Customer = &sidecar.Customer{ID: id, Protected: c.Protected, Roles: slices.Clone(c.Roles)}
		}
		st.Spellings = append(st.Spellings, v)
	}
	slices.SortFunc(st.Spellings, func(a, b sidecar.Spelling) int { return strings.Compare(a.ID, b.ID) })
	return st, nil
}

// spell files id under its FoldID, for GetCustomerState's Spellings: it
// has a profile or a staff mark. s.mu is held.
func (s *Store) spell(id string) {
	f := sidecar.FoldID(id)
	m := s.spellings[f]
	if m == nil {
		m = map[string]struct{}{}
		s.spellings[f] = m
	}
	m[id] = struct{}{}
}

// unspell drops id from its FoldID: it has neither a profile nor a staff
// mark any more. s.mu is held.
func (s *Store) unspell(id string) {
	f := sidecar.FoldID(id)
	delete(s.spellings[f], id)
	if len(s.spellings[f]) == 0 {
		delete(s.spellings, f)
	}
}

func (s *Store) DeleteCustomer(_ context.Context, id, by string) (*sidecar.CustomerDeletion, error) {
	s.mu.Lock()
	if _, ok := s.customers[id]; !ok {
		s.mu.Unlock()
		return nil, notFound("customer")
	}
	delete(s.customers, id)
	if !s.staff[id] {
		s.unspell(id)
	}
	now := s.now()
	del := &sidecar.CustomerDeletion{By: by, At: now}
	if c := s.consent[id]; c.Granted(now) {
		del.Withdrawn = &sidecar.Consent{Customer: id, SetBy: by, SetAt: now, Reason: sidecar.EndCustomerDeleted}
		s.appendConsentHistory(*del.Withdrawn)
	}
	delete(s.consent, id)
	s.takeLapse(id, now)
	s.keepDeletion(id, *del)
	del.Ended = s.endLive(func(ss *sidecar.Session) bool { return ss.Customer == id }, by, sidecar.EndCustomerDeleted, now)
	s.mu.Unlock()
	s.publish(sidecar.CustomerKey(id), sidecar.ConsentKey(id))
	s.publishEnded(del.Ended)
	return del, nil
}

// deletedRef names a kept deletion: whose, and when it was made.
type deletedRef struct {
	id string
	at time.Time
}

// keepDeletion records del, customer id's deletion, for CustomerDeletions
// and forgets the deletions past sidecar.AppendOnceWindow, oldest first:
// each is forgotten once, so a delete costs O(1) amortised. s.mu is held.
func (s *Store) keepDeletion(id string, del sidecar.CustomerDeletion) {
	for len(s.deleted) > 0 && del.At.Sub(s.deleted[0].at) >= sidecar.AppendOnceWindow {
		// Both are in the order made: the oldest of its customer's.
		old := s.deleted[0].id
		s.deleted[0] = deletedRef{}
		s.deleted = s.deleted[1:]
		if dels := s.deletions[old]; len(dels) > 1 {
			dels[0] = sidecar.CustomerDeletion{}
			s.deletions[old] = dels[1:]
		} else {
			delete(s.deletions, old)
		}
	}
	if del.Withdrawn != nil {
		w := *del.Withdrawn
		del.Withdrawn = &w
	}
	del.Ended = nil
	s.deletions[id] = append(s.deletions[id], del)
	s.deleted = append(s.deleted, deletedRef{id: id, at: del.At})
}

func (s *Store) CustomerDeletions(_ context.Context, id string) ([]sidecar.CustomerDeletion, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	var out []sidecar.CustomerDeletion
	for _, del := range s.deletions[id] {
		if now.Sub(del.At) >= sidecar.AppendOnceWindow {
			continue
		}
		if del.Withdrawn != nil {
			w := *del.Withdrawn
			del.Withdrawn = &w
		}
		out = append(out, del)
	}
	return out, nil
}

// ---- consent ---------------------------------------------------------------

func (s *Store) SetConsent(_ context.Context, c *sidecar.Consent) ([]sidecar.Session, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cp := *c
	s.mu.Lock()
	now := s.now()
	s.consent[c.Customer] = &cp
	s.appendConsentHistory(cp)
	s.takeLapse(c.Customer, now)
	s.set.keep(s.now(), cp.SetAt, cp)
	if c.Allowed && !c.ExpiresAt.IsZero() {
		s.lapsing[c.Customer] = c.ExpiresAt
	}
	ended := s.endLive(func(ss *sidecar.Session) bool {
		return ss.Customer == c.Customer && !cp.Covers(ss, now)
	}, c.SetBy, sidecar.EndConsentWithdrawn, now)
	// The sessions it covers are under it from now on.
	var covered []sidecar.Session
	for _, ss := range s.sessions {
		if ss.Customer == c.Customer && ss.Live(now) && !ss.ConsentExpiresAt.Equal(cp.ExpiresAt) {
			ss.ConsentExpiresAt = cp.ExpiresAt
			covered = append(covered, *ss)
		}
	}
	s.mu.Unlock()
	s.publish(sidecar.ConsentKey(c.Customer))
	s.publishEnded(ended)
	s.publishEnded(covered)
	return ended, nil
}

func (s *Store) ConsentsSet(_ context.Context, since time.Time) ([]sidecar.Consent, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.set.since(s.now(), since), nil
}

// appendConsentHistory records c as its customer's newest setting, with
// s.mu held.
func (s *Store) appendConsentHistory(c sidecar.Consent) {
	h := append(s.history[c.Customer], c)
	if len(h) > DefaultConsentMaxLen {
		h = slices.Clone(h[len(h)-DefaultConsentMaxLen:])
	}
	s.history[c.Customer] = h
}

// endLive ends at at every live session that match selects, with s.mu
// held. Live is judged at the earlier of at and the store's clock
// (sidecar.LiveAt): a sweep whose now runs ahead ends what is still live
// by the store's clock too.
func (s *Store) endLive(match func(*sidecar.Session) bool, by, reason string, at time.Time) []sidecar.Session {
	var out []sidecar.Session
	liveAt := sidecar.LiveAt(at, s.now())
	for _, ss := range s.sessions {
		if ss.Live(liveAt) && match(ss) {
			ss.EndedAt, ss.EndedBy, ss.EndReason = at, by, reason
			s.keepEnded(ss)
			out = append(out, *ss)
		}
	}
	return out
}

// keepEnded keeps the end of ss, just ended, for SessionsEnded, with
// s.mu held.
func (s *Store) keepEnded(ss *sidecar.Session) { s.ended.keep(s.now(), ss.EndedAt, ss.ID) }
func (s *Store) SessionsEnded(_ context.Context, since time.Time) ([]sidecar.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := s.ended.since(s.now(), since)
	out := make([]sidecar.Session, 0, len(ids))
	for _, id := range ids {
		if ss, ok := s.sessions[id]; ok { // else forgotten
			out = append(out, *ss)
		}
	}
	return out, nil
}

// SessionsStarted reads the session log, which StartSession writes under
// the same lock that stores the session, from since on.
func (s *Store) SessionsStarted(_ context.Context, since time.Time) ([]sidecar.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if edge := s.now().Add(-sidecar.AppendOnceWindow); !since.After(edge) {
		since = edge.Add(time.Nanosecond) // a start at the edge is past the window
	}
	var out []sidecar.Session
	for _, k := range s.sessionLog[sort.SearchStrings(s.sessionLog, logKey(since, "")):] {
		if ss, ok := s.sessions[logID(k)]; ok {
			out = append(out, *ss)
		}
	}
	return out, nil
}

func (s *Store) publishEnded(ended []sidecar.Session) {
	for _, ss := range ended {
		if ss.TokenHash != "" {
			s.publish(sidecar.SessionKey(ss.TokenHash))
		}
	}
}

func (s *Store) TakeLapsedConsents(_ context.Context, now time.Time) ([]sidecar.Consent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sidecar.Consent
	for c, exp := range s.lapsing {
		if !now.Before(exp) {
			out = append(out, sidecar.Consent{Customer: c, Allowed: true, ExpiresAt: exp})
			delete(s.lapsing, c)
		}
	}
	s.lapsed.keep(now, now, out...)
	return out, nil
}

// takeLapse removes customer's consent from lapsing, for a write that
// replaces it, with s.mu held. A consent that lapsed by now, and that no
// take took yet, is taken and kept as taken at now (s.lapsed): the
// sweep after the write reads it back and records it, which nothing
// else would.
func (s *Store) takeLapse(customer string, now time.Time) {
	exp, ok := s.lapsing[customer]
	if !ok {
		return
	}
	delete(s.lapsing, customer)
	if !now.Before(exp) {
		s.lapsed.keep(now, now, sidecar.Consent{Customer: customer, Allowed: true, ExpiresAt: exp})
	}
}

func (s *Store) LapsedConsentsTaken(_ context.Context, since time.Time) ([]sidecar.Consent, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lapsed.since(s.now(), since), nil
}

func (s *Store) EndLapsedSessions(_ context.Context, now time.Time, l sidecar.SessionLimits) ([]sidecar.Session, error) {
	s.mu.Lock()
	var out []sidecar.Session
	for _, ss := range s.sessions {
		if ss.EndLapsed(now, l) {
			s.keepEnded(ss)
			out = append(out, *ss)
		}
	}
	s.mu.Unlock()
	// A cache may hold one as live by the limits it stored: those that
	// policy data lowered since ended it.
	s.publishEnded(out)
	return out, nil
}

func (s *Store) EndProtectedSessions(_ context.Context, p sidecar.Protection, now time.Time) ([]sidecar.Session, error) {
	s.mu.Lock()
	ended := s.endLive(func(ss *sidecar.Session) bool {
		return p.Protects(ss.Customer, s.customers[ss.Customer], s.staff[ss.Customer])
	}, sidecar.SweepActor, sidecar.EndCustomerProtected, now)
	s.mu.Unlock()
	s.publishEnded(ended)
	return ended, nil
}

func (s *Store) EndUnpermittedSessions(_ context.Context, granting []string, now time.Time) ([]sidecar.Session, error) {
	s.mu.Lock()
	ended := s.endLive(func(ss *sidecar.Session) bool { return !ss.ActorPermitted(granting) },
		sidecar.SweepActor, sidecar.EndActorNotPermitted, now)
	s.mu.Unlock()
	s.publishEnded(ended)
	return ended, nil
}

func (s *Store) GetConsent(_ context.Context, customer string) (*sidecar.Consent, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.liveConsent(customer); c != nil {
		return c, nil
	}
	return nil, notFound("consent")
}

// liveConsent is a copy of the customer's consent unless it is missing or
// past its expiry (nil), with s.mu held.
func (s *Store) liveConsent(customer string) *sidecar.Consent {
	c, ok := s.consent[customer]
	if !ok || (!c.ExpiresAt.IsZero() && !s.now().Before(c.ExpiresAt)) {
		return nil
	}
	cp := *c
	return &cp
}

type consentWindow struct {
	n    int
	ends time.Time
}

func (s *Store) TakeConsentChange(_ context.Context, customer string, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudget("consent\x00"+customer, limit, window)
}

func (s *Store) TakeSelfServiceChange(_ context.Context, org string, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudget("org\x00"+org, limit, window)
}

// takeBudget takes one change from the window of key ("consent\x00" and
// a customer, or "org\x00" and an organisation).
func (s *Store) takeBudget(key string, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudgetN(key, 1, limit, window)
}

// takeBudgetN takes n changes from the window of key, all or none (a
// domain's assignment rows: "rows\x00" and the domain).
func (s *Store) takeBudgetN(key string, n, limit int, window time.Duration) (time.Duration, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.budgets == nil {
		s.budgets = map[string]consentWindow{}
	}
	w, ok := s.budgets[key]
	if !ok || !now.Before(w.ends) {
		w = consentWindow{ends: now.Add(window)}
	}
	if w.n+n > limit {
		return w.ends.Sub(now), false, nil
	}
	w.n += n
	s.budgets[key] = w
	if len(s.budgets) >= max(s.pruneAt, 1024) {
		for c, w := range s.budgets {
			if !now.Before(w.ends) {
				delete(s.budgets, c)
			}
		}
		s.pruneAt = 2 * len(s.budgets)
	}
	return 0, true, nil
}

func (s *Store) ConsentHistory(_ context.Context, customer string, p sidecar.Page) ([]sidecar.Consent, string, error) {
	start, err := offsetCursor(p.Cursor)
	if err != nil {
		return nil, "", err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.history[customer]
	var out []sidecar.Consent
	i := start
	for ; i < len(h) && len(out) < p.N(); i++ {
		out = append(out, h[len(h)-1-i])
	}
	next := ""
	if i < len(h) {
		next = strconv.Itoa(i)
	}
	return out, next, nil
}

func offsetCursor(c string) (int, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(c)
	if err != nil || n < 0 {
		return 0, sidecar.Invalid("cursor", "malformed cursor")
	}
	return n, nil
}

// ---- sessions --------------------------------------------------------------

// logKey orders records by time, then id, as fixed-width text so that the
// string order is the time order (the same layout the Redis store uses).
func logKey(t time.Time, id string) string {
	return fmt.Sprintf("%020d:%s", t.UnixNano(), id)
}

func logID(key string) string {
	_, id, _ := strings.Cut(key, ":")
	return id
}

func insertSorted(list []string, k string) []string {
	i := sort.SearchStrings(list, k)
	return slices.Insert(list, i, k)
}

func removeSorted(list []string, k string) []string {
	i := sort.SearchStrings(list, k)
	if i < len(list) && list[i] == k {
		return slices.Delete(list, i, i+1)
	}
	return list
}

func cloneSession(ss *sidecar.Session) *sidecar.Session { cp := *ss; return &cp }

func (s *Store) StartSession(_ context.Context, st sidecar.SessionStart) ([]sidecar.Session, error) {
	s.mu.Lock()
	now := s.now()
	s.pruneSessions()
	var consent *sidecar.Consent
	if st.Session != nil {
		st.MoveStart(now)
		consent = s.consent[st.Session.Customer]
	}
	var cust *sidecar.Customer
	if st.Session != nil {
		cust = s.customers[st.Session.Customer]
	}
	err := st.Check(now, cust, consent, cust != nil && s.staff[cust.ID])
	if err == nil {
		_, idTaken := s.sessions[st.Session.ID]
		c, codeTaken := s.redeem[st.CodeHash]
		switch {
		case idTaken:
			err = sidecar.Errorf(sidecar.ECONFLICT, "session %s exists", st.Session.ID)
		case codeTaken && now.Before(c.expires):
			err = sidecar.Errorf(sidecar.ECONFLICT, "redeem code in use")
		case st.Session.TokenHash != "":
			err = sidecar.Invalid("token_hash", "a new session has no token until redeemed")
		}
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	var replaced []sidecar.Session
	if st.ReplaceLive {
		for _, ss := range s.sessions {
			if ss.Actor == st.Session.Actor && ss.EndedAt.IsZero() {
				st.Supersede(ss, now, now)
				s.keepEnded(ss)
				replaced = append(replaced, *ss)
			}
		}
	}
	for h, c := range s.redeem {
		if !now.Before(c.expires) {
			delete(s.redeem, h)
		}
	}
	s.redeem[st.CodeHash] = redeemCode{session: st.Session.ID, expires: st.CodeExpiresAt}
	s.sessions[st.Session.ID] = cloneSession(st.Session)
	s.sessionLog = insertSorted(s.sessionLog, logKey(st.Session.StartedAt, st.Session.ID))
	s.mu.Unlock()
	s.publishEnded(replaced)
	return replaced, nil
}

// pruneSessions forgets sessions that ended (or expired) longer than the
// retention ago. Sessions started earlier end earlier, so walking the log
// from its oldest end finds them.
func (s *Store) pruneSessions() {
	now := s.now()
	n := 0
	for _, k := range s.sessionLog {
		ss := s.sessions[logID(k)]
		end := ss.ExpiresAt
		if !ss.EndedAt.IsZero() && ss.EndedAt.Before(end) {
			end = ss.EndedAt
		}
		if now.Before(end.Add(s.retention)) {
			break
		}
		delete(s.sessions, ss.ID)
		if ss.TokenHash != "" {
			delete(s.tokens, ss.TokenHash)
		}
		n++
	}
	s.sessionLog = s.sessionLog[n:]
}

func (s *Store) GetSession(_ context.Context, id string) (*sidecar.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ss, ok := s.sessions[id]
	if !ok {
		return nil, notFound("session")
	}
	return cloneSession(ss), nil
}

func (s *Store) RedeemSession(_ context.Context, codeHash, tokenHash, host, redeemer string, l sidecar.SessionLimits) (*sidecar.Session, error) {
	if tokenHash == "" {
		return nil, sidecar.Invalid("token_hash", "token hash is required")
	}
	s.mu.Lock()
	now := s.now()
	ss, err := s.takeCode(codeHash, now)
	switch {
	case err != nil:
	case redeemer != "" && redeemer != ss.Actor:
		out := cloneSession(ss)
		s.mu.Unlock()
		return out, sidecar.RedeemActorMismatch()
	case ss.TokenHash != "":
		err = sidecar.Errorf(sidecar.ECONFLICT, "session already redeemed")
	case !ss.LiveWithin(now, l):
		b := ss.Within(l)
		err = sidecar.SessionOver(b.EndState(now))
	default:
		if _, taken := s.tokens[tokenHash]; taken {
			err = sidecar.Errorf(sidecar.ECONFLICT, "session token in use")
		}
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	ss.TokenHash, ss.Host = tokenHash, host
	s.tokens[tokenHash] = ss.ID
	out := cloneSession(ss)
	s.mu.Unlock()
	s.publish(sidecar.SessionKey(tokenHash))
	return out, nil
}

// BurnRedeemCode takes the code as RedeemSession does and attaches nothing.
func (s *Store) BurnRedeemCode(_ context.Context, codeHash string) (*sidecar.Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, err := s.takeCode(codeHash, s.now())
	if err != nil {
		return nil, err
	}
	return cloneSession(ss), nil
}

// takeCode uses the redeem code up, whatever comes of it, and returns its
// session; ENOTFOUND when it is unknown, used or late. s.mu is held.
func (s *Store) takeCode(codeHash string, now time.Time) (*sidecar.Session, error) {
	c, ok := s.redeem[codeHash]
	delete(s.redeem, codeHash)
	ss := s.sessions[c.session]
	if !ok || !now.Before(c.expires) || ss == nil {
		return nil, notFound("redeem code")
	}
	return ss, nil
}

func (s *Store) SessionByToken(_ context.Context, tokenHash string) (*sidecar.Session, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ss, ok := s.sessions[s.tokens[tokenHash]]
	if !ok || tokenHash == "" {
		return nil, notFound("session")
	}
	return cloneSession(ss), nil
}

func (s *Store) TouchSession(_ context.Context, id string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[id]
	if !ok {
		return notFound("session")
	}
	_, err := ss.Touch(at, s.now())
	return err
}

func (s *Store) EndSession(_ context.Context, id, by, reason string, at time.Time, l sidecar.SessionLimits) (*sidecar.Session, error) {
	s.mu.Lock()
	ss, ok := s.sessions[id]
	if !ok {
		s.mu.Unlock()
		return nil, notFound("session")
	}
	ended := ss.EndedAt.IsZero()
	if ended {
		if !ss.EndLapsed(sidecar.LiveAt(at, s.now()), l) {
			ss.EndedAt, ss.EndedBy, ss.EndReason = at, by, reason
		}
		s.keepEnded(ss)
	}
	out := cloneSession(ss)
	s.mu.Unlock()
	if ended && out.TokenHash != "" {
		s.publish(sidecar.SessionKey(out.TokenHash))
	}
	return out, nil
}

func (s *Store) ListSessions(_ context.Context, f sidecar.SessionFilter) ([]sidecar.Session, string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	hi := len(s.sessionLog)
	if f.Cursor != "" {
		at, err := s.cursors.Open(f.CursorScope(), f.Cursor)
		if err != nil {
			return nil, "", err
		}
		hi = sort.SearchStrings(s.sessionLog, at)
	}
	if !f.To.IsZero() {
		hi = min(hi, sort.SearchStrings(s.sessionLog, logKey(f.To, "")))
	}
	lo := 0
	if !f.From.IsZero() {
		lo = sort.SearchStrings(s.sessionLog, logKey(f.From, ""))
	}
	var out []sidecar.Session
	i := hi - 1
	for ; i >= lo && len(out) < f.N(); i-- {
		ss := s.sessions[logID(s.sessionLog[i])]
		if (f.Actor != "" && ss.Actor != f.Actor) || (f.Customer != "" && ss.Customer != f.Customer) ||
			(f.LiveOnly && !ss.LiveWithin(now, f.Limits)) {
			continue
		}
		out = append(out, *ss)
	}
	next := ""
	if i >= lo && len(out) > 0 {
		next = s.cursors.Seal(f.CursorScope(), s.sessionLog[i+1])
	}
	return out, next, nil
}

// ---- partner requests and grants --------------------------------------------

func cloneRequest(r *sidecar.AccessRequest) *sidecar.AccessRequest {
	cp := *r
	cp.Users = slices.Clone(r.Users)
	return &cp
}

func (s *Store) CreateRequest(_ context.Context, r *sidecar.AccessRequest) error {
	if err := r.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneRequests()
	if _, ok := s.requests[r.ID]; ok {
		return sidecar.Errorf(sidecar.ECONFLICT, "access request %s exists", r.ID)
	}
	s.requests[r.ID] = cloneRequest(r)
	s.requestLog = insertSorted(s.requestLog, logKey(r.CreatedAt, r.ID))
	s.created.keep(s.now(), r.CreatedAt, r.ID)
	return nil
}

// RequestsCreated reads the requests kept at their creation since since.
func (s *Store) RequestsCreated(_ context.Context, since time.Time) ([]sidecar.AccessRequest, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	var out []sidecar.AccessRequest
	for _, id := range s.created.since(now, since) {
		if r, ok := s.requests[id]; ok {
			cp := cloneRequest(r)
			cp.Status = r.StatusAt(now)
			out = append(out, *cp)
		}
	}
	return out, nil
}

// pruneRequests forgets requests decided or expired longer than the
// retention ago.
func (s *Store) pruneRequests() {
	now := s.now()
	s.requestLog = slices.DeleteFunc(s.requestLog, func(k string) bool {
		r := s.requests[logID(k)]
		end := r.PendingExpiresAt
		if !r.DecidedAt.IsZero() {
			end = r.DecidedAt
		}
		if now.Before(end.Add(s.retention)) {
			return false
		}
		delete(s.requests, r.ID)
		return true
	})
}

func (s *Store) GetRequest(_ context.Context, id string) (*sidecar.AccessRequest, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.requests[id]
	if !ok {
		return nil, notFound("access request")
	}
	out := cloneRequest(r)
	out.Status = r.StatusAt(s.now())
	return out, nil
}

func (s *Store) DecideRequest(_ context.Context, id, status, by string, at time.Time) (*sidecar.AccessRequest, error) {
	if status != sidecar.RequestApproved && status != sidecar.RequestRejected {
		return nil, sidecar.Invalid("status", "must be %s or %s", sidecar.RequestApproved, sidecar.RequestRejected)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok {
		return nil, notFound("access request")
	}
	if st := r.StatusAt(s.now()); st != sidecar.RequestPending {
		return nil, sidecar.Errorf(sidecar.ECONFLICT, "access request is %s", st)
	}
	r.Decide(status, by, sidecar.LiveAt(at, s.now()))
	if status == sidecar.RequestApproved {
		r.Seq = s.nextSeq(r.Customer, r.PartnerOrg)
	}
	s.decided.keep(s.now(), at, id)
	return cloneRequest(r), nil
}

// nextSeq takes the next Seq of partnerOrg at customer; s.mu is held.
func (s *Store) nextSeq(customer, partnerOrg string) int64 {
	m := s.orderOf(customer)
	m[partnerOrg]++
	return m[partnerOrg]
}

// orderOf returns the Seqs of customer, made on first use; s.mu is held.
func (s *Store) orderOf(customer string) map[string]int64 {
	m := s.order[customer]
	if m == nil {
		m = map[string]int64{}
		s.order[customer] = m
	}
	return m
}

func (s *Store) GrantsIssued(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok {
		return notFound("access request")
	}
	r.GrantsPending = false
	return nil
}

func (s *Store) RecordApproval(_ context.Context, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	switch {
	case !ok:
		return false, notFound("access request")
	case r.Status != sidecar.RequestApproved:
		return false, sidecar.Errorf(sidecar.ECONFLICT, "access request is %s", r.StatusAt(s.now()))
	case r.ApprovalRecorded:
		return false, nil
	}
	r.ApprovalRecorded = true
	now := s.now()
	s.decided.keep(now, now, id)
	return true, nil
}

// RequestsDecided reads the decisions and approvals marked recorded kept
// since since: a request kept twice is returned at its later time.
func (s *Store) RequestsDecided(_ context.Context, since time.Time) ([]sidecar.AccessRequest, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	ids := s.decided.since(now, since)
	last := make(map[string]int, len(ids))
	for i, id := range ids {
		last[id] = i
	}
	out := make([]sidecar.AccessRequest, 0, len(last))
	for i, id := range ids {
		r, ok := s.requests[id]
		if !ok || last[id] != i {
			continue // forgotten, or kept again later
		}
		cp := cloneRequest(r)
		cp.Status = r.StatusAt(now)
		out = append(out, *cp)
	}
	return out, nil
}

// GrantsRevoked reads the revocations kept since since.
func (s *Store) GrantsRevoked(_ context.Context, since time.Time) ([]sidecar.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	var out []sidecar.Grant
	for _, ref := range s.revokes.since(now, since) {
		if g, ok := s.revoked[ref[0]][ref[1]]; ok && g.Live(now) {
			out = append(out, g)
		}
	}
	return out, nil
}

func (s *Store) ListRequests(_ context.Context, f sidecar.RequestFilter) ([]sidecar.AccessRequest, string, error) {
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	hi := len(s.requestLog)
	if f.Cursor != "" {
		at, err := s.cursors.Open(f.CursorScope(), f.Cursor)
		if err != nil {
			return nil, "", err
		}
		hi = sort.SearchStrings(s.requestLog, at)
	}
	var out []sidecar.AccessRequest
	i := hi - 1
	for ; i >= 0 && len(out) < f.N(); i-- {
		r := s.requests[logID(s.requestLog[i])]
		if !f.Match(r, now) {
			continue
		}
		cp := cloneRequest(r)
		cp.Status = r.StatusAt(now)
		out = append(out, *cp)
	}
	next := ""
	if i >= 0 && len(out) > 0 {
		next = s.cursors.Seal(f.CursorScope(), s.requestLog[i+1])
	}
	return out, next, nil
}

func grantField(org, user string) string { return org + "\x00" + user }

func (s *Store) PutGrant(_ context.Context, g *sidecar.Grant) error {
	if err := g.Validate(); err != nil {
		return err
	}
	cp := *g
	s.mu.Lock()
	if r, ok := s.requests[g.RequestID]; ok && r.Status == sidecar.RequestApproved && !r.GrantsPending {
		s.mu.Unlock()
		return sidecar.Errorf(sidecar.ECONFLICT, "access request %s issues no more grants", g.RequestID)
	}
	f := grantField(g.PartnerOrg, g.User)
	if g.Seq < s.order[g.Customer][f] {
		s.mu.Unlock()
		return sidecar.Superseded()
	}
	if g.Seq > 0 {
		s.orderOf(g.Customer)[f] = g.Seq
	}
	m := s.grants[g.Customer]
	if m == nil {
		m = map[string]*sidecar.Grant{}
		s.grants[g.Customer] = m
	}
	now := s.now()
	if h, ok := sidecar.ReplacementHold(m[f], &cp, now); ok {
		s.hold(g.Customer, f, h)
	}
	for k, old := range m {
		if !old.Live(now) {
			delete(m, k)
		}
	}
	m[f] = &cp
	s.mu.Unlock()
	s.publish(sidecar.GrantKey(g.Customer))
	return nil
}

func (s *Store) liveGrant(customer, field string) *sidecar.Grant {
	g, ok := s.grants[customer][field]
	if !ok || !g.Live(s.now()) {
		return nil
	}
	cp := *g
	return &cp
}

func (s *Store) GetGrant(_ context.Context, customer, id string) (*sidecar.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for k, g := range s.grants[customer] {
		if g.ID == id {
			if live := s.liveGrant(customer, k); live != nil {
				return live, nil
			}
		}
	}
	return nil, notFound("grant")
}

func (s *Store) RevokeGrant(_ context.Context, customer, id, by, byOrg string) (*sidecar.Grant, error) {
	s.mu.Lock()
	var out *sidecar.Grant
	for k, g := range s.grants[customer] {
		if g.ID == id {
			out = s.liveGrant(customer, k)
			delete(s.grants[customer], k)
			seq := s.nextSeq(customer, g.PartnerOrg)
			s.order[customer][k] = seq
			if out != nil && out.User != "" {
				s.hold(customer, k, sidecar.Hold{Level: out.Level, Until: out.ExpiresAt})
			}
		}
	}
	if out != nil {
		kept := *out
		kept.RevokedAt, kept.RevokedBy, kept.RevokedByOrg = s.now(), by, byOrg
		s.keepRevoked(customer, kept)
		s.revokes.keep(kept.RevokedAt, kept.RevokedAt, [2]string{customer, id})
	}
	s.mu.Unlock()
	if out == nil {
		return nil, notFound("grant")
	}
	s.publish(sidecar.GrantKey(customer))
	return out, nil
}

// keepRevoked records g for RevokedGrant and forgets the customer's
// revoked grants past their expiry. s.mu is held.
func (s *Store) keepRevoked(customer string, g sidecar.Grant) {
	m := s.revoked[customer]
	if m == nil {
		m = map[string]sidecar.Grant{}
		s.revoked[customer] = m
	}
	now := s.now()
	for id, old := range m {
		if !old.Live(now) {
			delete(m, id)
		}
	}
	m[g.ID] = g
}

// hold adds h to the holds on the user of field at customer and forgets
// the customer's holds no longer live. s.mu is held.
func (s *Store) hold(customer, field string, h sidecar.Hold) {
	m := s.held[customer]
	if m == nil {
		m = map[string][]sidecar.Hold{}
		s.held[customer] = m
	}
	now := s.now()
	for f, hs := range m {
		if !slices.ContainsFunc(hs, func(h sidecar.Hold) bool { return now.Before(h.Until) }) {
			delete(m, f)
		}
	}
	m[field] = sidecar.AddHold(m[field], h, now)
}

func (s *Store) RevokedGrant(_ context.Context, customer, id string) (*sidecar.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, ok := s.revoked[customer][id]
	if !ok || !g.Live(s.now()) {
		return nil, notFound("revoked grant")
	}
	return &g, nil
}

func (s *Store) EffectiveGrants(_ context.Context, customer, partnerOrg, user string) (sidecar.EffectiveGrants, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var e sidecar.EffectiveGrants
	if user != "" {
		e.Individual = s.liveGrant(customer, grantField(partnerOrg, user))
		now := s.now()
		for _, h := range s.held[customer][grantField(partnerOrg, user)] {
			if now.Before(h.Until) {
				e.Held = append(e.Held, h)
			}
		}
	}
	e.Organisation = s.liveGrant(customer, grantField(partnerOrg, ""))
	return e, nil
}

func sortGrants(gs []sidecar.Grant) {
	slices.SortFunc(gs, func(a, b sidecar.Grant) int {
		return strings.Compare(a.Customer+"\x00"+a.PartnerOrg+"\x00"+a.User, b.Customer+"\x00"+b.PartnerOrg+"\x00"+b.User)
	})
}

func (s *Store) GrantsByCustomer(_ context.Context, customer string) ([]sidecar.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sidecar.Grant
	for k := range s.grants[customer] {
		if g := s.liveGrant(customer, k); g != nil {
			out = append(out, *g)
		}
	}
	sortGrants(out)
	return out, nil
}

func (s *Store) GrantsByPartner(_ context.Context, partnerOrg, user string) ([]sidecar.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sidecar.Grant
	for c, m := range s.grants {
		for k, g := range m {
			if g.PartnerOrg == partnerOrg && (g.User == "" || g.User == user) {
				if live := s.liveGrant(c, k); live != nil {
					out = append(out, *live)
				}
			}
		}
	}
	sortGrants(out)
	return out, nil
}

func (s *Store) GrantsExpiringBefore(_ context.Context, t time.Time, limit int) ([]sidecar.Grant, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sidecar.Grant
	for c, m := range s.grants {
		for k, g := range m {
			if g.ExpiresAt.Before(t) {
				if live := s.liveGrant(c, k); live != nil {
					out = append(out, *live)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b sidecar.Grant) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return strings.Compare(a.Customer+"\x00"+a.ID, b.Customer+"\x00"+b.ID)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// ---- shares ----------------------------------------------------------------

func shareField(partnerOrg, user, resource string) string {
	return partnerOrg + "\x00" + user + "\x00" + resource
}

func (s *Store) PutShare(_ context.Context, sh *sidecar.Share) (*sidecar.Share, error) {
	if err := sh.Validate(); err != nil {
		return nil, err
	}
	cp := *sh
	s.mu.Lock()
	m := s.shares[sh.Customer]
	if m == nil {
		m = map[string]*sidecar.Share{}
		s.shares[sh.Customer] = m
	}
	f := shareField(sh.PartnerOrg, sh.User, sh.Resource)
	if cur := m[f]; cur != nil && cur.Retried(sh) {
		kept := *cur
		s.mu.Unlock()
		return &kept, nil
	}
	m[f] = &cp
	s.reshared.keepOnce(s.now(), cp.SharedAt, cp, func(a, b sidecar.Share) bool { return a.Same(&b) })
	s.mu.Unlock()
	s.publish(sidecar.ShareKey(sh.Customer))
	out := cp
	return &out, nil
}

func (s *Store) DeleteShare(_ context.Context, customer, resource, partnerOrg, user, by string) (*sidecar.Share, error) {
	f := shareField(partnerOrg, user, resource)
	s.mu.Lock()
	sh, ok := s.shares[customer][f]
	var removed sidecar.Share
	if ok {
		delete(s.shares[customer], f)
		removed = *sh
		removed.RemovedAt, removed.RemovedBy = s.now(), by
		s.keepUnshared(customer, f, removed)
		s.reshared.keep(removed.RemovedAt, removed.RemovedAt, removed)
	}
	s.mu.Unlock()
	if !ok {
		return nil, notFound("share")
	}
	s.publish(sidecar.ShareKey(customer))
	return &removed, nil
}

// keepUnshared records sh, removed, for RemovedShares and forgets the
// customer's removals past sidecar.AppendOnceWindow. s.mu is held.
func (s *Store) keepUnshared(customer, field string, sh sidecar.Share) {
	m := s.unshared[customer]
	if m == nil {
		m = map[string]sidecar.Share{}
		s.unshared[customer] = m
	}
	for f, old := range m {
		if sh.RemovedAt.Sub(old.RemovedAt) >= sidecar.AppendOnceWindow {
			delete(m, f)
		}
	}
	m[field] = sh
}

func (s *Store) RemovedShares(_ context.Context, customer string) ([]sidecar.Share, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	now := s.now()
	var out []sidecar.Share
	for _, sh := range s.unshared[customer] {
		if now.Sub(sh.RemovedAt) < sidecar.AppendOnceWindow {
			out = append(out, sh)
		}
	}
	slices.SortFunc(out, sidecar.ShareOrder)
	return out, nil
}

// SharesChanged reads the shares kept as put and as removed since since.
func (s *Store) SharesChanged(_ context.Context, since time.Time) ([]sidecar.Share, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reshared.since(s.now(), since), nil
}

func (s *Store) IsShared(_ context.Context, customer, resource, partnerOrg, user string) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sh, ok := s.shares[customer][shareField(partnerOrg, user, resource)]
	return ok && sh.For(partnerOrg, user), nil
}

func (s *Store) SharesFor(_ context.Context, customer, partnerOrg, user string) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for _, sh := range s.shares[customer] {
		if sh.For(partnerOrg, user) {
			out = append(out, sh.Resource)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *Store) ListShares(_ context.Context, customer string) ([]sidecar.Share, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sidecar.Share
	for _, sh := range s.shares[customer] {
		out = append(out, *sh)
	}
	slices.SortFunc(out, sidecar.ShareOrder)
	return out, nil
}

// ---- subscriptions ---------------------------------------------------------

func subKey(user, customer, kind string) string { return user + "\x00" + customer + "\x00" + kind }

func (s *Store) PutSubscription(_ context.Context, sub *sidecar.Subscription) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	cp := *sub
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[subKey(sub.User, sub.Customer, sub.Kind)] = &cp
	return nil
}

func (s *Store) DeleteSubscription(_ context.Context, user, customer, kind string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := subKey(user, customer, kind)
	if _, ok := s.subs[k]; !ok {
		return notFound("subscription")
	}
	delete(s.subs, k)
	return nil
}

func (s *Store) listSubs(match func(*sidecar.Subscription) bool) []sidecar.Subscription {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []sidecar.Subscription
	for _, sub := range s.subs {
		if match(sub) {
			out = append(out, *sub)
		}
	}
	slices.SortFunc(out, func(a, b sidecar.Subscription) int {
		return strings.Compare(subKey(a.User, a.Customer, a.Kind), subKey(b.User, b.Customer, b.Kind))
	})
	return out
}

func (s *Store) SubscriptionsByUser(_ context.Context, user string) ([]sidecar.Subscription, error) {
	return s.listSubs(func(sub *sidecar.Subscription) bool { return sub.User == user }), nil
}

func (s *Store) SubscriptionsByCustomer(_ context.Context, customer string) ([]sidecar.Subscription, error) {
	return s.listSubs(func(sub *sidecar.Subscription) bool { return sub.Customer == customer }), nil
}

// ---- reseller assignments ----------------------------------------------------

// Assignments are filed under sidecar.FoldID of the customer: variants of
// one id are one customer, held by one domain. The record keeps the
// spelling it was assigned under.

func (s *Store) GetAssignment(_ context.Context, customer string) (*sidecar.Assignment, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.assign[sidecar.FoldID(customer)]
	if !ok {
		return nil, notFound("assignment")
	}
	cp := *a
	return &cp, nil
}

func (s *Store) GetAssignments(_ context.Context, customers []string) ([]*sidecar.Assignment, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*sidecar.Assignment, len(customers))
	for i, c := range customers {
		if a, ok := s.assign[sidecar.FoldID(c)]; ok {
			cp := *a
			out[i] = &cp
		}
	}
	return out, nil
}

func (s *Store) PutAssignment(ctx context.Context, a *sidecar.Assignment) error {
	_, err := s.PutAssignments(ctx, []sidecar.Assignment{*a})
	return err
}

func (s *Store) PutAssignments(_ context.Context, as []sidecar.Assignment) (int, error) {
	for i := range as {
		if err := as[i].Validate(); err != nil {
			return 0, err
		}
	}
	keys := make([]string, len(as))
	s.mu.Lock()
	for i := range as {
		cp := as[i]
		s.assign[sidecar.FoldID(cp.Customer)] = &cp
		keys[i] = sidecar.AssignmentKey(cp.Customer)
	}
	s.mu.Unlock()
	s.publish(keys...)
	return len(as), nil
}

// ChangeAssignments checks and applies every change under one lock, so no
// other write lands between a change's check and its write.
func (s *Store) ChangeAssignments(_ context.Context, cs []sidecar.AssignmentChange) ([]int, error) {
	for i := range cs {
		if err := cs[i].Validate(); err != nil {
			return nil, err
		}
	}
	var conflicts []int
	keys := make([]string, 0, len(cs))
	s.mu.Lock()
	if err := s.withinDomainBounds(cs); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	for i, c := range cs {
		key := sidecar.FoldID(c.Customer)
		current := ""
		if a := s.assign[key]; a != nil {
			current = a.Domain
		}
		if current != c.From {
			conflicts = append(conflicts, i)
			continue
		}
		if w := c.Kept(s.assign[key]); w != nil {
			s.written.keep(s.now(), w.At(), *w)
		}
		if u := c.Undoes; u != nil {
			if w := u.Kept(nil); w != nil {
				s.written = slices.DeleteFunc(s.written, func(e timed[sidecar.AssignmentWrite]) bool {
					return e.v.Change == w.Change && e.v.Same(&w.Assignment)
				})
			}
		}
		switch {
		case c.To == nil:
			if a := s.assign[key]; a != nil {
				s.keepUnassigned(key, *a, c)
			}
			delete(s.assign, key)
		default:
			cp := *c.To
			s.assign[key] = &cp
		}
		keys = append(keys, sidecar.AssignmentKey(c.Customer))
	}
	s.mu.Unlock()
	s.publish(keys...)
	return conflicts, nil
}

// AssignmentsChanged reads the writes kept since since.
func (s *Store) AssignmentsChanged(_ context.Context, since time.Time) ([]sidecar.AssignmentWrite, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.written.since(s.now(), since), nil
}

// withinDomainBounds refuses cs when the customers they would add to a
// domain (those not in it now, whose change applies) take it past the
// smallest MaxInDomain of the changes into it. s.mu is held, so the count
// and the write are one step.
func (s *Store) withinDomainBounds(cs []sidecar.AssignmentChange) error {
	bound := map[string]int{}
	added := map[string]map[string]bool{}
	for _, c := range cs {
		if c.To == nil || c.MaxInDomain <= 0 {
			continue
		}
		d := c.To.Domain
		if b, ok := bound[d]; !ok || c.MaxInDomain < b {
			bound[d] = c.MaxInDomain
		}
		key := sidecar.FoldID(c.Customer)
		current := ""
		if a := s.assign[key]; a != nil {
			current = a.Domain
		}
		if current == c.From && current != d {
			if added[d] == nil {
				added[d] = map[string]bool{}
			}
			added[d][key] = true
		}
	}
	if len(bound) == 0 {
		return nil
	}
	held := map[string]int{}
	for _, a := range s.assign {
		if _, ok := bound[a.Domain]; ok {
			held[a.Domain]++
		}
	}
	for d, b := range bound {
		if held[d]+len(added[d]) > b {
			return sidecar.TooManyAssignments(d, held[d], len(added[d]), b)
		}
	}
	return nil
}

// keepUnassigned records a, removed by c, for RemovedAssignment and
// forgets removals past sidecar.AppendOnceWindow. s.mu is held.
func (s *Store) keepUnassigned(key string, a sidecar.Assignment, c sidecar.AssignmentChange) {
	for k, old := range s.unassigned {
		if c.At.Sub(old.RemovedAt) >= sidecar.AppendOnceWindow {
			delete(s.unassigned, k)
		}
	}
	a.RemovedAt, a.RemovedBy = c.At, c.By
	s.unassigned[key] = a
}

func (s *Store) RemovedAssignment(_ context.Context, customer string) (*sidecar.Assignment, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.unassigned[sidecar.FoldID(customer)]
	if !ok || s.now().Sub(a.RemovedAt) >= sidecar.AppendOnceWindow {
		return nil, notFound("removed assignment")
	}
	return &a, nil
}

func (s *Store) DeleteAssignment(_ context.Context, customer string) error {
	s.mu.Lock()
	key := sidecar.FoldID(customer)
	_, ok := s.assign[key]
	delete(s.assign, key)
	s.mu.Unlock()
	if !ok {
		return notFound("assignment")
	}
	s.publish(sidecar.AssignmentKey(customer))
	return nil
}

func (s *Store) AssignmentsByDomain(_ context.Context, domain string, p sidecar.Page) ([]sidecar.Assignment, string, error) {
	after := ""
	if p.Cursor != "" {
		var err error
		if after, err = s.cursors.Open(sidecar.AssignmentsScope(domain), p.Cursor); err != nil {
			return nil, "", err
		}
	}
	s.mu.RLock()
	var all []sidecar.Assignment
	for _, a := range s.assign {
		if a.Domain == domain && a.Customer > after {
			all = append(all, *a)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(all, func(a, b sidecar.Assignment) int { return strings.Compare(a.Customer, b.Customer) })
	next := ""
	if len(all) > p.N() {
		all = all[:p.N()]
		next = s.cursors.Seal(sidecar.AssignmentsScope(domain), all[len(all)-1].Customer)
	}
	return all, next, nil
}

// ---- streams ---------------------------------------------------------------

// nextStreamID is monotonic even if the clock steps back.
func (s *Store) nextStreamID() sidecar.StreamID {
	ms := uint64(max(s.now().UnixMilli(), 0))
	if ms > s.lastID.MS {
		s.lastID = sidecar.StreamID{MS: ms}
	} else {
		s.lastID.Seq++
	}
	return s.lastID
}

func (s *Store) AppendEvent(_ context.Context, e *sidecar.Event) error {
	if err := e.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	if id, ok := s.appended.seen("e", e.Once, s.now()); ok {
		e.ID = id
		return nil
	}
	e.ID = s.nextStreamID().String()
	s.appended.add("e", e.Once, e.ID, s.now())
	cp := *e
	cp.Data = cloneMap(e.Data)
	s.events = appendBounded(s.events, cp, s.eventsMax)
	return nil
}

func (s *Store) AppendAudit(_ context.Context, a *sidecar.AuditEntry) error {
	if err := a.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.Time.IsZero() {
		a.Time = s.now()
	}
	if id, ok := s.appended.seen("a", a.Once, s.now()); ok {
		a.ID = id
		return nil
	}
	a.ID = s.nextStreamID().String()
	s.appended.add("a", a.Once, a.ID, s.now())
	cp := *a
	cp.Data = cloneMap(a.Data)
	if a.SelfService {
		s.selfAudit = appendBounded(s.selfAudit, cp, s.auditSelfMax)
	} else {
		s.audit = appendBounded(s.audit, cp, s.auditMax)
	}
	return nil
}

// onceLog remembers appended Once values for sidecar.AppendOnceWindow;
// the window is fixed, so they expire in the order added.
type onceLog struct {
	ids   map[string]string // stream + "\x00" + once → entry id
	order []onceAdded
}

type onceAdded struct {
	key string
	at  time.Time
}

func (l *onceLog) seen(stream, once string, now time.Time) (string, bool) {
	if once == "" {
		return "", false
	}
	l.expire(now)
	id, ok := l.ids[stream+"\x00"+once]
	return id, ok
}

func (l *onceLog) add(stream, once, id string, now time.Time) {
	if once == "" {
		return
	}
	if l.ids == nil {
		l.ids = map[string]string{}
	}
	k := stream + "\x00" + once
	l.ids[k] = id
	l.order = append(l.order, onceAdded{k, now})
}

func (l *onceLog) expire(now time.Time) {
	n := 0
	for n < len(l.order) && now.Sub(l.order[n].at) >= sidecar.AppendOnceWindow {
		delete(l.ids, l.order[n].key)
		n++
	}
	l.order = l.order[n:]
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func appendBounded[T any](list []T, v T, max int) []T {
	list = append(list, v)
	if max > 0 && len(list) > max {
		// Drop a tenth at once so trimming is amortised, as XADD MAXLEN ~ does.
		drop := len(list) - max + max/10
		list = slices.Clone(list[min(drop, len(list)):])
	}
	return list
}

func (s *Store) ReadEvents(_ context.Context, f sidecar.StreamFilter) ([]sidecar.Event, string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return readStream([][]sidecar.Event{s.events}, f, func(e *sidecar.Event) (string, time.Time, bool) {
		return e.ID, e.Time, matchStream(f, e.Type, e.Customer, e.Actor, e.Time)
	}, func(e sidecar.Event) sidecar.Event { e.Data = cloneMap(e.Data); return e })
}

func (s *Store) ReadAudit(_ context.Context, f sidecar.StreamFilter) ([]sidecar.AuditEntry, string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return readStream([][]sidecar.AuditEntry{s.audit, s.selfAudit}, f, func(a *sidecar.AuditEntry) (string, time.Time, bool) {
		return a.ID, a.Time, matchStream(f, a.Action, a.Customer, a.Actor, a.Time)
	}, func(a sidecar.AuditEntry) sidecar.AuditEntry { a.Data = cloneMap(a.Data); return a })
}

func matchStream(f sidecar.StreamFilter, typ, customer, actor string, t time.Time) bool {
	return (f.Type == "" || f.Type == typ) && (f.Customer == "" || f.Customer == customer) &&
		(f.Actor == "" || f.Actor == actor) && (f.From.IsZero() || !t.Before(f.From)) &&
		(f.To.IsZero() || t.Before(f.To))
}

// readStream returns up to f.N() matching entries after the cursor from
// lists (each ordered by id, ids unique across them) merged in id order,
// examining at most scanLimit; the next cursor is "" at the end of them.
func readStream[T any](lists [][]T, f sidecar.StreamFilter, inspect func(*T) (string, time.Time, bool), clone func(T) T) ([]T, string, error) {
	id := func(v *T) sidecar.StreamID {
		s, _, _ := inspect(v)
		sid, _ := sidecar.ParseStreamID(s) // made by nextStreamID
		return sid
	}
	pos := make([]int, len(lists))
	if f.Cursor != "" {
		after, err := sidecar.ParseStreamID(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		for k, list := range lists {
			pos[k] = sort.Search(len(list), func(i int) bool { return after.Less(id(&list[i])) })
		}
	}
	// oldest is the list whose next entry comes first; -1 past the end.
	oldest := func() int {
		best := -1
		for k, list := range lists {
			if pos[k] < len(list) && (best < 0 || id(&list[pos[k]]).Less(id(&lists[best][pos[best]]))) {
				best = k
			}
		}
		return best
	}
	var out []T
	last := ""
	for scanned := 0; len(out) < f.N() && scanned < scanLimit; scanned++ {
		k := oldest()
		if k < 0 {
			break
		}
		v := &lists[k][pos[k]]
		pos[k]++
		var ok bool
		last, _, ok = inspect(v)
		if ok {
			out = append(out, clone(*v))
		}
	}
	if oldest() < 0 {
		last = ""
	}
	return out, last, nil
}

func (s *Store) TakeAssignmentRows(_ context.Context, domain string, rows, limit int, window time.Duration) (time.Duration, bool, error) {
	return s.takeBudgetN("rows\x00"+domain, rows, limit, window)
}
