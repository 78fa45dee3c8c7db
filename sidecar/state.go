package sidecar

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// This file holds the delegation state Deputy keeps — customers, consent,
// impersonation sessions, partner requests and grants, shares,
// subscriptions, reseller assignments, events and audit — and the small
// store interfaces the lifecycle code (sidecar/delegation) and the
// management API (sidecar/api) consume. sidecar/memory and sidecar/redis
// implement all of them; sidecar/storetest is their shared contract.
//
// Conventions every store follows:
//   - A missing record is an *Error with ENOTFOUND; a state store that cannot
//     be reached returns EUNAVAILABLE. Expired records (grants, consent,
//     redeem codes, pending requests past their expiry) count as missing: the
//     store checks expiry on read against its injected Clock, so the clock,
//     not Redis TTLs, governs.
//   - Callers pass fully formed records; the store assigns nothing but
//     stream ids (events, audit).
//   - Writes that change what the check path reads publish the matching
//     invalidation key on the store's Invalidator from inside the store
//     method, so every replica's cache drops the entry: RedeemSession and
//     EndSession → SessionKey(token hash); SetConsent → ConsentKey and the
//     SessionKey of every session it ended; StartSession → the SessionKey
//     of every session it ended;
//     PutCustomer → CustomerKey; DeleteCustomer → CustomerKey, ConsentKey
//     and the SessionKey of every session it ended; PutGrant, RevokeGrant →
//     GrantKey; PutShare, DeleteShare → ShareKey; PutAssignment(s),
//     DeleteAssignment, ChangeAssignments → AssignmentKey. Widening writes publish too, so a
//     cached "nothing there" does not outlive the change. The writing
//     replica's own subscribers get the key before the method returns, so
//     the change holds there from the next request on. A narrowing write
//     (those listed below, whose publish failure is Unpublished) returns
//     only once every replica listening for invalidations has applied its
//     keys, so it holds on every replica from the next request on; a
//     replica that does not confirm within the store's bound makes it
//     Unpublished. A replica that is not listening (its connection to the
//     bus is down) is told so (InvalidationsLost): its caches read hits
//     through until it listens again. One that cannot tell yet (paused,
//     or cut off, while the bus dropped it) stops trusting its caches
//     when its lease on the bus runs out (HearingLease), which the
//     narrowing write waits for. Other
//     writes reach the other replicas when the Invalidator delivers them
//     (their cache TTL bounds the staleness if it is lost). Lifecycle code
//     never needs to call Invalidate for store writes; it may for changes of
//     its own. A publish that fails after a committed write of EndSession,
//     SetConsent, PutCustomer, DeleteCustomer, MarkStaff, RevokeGrant,
//     PutGrant, DeleteShare, ChangeAssignments, DeleteAssignment or
//     StartSession (of the sessions it ended) is returned as
//     Unpublished (EUNAVAILABLE) together with the method's result: the
//     write stands, its caller records it and answers 503, and the retry
//     publishes again. Other writes log such a failure: the cache TTL
//     bounds the staleness. The in-memory store's publish cannot fail.

// Partner access levels, lowest to highest.
type Level string

const (
	LevelCC           Level = "cc"
	LevelLook         Level = "look"
	LevelUpdate       Level = "update"
	LevelCreate       Level = "create"
	LevelServiceAdmin Level = "service_admin"
	LevelFullAdmin    Level = "full_admin"
)

// Levels lists every level from lowest to highest.
var Levels = []Level{LevelCC, LevelLook, LevelUpdate, LevelCreate, LevelServiceAdmin, LevelFullAdmin}

// Rank orders levels: cc is 1, full_admin 6, an unknown level 0.
func (l Level) Rank() int {
	for i, v := range Levels {
		if v == l {
			return i + 1
		}
	}
	return 0
}

// Valid reports whether l is one of the known levels.
func (l Level) Valid() bool { return l.Rank() > 0 }

// AtLeast reports whether l is a known level not lower than min.
func (l Level) AtLeast(min Level) bool { return l.Valid() && l.Rank() >= min.Rank() }

// Customer is the profile the host application upserts through the API.
type Customer struct {
	ID               string    `json:"id"`
	Name             string    `json:"name,omitempty"` // display name for the storefront banner
	Org              string    `json:"org,omitempty"`
	DefaultStoreView string    `json:"default_store_view,omitempty"`
	StoreViews       []string  `json:"store_views,omitempty"` // allowed store views
	Protected        bool      `json:"protected,omitempty"`   // cannot be impersonated (e.g. staff accounts)
	Roles            []string  `json:"roles,omitempty"`       // as the storefront syncs them; policy's protected_roles apply
	UpdatedAt        time.Time `json:"updated_at,omitzero"`
	UpdatedBy        string    `json:"updated_by,omitempty"` // who synced it
}

// AllowsStoreView reports whether the customer may be impersonated in view.
func (c *Customer) AllowsStoreView(view string) bool {
	if view == "" {
		return false
	}
	if view == c.DefaultStoreView {
		return true
	}
	for _, v := range c.StoreViews {
		if v == view {
			return true
		}
	}
	return false
}

// Protection is policy data's protected_roles and protected_customers:
// the accounts, beyond those whose profile says so and those known as
// staff, that cannot be impersonated.
type Protection struct {
	Roles     []string
	Customers []string
}

// Protects reports whether c cannot be impersonated: its profile says so,
// it holds a protected role, it is listed, or its subject acted as staff.
// A missing profile is protected only by the list and the staff mark. The
// list is compared up to letter case (SameFold): an upstream that reads
// "ACME" as "acme" serves a listed "acme" to either.
func (p Protection) Protects(id string, c *Customer, staff bool) bool {
	if staff || slices.ContainsFunc(p.Customers, func(l string) bool { return SameFold(l, id) }) {
		return true
	}
	return c != nil && (c.Protected || slices.ContainsFunc(c.Roles, func(r string) bool { return slices.Contains(p.Roles, r) }))
}

// ProtectsState reports whether the customer id, whose state st is, cannot
// be impersonated or acted for: Protects of its own profile and staff
// mark, or of any other spelling of the id (st.Spellings). To an upstream
// that looks customers up without regard to case, "STAFF-1" is the
// protected "staff-1".
func (p Protection) ProtectsState(id string, st *CustomerState) bool {
	if p.Protects(id, st.Customer, st.Staff) {
		return true
	}
	for k := range st.Spellings {
		if v := &st.Spellings[k]; p.Protects(v.ID, v.Customer, v.Staff) {
			return true
		}
	}
	return false
}

// CustomerState is what every impersonated check must know of the
// customer acted as, read together in one store round trip: whether they
// still consent, and what makes their account protected.
type CustomerState struct {
	Customer *Customer // nil: no profile
	Consent  *Consent  // nil: never given, or past its expiry
	Staff    bool      // the customer's subject acted as staff
	// Spellings are the other ids that fold to the customer's (FoldID)
	// and have a profile or a staff mark: one account to an upstream
	// that reads ids without regard to case, so what protects one
	// protects all (Protection.ProtectsState). Usually empty.
	Spellings []Spelling
}

// Spelling is another spelling of a customer's id, with what may protect
// it: its profile (nil: none; the stores fill ID, Protected and Roles
// alone) and its staff mark.
type Spelling struct {
	ID       string
	Customer *Customer
	Staff    bool
}

// SpellingProtected reports whether any of st's spellings says by itself, without
// policy data, that the account is protected: a profile's flag or a staff
// mark.
func (st *CustomerState) SpellingProtected() bool {
	for _, v := range st.Spellings {
		if v.Staff || (v.Customer != nil && v.Customer.Protected) {
			return true
		}
	}
	return false
}

// Consent is a customer's "allow remote shopping assistance" setting.
type Consent struct {
	Customer  string    `json:"customer"`
	Allowed   bool      `json:"allowed"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: no expiry
	SetBy     string    `json:"set_by"`              // the customer or the staff member
	SetAt     time.Time `json:"set_at"`
	// Reason says why it was set when nobody chose it:
	// EndCustomerDeleted for the withdrawal deleting the profile made.
	// It marks that withdrawal in history, and in its records, as the
	// deletion's rather than anyone's choice.
	Reason string `json:"reason,omitempty"`
}

// CustomerDeletion is a customer's deletion, who made it and when, and
// what it changed besides the profile, for the caller to report.
type CustomerDeletion struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
	// Ended are the live sessions ended (EndCustomerDeleted); the store
	// does not keep them with the deletion (they say so themselves).
	Ended []Session `json:"-"`
	// Withdrawn is the withdrawal recorded in the consent history, with
	// Reason EndCustomerDeleted; nil when no consent was in force.
	Withdrawn *Consent `json:"withdrawn,omitempty"`
}

// SelfSet reports whether the customer set this consent themself: its
// records are self-service (AuditEntry.SelfService).
func (c *Consent) SelfSet() bool { return c.SetBy == c.Customer }

// Granted reports whether the consent allows impersonation at now.
func (c *Consent) Granted(now time.Time) bool {
	return c != nil && c.Allowed && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt))
}

// Covers reports whether the consent, at now, allows the session for the
// rest of its life: granted, and not ending before the session does.
func (c *Consent) Covers(s *Session, now time.Time) bool {
	return c.Granted(now) && (c.ExpiresAt.IsZero() || !s.ExpiresAt.After(c.ExpiresAt))
}

// SweepActor is who ends what lapsed: Deputy itself.
const SweepActor = "deputy"

// Reasons an impersonation session ended.
const (
	EndEnded            = "ended"
	EndExpired          = "expired"
	EndIdle             = "idle"
	EndReplaced         = "replaced"
	EndConsentWithdrawn = "consent_withdrawn"
	EndConsentExpired   = "consent_expired"
	EndRevoked          = "revoked"
	// EndCustomerProtected: the customer's account became protected (its
	// profile, a protected role, or its subject acting as staff).
	EndCustomerProtected = "customer_protected"
	// EndCustomerDeleted: the customer's profile was deleted, and with it
	// what said whether the account may be impersonated.
	EndCustomerDeleted = "customer_deleted"
	// EndActorNotPermitted: none of the roles the staff member started
	// the session with grants login_as_customer in policy data any more.
	EndActorNotPermitted = "actor_not_permitted"
)

// Session is one impersonation session. The cookie token is never stored:
// only its SHA-256 hash (hex), set when the redeem link is used.
type Session struct {
	ID        string `json:"id"`
	TokenHash string `json:"token_hash,omitempty"`
	// Host is the storefront host the redeem link was used on: where the
	// cookie lives, and where the session is honoured unless the
	// storefront hosts are configured.
	Host      string `json:"host,omitempty"`
	Actor     string `json:"actor"`
	ActorName string `json:"actor_name,omitempty"`
	// ActorRoles are the staff member's roles at start, from their
	// verified token: policy judges them against the live role
	// permissions on every request, so narrowing a role ends the session.
	ActorRoles   []string  `json:"actor_roles,omitempty"`
	Customer     string    `json:"customer"`
	CustomerName string    `json:"customer_name,omitempty"`
	StoreView    string    `json:"store_view,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	Ticket       string    `json:"ticket,omitempty"`
	StartedAt    time.Time `json:"started_at"`
	ExpiresAt    time.Time `json:"expires_at"` // min(start+max session, staff token expiry, consent expiry)
	// ConsentExpiresAt is the expiry of the consent in force (zero:
	// none): the one the session started under, then each consent set
	// since that still covers it (SetConsent). Reaching it ends the
	// session as consent_expired; a session that reaches its ExpiresAt
	// under a consent lasting longer ends as expired.
	ConsentExpiresAt time.Time     `json:"consent_expires_at,omitzero"`
	IdleTimeout      time.Duration `json:"idle_timeout,omitempty"` // zero: none
	LastSeen         time.Time     `json:"last_seen,omitzero"`
	EndedAt          time.Time     `json:"ended_at,omitzero"`
	EndedBy          string        `json:"ended_by,omitempty"`
	EndReason        string        `json:"end_reason,omitempty"`
}

// Live reports whether the session may be used at now: not ended, not
// past its expiry, not idle longer than its idle timeout.
func (s *Session) Live(now time.Time) bool { return s != nil && s.EndState(now) == "" }

// SessionLimits are the lifetime rules policy data sets now
// (impersonation.max_session and idle_timeout). A session stores the ones
// in force at its start; the current ones bound it too, so narrowing them
// reaches the sessions already started. Zero fields bound nothing.
type SessionLimits struct {
	MaxSession  time.Duration
	IdleTimeout time.Duration
}

// Within returns s as limits l bound it: expiring at the earlier of its
// stored expiry and its start plus l.MaxSession, idle after the shorter of
// its stored idle timeout and l.IdleTimeout. It is never longer than as
// stored: raising a limit extends no session. An ended session is
// returned as it is.
func (s Session) Within(l SessionLimits) Session {
	if !s.EndedAt.IsZero() {
		return s
	}
	if l.MaxSession > 0 {
		if end := s.StartedAt.Add(l.MaxSession); end.Before(s.ExpiresAt) {
			s.ExpiresAt = end
		}
	}
	if l.IdleTimeout > 0 && (s.IdleTimeout <= 0 || l.IdleTimeout < s.IdleTimeout) {
		s.IdleTimeout = l.IdleTimeout
	}
	return s
}

// LiveWithin reports whether the session, bounded by l (Within), may be
// used at now.
func (s *Session) LiveWithin(now time.Time, l SessionLimits) bool {
	if s == nil {
		return false
	}
	b := s.Within(l)
	return b.EndState(now) == ""
}

// ActorPermitted reports whether one of the roles the session recorded at
// start is among granting, the roles policy data now grants
// login_as_customer, as the impersonation policy judges every request. A
// session recorded without roles (started before Deputy recorded them) is
// not: policy denies it, and the sweep ends it.
func (s *Session) ActorPermitted(granting []string) bool {
	return slices.ContainsFunc(s.ActorRoles, func(r string) bool { return slices.Contains(granting, r) })
}

// EndState says why the session is not live at now ("" when it is): its
// recorded end reason, or EndExpired / EndIdle.
func (s *Session) EndState(now time.Time) string {
	switch {
	case !s.EndedAt.IsZero():
		return s.EndReason
	case !now.Before(s.ExpiresAt):
		if !s.ConsentExpiresAt.IsZero() && !s.ConsentExpiresAt.After(s.ExpiresAt) {
			return EndConsentExpired
		}
		return EndExpired
	case s.IdleTimeout > 0 && !now.Before(s.lastActive().Add(s.IdleTimeout)):
		return EndIdle
	}
	return ""
}

func (s *Session) lastActive() time.Time {
	if s.LastSeen.After(s.StartedAt) {
		return s.LastSeen
	}
	return s.StartedAt
}

// SessionStart is a session to begin together with its redeem code, and
// the rules that must still hold at the instant it is stored.
type SessionStart struct {
	Session        *Session
	CodeHash       string    // the single-use redeem code, hashed
	CodeExpiresAt  time.Time //
	ProtectedRoles []string  // policy data's protected_roles
	// ProtectedCustomers is policy data's protected_customers.
	ProtectedCustomers []string
	// ReplaceLive ends the actor's other sessions in the same step
	// (Supersede): one live session per staff member.
	ReplaceLive bool
	// Limits are policy data's session limits, which bound the sessions
	// it replaces (Supersede).
	Limits SessionLimits
	// StartNoLater moves the session's start back to the store's time
	// when it is later (MoveStart): a replica whose clock runs ahead
	// stamped a start in the future, and the session would outlive
	// max_session, and its redeem code its TTL, that much on every other
	// replica.
	StartNoLater bool
}

// Supersede ends old, another session of the starting actor that nobody
// ended, in the start's atomic step, at now: a live one as replaced, by
// the actor; one that lapsed (idle, expired, past its consent; within
// st.Limits) with its EndState, by SweepActor, as the sweep would have. A
// lapsed session is ended too, not only passed over: the session log
// records its end, replicas evict it, and no later write can make it a
// second live session of the actor. Whether it lapsed is judged at liveAt,
// the store's judging instant (LiveAt): a session live there is live for
// some replica, and is replaced.
func (st *SessionStart) Supersede(old *Session, now, liveAt time.Time) {
	by, reason := st.Session.Actor, EndReplaced
	if b := old.Within(st.Limits); b.EndState(liveAt) != "" {
		*old = b
		by, reason = SweepActor, b.EndState(liveAt)
	}
	old.EndedAt, old.EndedBy, old.EndReason = now, by, reason
}

// MoveStart moves the session's start back to at, the store's time, when
// StartNoLater is set and the start is later, and by as much the expiries
// that count from it: the session's to at most its new start plus
// Limits.MaxSession (an expiry set by the staff member's token or the
// consent stays), the redeem code's back by the same shift
// (MoveCodeExpiry). The session is moved in place, so that the caller
// holds it as stored. It reports how far the start moved.
func (st *SessionStart) MoveStart(at time.Time) time.Duration {
	s := st.Session
	if !st.StartNoLater || !s.StartedAt.After(at) {
		return 0
	}
	d := s.StartedAt.Sub(at)
	s.StartedAt = at
	if end := at.Add(st.Limits.MaxSession); st.Limits.MaxSession > 0 && end.Before(s.ExpiresAt) {
		s.ExpiresAt = end
	}
	st.CodeExpiresAt = MoveCodeExpiry(st.CodeExpiresAt, d, s.ExpiresAt)
	return d
}

// MoveCodeExpiry is a redeem code's expiry once its session's start moved
// back by d (MoveStart): as much earlier, and never past expires, the
// session's expiry.
func MoveCodeExpiry(code time.Time, d time.Duration, expires time.Time) time.Time {
	return earlier(code.Add(-d), expires)
}

// LiveAt is the instant a narrowing write judges at which sessions are
// still live, and so must be ended: the earliest of the writer's now and
// the store's time (each store's own clock; on Redis, Redis's TIME too).
// A session is live at an earlier instant whenever it is live at a later
// one, so judged at the earliest, every session live by any replica's
// clock that is no earlier is ended: a writer whose clock runs ahead
// cannot leave one live for the others by taking it for expired.
func LiveAt(now time.Time, store ...time.Time) time.Time {
	for _, t := range store {
		if t.Before(now) {
			now = t
		}
	}
	return now
}

// EndLapsed ends s, which nobody ended, if it is not live at now within
// l: as SweepActor, with its EndState within l as the reason, and with the
// expiry and idle timeout it lapsed by. It reports whether it ended s.
func (s *Session) EndLapsed(now time.Time, l SessionLimits) bool {
	b := s.Within(l)
	state := b.EndState(now)
	if !s.EndedAt.IsZero() || state == "" {
		return false
	}
	*s = b
	s.EndedAt, s.EndedBy, s.EndReason = now, SweepActor, state
	return true
}

// Touch records activity at at, as TouchSession does inside the store's
// atomic step, now being the store's time. A session not live at the
// later of the two is refused (SessionOver), and its last-seen stays as
// it was: the store alone judges idleness, and a replica that judged by
// requests the store never saw cannot bring a lapsed session back. The
// last-seen recorded is at most now: a replica whose clock runs ahead
// cannot record activity in the future, which would keep the session from
// going idle, for every replica, that much past its idle timeout. It
// reports whether LastSeen moved. The store's time is the earlier of the
// writing replica's clock and, on Redis, Redis's (TIME): a replica whose
// clock lags the others' by d still records activity up to d after they
// hold the session lapsed.
func (s *Session) Touch(at, now time.Time) (bool, error) {
	if state := s.EndState(later(at, now)); state != "" {
		return false, SessionOver(state)
	}
	at = earlier(at, now)
	if !at.After(s.LastSeen) {
		return false, nil
	}
	s.LastSeen = at
	return true, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// Check is the start rule, applied by the stores inside their atomic step
// to the customer, consent and staff mark as they are at that instant
// (policy judged the same facts earlier; this closes the window between).
// A session whose expiry no longer matches the consent is ECONFLICT: the
// caller reads again and retries.
func (st *SessionStart) Check(now time.Time, c *Customer, consent *Consent, staff bool) error {
	s := st.Session
	switch {
	case s == nil || s.ID == "" || s.Actor == "" || s.Customer == "":
		return Invalid("session", "id, actor and customer are required")
	case st.CodeHash == "":
		return Invalid("code_hash", "redeem code hash is required")
	case c == nil:
		return &Error{Code: ENOTFOUND, Field: "customer_id", Message: "customer not found"}
	case Protection{Roles: st.ProtectedRoles, Customers: st.ProtectedCustomers}.Protects(c.ID, c, staff):
		return Errorf(EFORBIDDEN, "customer_protected")
	case !consent.Granted(now):
		return Errorf(EFORBIDDEN, "consent_required")
	case !consent.ExpiresAt.Equal(s.ConsentExpiresAt) || !consent.Covers(s, now):
		return Errorf(ECONFLICT, "consent changed while the session was starting")
	}
	return nil
}

// Partner grant scopes.
const (
	ScopeOrganisation = "organisation"
	ScopeIndividual   = "individual"
)

// Access request statuses.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestRejected = "rejected"
	RequestExpired  = "expired"
)

// AccessRequest is a partner user's request for access to a customer org.
type AccessRequest struct {
	ID               string    `json:"id"`
	PartnerOrg       string    `json:"partner_org"`
	RequestedBy      string    `json:"requested_by"`
	Customer         string    `json:"customer"` // the customer organisation
	ContactEmail     string    `json:"contact_email"`
	Level            Level     `json:"level"`
	ExpiryDays       int       `json:"expiry_days"`
	Scope            string    `json:"scope"`           // ScopeOrganisation or ScopeIndividual
	Users            []string  `json:"users,omitempty"` // for ScopeIndividual
	Status           string    `json:"status"`
	CreatedAt        time.Time `json:"created_at"`
	PendingExpiresAt time.Time `json:"pending_expires_at"`
	DecidedBy        string    `json:"decided_by,omitempty"`
	DecidedAt        time.Time `json:"decided_at,omitzero"`
	// GrantsPending marks an approval whose grants are not all stored yet:
	// a retried approval completes it, and nothing else issues grants for
	// the request. Cleared once they are stored, or when one is revoked.
	GrantsPending bool `json:"grants_pending,omitempty"`
	// ApprovalRecorded marks an approval whose audit record and
	// grant.approved event are written: approvals of one request
	// completing at once, or retried, record it once (RecordApproval).
	ApprovalRecorded bool `json:"approval_recorded,omitempty"`
	// Seq orders this approval among the approvals and revocations of
	// the partner organisation's access to the customer. The store sets
	// it when it records the approval, from a counter in the customer's
	// keys: replicas' clocks never decide which of two decisions is later.
	Seq int64 `json:"seq,omitempty"`
}

// Decide records the decision on a pending request. An approval leaves
// its grants pending until they are stored.
func (r *AccessRequest) Decide(status, by string, at time.Time) {
	r.Status, r.DecidedBy, r.DecidedAt = status, by, at
	r.GrantsPending = status == RequestApproved
}

// StatusAt is the request's status at now: a pending request past its
// pending expiry reads as RequestExpired.
func (r *AccessRequest) StatusAt(now time.Time) string {
	if r.Status == RequestPending && !now.Before(r.PendingExpiresAt) {
		return RequestExpired
	}
	return r.Status
}

// Grant is live partner access to a customer org. User "" is the grant for
// the whole partner organisation; otherwise it is an individual grant.
type Grant struct {
	ID         string    `json:"id"`
	Customer   string    `json:"customer"`
	PartnerOrg string    `json:"partner_org"`
	User       string    `json:"user,omitempty"`
	Level      Level     `json:"level"`
	ExpiresAt  time.Time `json:"expires_at"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	ApprovedAt time.Time `json:"approved_at,omitzero"`
	RequestID  string    `json:"request_id,omitempty"`
	// Seq is the approval's (AccessRequest.Seq): PutGrant refuses a grant
	// older than the last approval written or revocation made for the
	// same partner organisation and user.
	Seq int64 `json:"seq,omitempty"`
	// RevokedAt is when RevokeGrant removed the grant, on the grant
	// RevokedGrant returns: a retried revocation records it again only
	// while the store still remembers whether the first record got
	// through (AppendOnceWindow).
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	// RevokedBy and RevokedByOrg are who revoked it (subject and
	// organisation), kept with RevokedAt: a revocation recorded again by
	// a retry of the other party is still recorded as the revoker's.
	RevokedBy    string `json:"revoked_by,omitempty"`
	RevokedByOrg string `json:"revoked_by_org,omitempty"`
}

// Scope is ScopeIndividual for a user's grant, ScopeOrganisation otherwise.
func (g *Grant) Scope() string {
	if g.User != "" {
		return ScopeIndividual
	}
	return ScopeOrganisation
}

// Live reports whether the grant has not expired at now.
func (g *Grant) Live(now time.Time) bool { return g != nil && now.Before(g.ExpiresAt) }

// EffectiveGrants are the live grants that may apply to one partner user
// for one customer, and the holds on the user. Effective and At apply the
// precedence rule.
type EffectiveGrants struct {
	Individual   *Grant // the user's own grant, nil if none
	Organisation *Grant // the partner organisation's grant, nil if none
	Held         []Hold // holds on the user, live when read
}

// Hold keeps a user, until Until, from any organisation grant above
// Level. The individual grant is considered before the
// organisation's even when lower, so it may restrict its user; a change
// that ends it before its time must only narrow. Revoking a user's
// individual grant, and replacing it with one that ends earlier, leave a
// hold at its level until it would have expired: meanwhile an
// organisation grant above that level, approved before the change or
// after, gives the user nothing, and one at or below it applies. A new
// individual grant applies as usual while it lasts.
type Hold struct {
	Level Level     `json:"level"`
	Until time.Time `json:"until"`
}

// Keeps reports whether h, when live, keeps its user from an organisation
// grant at level: one above h's level. A hold of no known level keeps
// its user from every organisation grant.
func (h Hold) Keeps(level Level) bool {
	return !h.Level.Valid() || level.Rank() > h.Level.Rank()
}

// covers reports whether h keeps its user from every organisation grant
// o does, for at least as long (an unknown level ranks below cc).
func (h Hold) covers(o Hold) bool {
	return !h.Until.Before(o.Until) && h.Level.Rank() <= o.Level.Rank()
}

// Effective is the individual grant when there is one — even when it is
// lower than the organisation's — else the organisation grant unless a
// hold keeps the user from it, else nil. The grants and holds are taken
// as live, as a store returns them.
func (e EffectiveGrants) Effective() *Grant {
	if e.Individual != nil {
		return e.Individual
	}
	if e.Organisation == nil || e.heldBack(e.Organisation, time.Time{}) {
		return nil
	}
	return e.Organisation
}

// At is Effective at now: expired grants and holds count as absent.
func (e EffectiveGrants) At(now time.Time) *Grant {
	if e.Individual.Live(now) {
		return e.Individual
	}
	if !e.Organisation.Live(now) || e.heldBack(e.Organisation, now) {
		return nil
	}
	return e.Organisation
}

// HeldBack reports whether a hold keeps the user from the organisation
// grant at now, the organisation grant being live.
func (e EffectiveGrants) HeldBack(now time.Time) bool {
	return !e.Individual.Live(now) && e.Organisation.Live(now) && e.heldBack(e.Organisation, now)
}

// heldBack reports whether a hold live at now (any, for a zero now) keeps
// the user from org.
func (e EffectiveGrants) heldBack(org *Grant, now time.Time) bool {
	for _, h := range e.Held {
		if (now.IsZero() || now.Before(h.Until)) && h.Keeps(org.Level) {
			return true
		}
	}
	return false
}

// ReplacementHold is the hold that writing next over old, the grant
// stored for the same user, leaves: one at old's level until old's end
// when next is a user's grant ending earlier than old, live at now. ok
// is false when it leaves none.
func ReplacementHold(old, next *Grant, now time.Time) (h Hold, ok bool) {
	if next.User == "" || !old.Live(now) || !next.ExpiresAt.Before(old.ExpiresAt) {
		return Hold{}, false
	}
	return Hold{Level: old.Level, Until: old.ExpiresAt}, true
}

// AddHold returns holds with h added, when h is live at now. Holds no
// longer live are dropped, and so is every hold another one covers
// (keeps its user from every organisation grant it does, for at least as
// long): h when one already there covers it, else those h covers. So a
// user has at most one hold per level. Both stores keep a user's holds
// this way.
func AddHold(holds []Hold, h Hold, now time.Time) []Hold {
	out := make([]Hold, 0, len(holds)+1)
	add := now.Before(h.Until)
	for _, old := range holds {
		switch {
		case !now.Before(old.Until):
		case add && old.covers(h):
			add = false
			out = append(out, old)
		case !add || !h.covers(old):
			out = append(out, old)
		}
	}
	if add {
		out = append(out, h)
	}
	return out
}

// Share makes one of a customer's resources (a service request) visible to
// a partner user, the user User of the organisation PartnerOrg, holding
// the cc level.
type Share struct {
	Customer   string    `json:"customer"`
	Resource   string    `json:"resource"`
	User       string    `json:"user"`
	PartnerOrg string    `json:"partner_org,omitempty"`
	SharedBy   string    `json:"shared_by,omitempty"`
	SharedAt   time.Time `json:"shared_at,omitzero"`
	// RemovedAt and RemovedBy are when DeleteShare removed the share and
	// who withdrew it, on the shares it and RemovedShares return: a
	// retried withdrawal records it again only while the store still
	// remembers whether the first record got through (AppendOnceWindow).
	RemovedAt time.Time `json:"removed_at,omitzero"`
	RemovedBy string    `json:"removed_by,omitempty"`
}

// Same reports whether s and o are the same share as written, put or
// removed.
func (s *Share) Same(o *Share) bool {
	return s.Customer == o.Customer && s.Resource == o.Resource && s.User == o.User && s.PartnerOrg == o.PartnerOrg &&
		s.SharedBy == o.SharedBy && s.SharedAt.Equal(o.SharedAt) && s.RemovedAt.Equal(o.RemovedAt) && s.RemovedBy == o.RemovedBy
}

// Retried reports whether s, the share stored, is the write sh repeats:
// the same share by the same sharer, put no later than sh and within
// AppendOnceWindow of it, while the store still tells whether its records
// got through. A retry of a share whose reply was lost keeps it as it is,
// with its SharedAt and so its records' Once.
func (s *Share) Retried(sh *Share) bool {
	return s.Customer == sh.Customer && s.Resource == sh.Resource && s.User == sh.User && s.PartnerOrg == sh.PartnerOrg &&
		s.SharedBy == sh.SharedBy && !s.SharedAt.After(sh.SharedAt) && RecordableAgain(s.SharedAt, sh.SharedAt)
}

// RecordableAgain reports whether a change made at at may be recorded
// again at now, with the Once its first records carried: a change whose
// store reply was lost answered an error before recording it, and the
// retry that finds it made records it. Within AppendOnceWindow of the
// change the store still knows whether the first records got through and
// appends them only if not; later it would append them twice, so a
// change that old (or of no known time) is left as it is.
func RecordableAgain(at, now time.Time) bool {
	return !at.IsZero() && now.Sub(at) < AppendOnceWindow
}

// For reports whether the share is made to the user of partnerOrg. A
// share without a partner organisation is for no one.
func (s *Share) For(partnerOrg, user string) bool {
	return s.PartnerOrg != "" && s.PartnerOrg == partnerOrg && s.User == user
}

// ShareOrder orders shares by user, resource and partner organisation:
// how stores list them and the API pages them.
func ShareOrder(a, b Share) int {
	return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.PartnerOrg, b.PartnerOrg))
}

// Subscription is a partner user's subscription to a customer's
// notifications (or dashboard). Whether it still counts depends on the
// user's effective grant when it is read.
type Subscription struct {
	User      string    `json:"user"`
	Customer  string    `json:"customer"`
	Kind      string    `json:"kind"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Assignment puts a customer in exactly one reseller domain.
type Assignment struct {
	Customer  string    `json:"customer"`
	Reseller  string    `json:"reseller"`
	Domain    string    `json:"domain"`
	UpdatedBy string    `json:"updated_by,omitempty"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// RemovedAt and RemovedBy are when a change removed the assignment
	// and who removed it, on the assignment RemovedAssignment returns: a
	// retried removal records it again only while the store still
	// remembers whether the first record got through (AppendOnceWindow).
	RemovedAt time.Time `json:"removed_at,omitzero"`
	RemovedBy string    `json:"removed_by,omitempty"`
}

// Event types appended to the events stream for the host's mailer.
const (
	EventGrantRequested       = "grant.requested"
	EventGrantApproved        = "grant.approved"
	EventGrantRejected        = "grant.rejected"
	EventGrantRevoked         = "grant.revoked"
	EventGrantExpiring        = "grant.expiring"
	EventImpersonationStarted = "impersonation.started"
	EventImpersonationEnded   = "impersonation.ended"
	EventConsentChanged       = "consent.changed"
	EventConsentExpired       = "consent.expired"
	EventAssignmentChanged    = "assignment.changed"
)

// Event is one entry of the events stream. ID is assigned on append and
// orders the stream; Data carries type-specific fields as strings.
type Event struct {
	ID       string            `json:"id"`
	Type     string            `json:"type"`
	Time     time.Time         `json:"time"`
	Customer string            `json:"customer,omitempty"`
	Actor    string            `json:"actor,omitempty"`
	Data     map[string]string `json:"data,omitempty"`
	// Once makes the append idempotent (see AppendOnceWindow).
	Once string `json:"-"`
}

// AppendOnceWindow is how long a store remembers an appended event's or
// audit entry's Once: within it, appending another with the same Once
// appends nothing and assigns the first one's ID. A writer that appends
// again after an error sets it, since the append that failed may have
// happened (its reply lost).
const AppendOnceWindow = time.Hour

// AuditEntry is one entry of the audit trail: a management action, who
// did it, to what, and how it ended. Kept apart from events, with its own
// retention.
//
// SelfService marks the record of what an ordinary account did for its own
// side: a customer's own consent (and what follows from it alone), and
// what a customer's contact manager or a partner's user did for their own
// organisation (access requests, approvals, rejections, revocations,
// shares). Any signed-in account can write those, as often as its budget
// allows. Stores keep them in a stream of their own, trimmed apart, so
// that however many there are they never push out the records of
// privileged actions, taken on someone else's account (impersonation,
// consent set on behalf, reseller assignments); a read of the trail
// merges both in id order. Partner-model actions are all self-service:
// only a party to the request, grant or share may take them.
type AuditEntry struct {
	ID          string            `json:"id"`
	Time        time.Time         `json:"time"`
	Actor       string            `json:"actor"`
	Action      string            `json:"action"`
	Customer    string            `json:"customer,omitempty"`
	Target      string            `json:"target,omitempty"`
	Outcome     string            `json:"outcome,omitempty"` // e.g. "ok", or an error code
	SelfService bool              `json:"self_service,omitempty"`
	Data        map[string]string `json:"data,omitempty"`
	// Once makes the append idempotent (see AppendOnceWindow).
	Once string `json:"-"`
}

// Page asks for one page of a list. Cursor is opaque: pass the next cursor
// a previous page returned; "" starts at the beginning. Limit <= 0 means
// DefaultPageLimit; larger than MaxPageLimit is capped.
type Page struct {
	Cursor string
	Limit  int
}

// Page limits.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 500
)

// N is the effective limit of the page.
func (p Page) N() int {
	switch {
	case p.Limit <= 0:
		return DefaultPageLimit
	case p.Limit > MaxPageLimit:
		return MaxPageLimit
	}
	return p.Limit
}

// SessionFilter selects sessions for the session log and live lists.
// Empty fields match everything; From/To bound StartedAt (To exclusive).
// Results are newest first.
type SessionFilter struct {
	Actor    string
	Customer string
	LiveOnly bool // only sessions live at the store's now, within Limits
	Limits   SessionLimits
	From, To time.Time
	Page
}

// RequestFilter selects access requests. At least one of Customer and
// PartnerOrg must be set. Status compares with StatusAt(now). Newest first.
type RequestFilter struct {
	Customer   string
	PartnerOrg string
	Status     string
	Page
}

// StreamFilter selects events or audit entries. Empty fields match
// everything; From/To bound Time (To exclusive). Oldest first, so a
// consumer can follow the stream with the returned cursor.
type StreamFilter struct {
	Type     string // event type or audit action
	Customer string
	Actor    string
	From, To time.Time
	Page
}

// CustomerStore keeps customer profiles.
type CustomerStore interface {
	// PutCustomer upserts the profile and, in the same atomic step, ends
	// (EndCustomerProtected, by c.UpdatedBy) the customer's live sessions
	// when p protects the profile as written; it returns those sessions.
	PutCustomer(ctx context.Context, c *Customer, p Protection) ([]Session, error)
	GetCustomer(ctx context.Context, id string) (*Customer, error)
	// DeleteCustomer removes the profile and, in the same atomic step,
	// ends (EndCustomerDeleted, by by) the customer's live sessions: what
	// said whether the account is protected is gone. In that step it also
	// removes the customer's consent, so a profile put later under the same
	// id starts without one; a consent in force is recorded in history as
	// withdrawn (by by, Reason EndCustomerDeleted), and the history is kept. It returns those
	// sessions and that withdrawal, with by and the store's now (By, At);
	// ENOTFOUND when there is no profile. It keeps the deletion (By, At,
	// Withdrawn) for CustomerDeletions in the same step.
	DeleteCustomer(ctx context.Context, id, by string) (*CustomerDeletion, error)
	// CustomerDeletions returns the customer's deletions as DeleteCustomer
	// kept them (By, At and Withdrawn; no Ended), each for AppendOnceWindow
	// past its At, oldest first; none when there are none. A delete finds
	// there the deletions before it, when, and by whom, and records those
	// a delete whose reply was lost never did: a deletion that withdrew no
	// consent leaves no other trace, and the profile may have been put
	// again and deleted again since.
	CustomerDeletions(ctx context.Context, id string) ([]CustomerDeletion, error)
	// MarkStaff records that subject acted as staff, so it can never be
	// impersonated (SessionStart.Check), and in the same atomic step ends
	// (EndCustomerProtected, by SweepActor) the live sessions that
	// impersonate it; it returns those sessions.
	MarkStaff(ctx context.Context, subject string) ([]Session, error)
	// GetCustomerState reads the profile, consent and staff mark of the
	// customer in one round trip: the check path's view.
	GetCustomerState(ctx context.Context, customer string) (*CustomerState, error)
}

// ConsentStore keeps each customer's consent and its history.
type ConsentStore interface {
	// SetConsent replaces the customer's consent, appends it to history
	// and, in the same atomic step, ends (EndConsentWithdrawn, by c.SetBy)
	// every live session of the customer the new consent does not cover
	// (Consent.Covers); it returns those sessions. The live sessions it
	// covers take its expiry as their ConsentExpiresAt in that step, so
	// that a session reaching its own expiry under a consent extended
	// since ends as expired, not as consent_expired.
	SetConsent(ctx context.Context, c *Consent) ([]Session, error)
	// ConsentsSet returns the consents SetConsent stored at a time
	// (SetAt) not before since, as set, each for AppendOnceWindow past its
	// SetAt, earliest first. SetConsent keeps each for it in the same
	// atomic step: its consent.changed event and audit entry are appended
	// after that step, and a process that stops, or loses the store,
	// before they are leaves the customer untold; a sweep of any replica
	// finds it there.
	ConsentsSet(ctx context.Context, since time.Time) ([]Consent, error)
	// GetConsent returns the current consent; ENOTFOUND when never set or
	// past its expiry.
	GetConsent(ctx context.Context, customer string) (*Consent, error)
	// TakeLapsedConsents returns the consents given until a time that has
	// come by now, each once across all callers and replicas, and keeps
	// them, as taken at now, for LapsedConsentsTaken in the same step.
	TakeLapsedConsents(ctx context.Context, now time.Time) ([]Consent, error)
	// LapsedConsentsTaken returns the consents TakeLapsedConsents took at
	// a now not before since, as it returned them, for AppendOnceWindow
	// past that now; oldest take first. A sweep whose take failed, and
	// may have been made (its reply lost), finds there what it took.
	LapsedConsentsTaken(ctx context.Context, since time.Time) ([]Consent, error)
	// ConsentHistory lists past settings, newest first.
	ConsentHistory(ctx context.Context, customer string, p Page) ([]Consent, string, error)
	// TakeConsentChange takes one of the limit changes the customer may
	// make to their own consent in a window, counted across replicas: the
	// first change after a window ended opens the next, window long from
	// the store's now. Over the limit it takes nothing and returns false
	// with how long until the window ends.
	TakeConsentChange(ctx context.Context, customer string, limit int, window time.Duration) (wait time.Duration, ok bool, err error)
}

// SessionStore keeps impersonation sessions, retained after they end (for
// the session log) for the store's session retention, and redeem codes.
type SessionStore interface {
	// StartSession stores st.Session and its redeem code in one atomic
	// step, provided st.Check passes on the customer, consent and staff
	// mark as stored at that instant; with st.ReplaceLive every other
	// session of the actor that nobody ended ends in the same step
	// (SessionStart.Supersede: live ones replaced, lapsed ones with their
	// lapse) and is returned. ECONFLICT if the id or the code hash exists.
	StartSession(ctx context.Context, st SessionStart) ([]Session, error)
	// GetSession returns the session by id, live or not.
	GetSession(ctx context.Context, id string) (*Session, error)
	// RedeemSession takes the single-use redeem code and attaches the
	// cookie token's hash and the host it was redeemed on to its session,
	// in one atomic step: of
	// concurrent redeemers exactly one succeeds. redeemer is the verified
	// subject of whoever opened the link, "" when nobody's was verified.
	// ENOTFOUND when the code is unknown, used or expired; EFORBIDDEN
	// (ReasonRedeemActorMismatch) when redeemer is set and is not the
	// session's actor, answered with the session, which stays as it was
	// (unredeemed); ECONFLICT when the session already has a token or is
	// no longer live within l. The code is used up whatever the answer.
	RedeemSession(ctx context.Context, codeHash, tokenHash, host, redeemer string, l SessionLimits) (*Session, error)
	// BurnRedeemCode takes the single-use redeem code as RedeemSession
	// does, in the same atomic step with respect to it, and attaches
	// nothing: the code can never be redeemed, and its session stays as it
	// was (unredeemed; it ends as any session does). It is for a code that
	// came in a form that may have been written where others read it. Of
	// a burn and concurrent redeemers exactly one takes the code. It
	// returns the session the code was for; ENOTFOUND when the code is
	// unknown, used or expired.
	BurnRedeemCode(ctx context.Context, codeHash string) (*Session, error)
	// SessionByToken returns the session whose token hashes to tokenHash,
	// live or not (callers check Live); ENOTFOUND for unknown hashes.
	SessionByToken(ctx context.Context, tokenHash string) (*Session, error)
	// TouchSession records activity at at for the idle timeout, in one
	// atomic step with the check that the session is still live
	// (Session.Touch): a session the store holds ended or lapsed is
	// refused with SessionOver, and the check path denies its cookie.
	// ENOTFOUND for an unknown id.
	TouchSession(ctx context.Context, id string, at time.Time) error
	// EndSession ends a session and returns it: by by, for reason, at at.
	// A session that is no longer live within l at the earlier of at and
	// the store's time (LiveAt), and that nobody ended, is ended as lapsed
	// instead (Session.EndLapsed), as the sweep would have: a writer whose
	// clock runs ahead can neither take a session still live for the
	// others for over nor record a lapse as its own end. Ending an ended
	// session is not an error: it returns the session with its first end
	// unchanged.
	EndSession(ctx context.Context, id, by, reason string, at time.Time, l SessionLimits) (*Session, error)
	// EndLapsedSessions ends the sessions that are no longer live at now
	// within l (expired, idle, past their consent) but that nobody ended
	// (Session.EndLapsed: their EndState as the reason, by "deputy"), and
	// returns them: of concurrent sweepers, on any replica, each session
	// goes to one.
	EndLapsedSessions(ctx context.Context, now time.Time, l SessionLimits) ([]Session, error)
	// EndProtectedSessions ends (EndCustomerProtected, by SweepActor) the
	// live sessions whose customer p protects as stored at that instant
	// (profile, staff mark): how a change of policy data's lists reaches
	// the session log. Of concurrent sweepers each session goes to one.
	EndProtectedSessions(ctx context.Context, p Protection, now time.Time) ([]Session, error)
	// EndUnpermittedSessions ends (EndActorNotPermitted, by SweepActor)
	// the live sessions whose actor is no longer permitted to impersonate
	// (Session.ActorPermitted with granting, the roles policy data grants
	// login_as_customer): how narrowing a role reaches the session log. Of
	// concurrent sweepers each session goes to one.
	EndUnpermittedSessions(ctx context.Context, granting []string, now time.Time) ([]Session, error)
	// ListSessions returns one page of sessions, newest first.
	ListSessions(ctx context.Context, f SessionFilter) ([]Session, string, error)
	// SessionsEnded returns the sessions ended at a time (EndedAt) not
	// before since, as ended, each for AppendOnceWindow past its end,
	// earliest end first. Every write that ends a session (EndSession,
	// SetConsent, PutCustomer, DeleteCustomer, MarkStaff, StartSession,
	// the sweeps) keeps its end for it in the same atomic step: a write
	// whose reply was lost answered an error before recording the ends it
	// made, and its caller may never retry it, or do something else
	// instead; a sweep of any replica finds them there.
	SessionsEnded(ctx context.Context, since time.Time) ([]Session, error)
	// SessionsStarted returns the sessions started at a time (StartedAt)
	// not before since, as they stand (ended or not), each for
	// AppendOnceWindow past its start, earliest start first. StartSession
	// keeps each start for it in the same atomic step that stores the
	// session: the start's records are appended after that step, and a
	// process that stops, or loses the store, before they are leaves the
	// session stored with no record of its start; a sweep of any replica
	// finds it there.
	SessionsStarted(ctx context.Context, since time.Time) ([]Session, error)
}

// PartnerStore keeps partner access requests and grants.
type PartnerStore interface {
	// CreateRequest stores a new request; ECONFLICT if the id exists.
	CreateRequest(ctx context.Context, r *AccessRequest) error
	GetRequest(ctx context.Context, id string) (*AccessRequest, error)
	// DecideRequest moves a pending request to status (approved or
	// rejected) atomically; ECONFLICT if it is no longer pending (decided
	// already, or past its pending expiry). An approval gets the next Seq
	// of its partner organisation at its customer. The decision is stamped
	// at the earlier of at and the store's time (LiveAt; on Redis,
	// Redis's TIME too), and its grants expire counted from there: an
	// approval through a replica whose clock runs ahead would otherwise
	// give grants that outlive their days, on every replica, by as much.
	DecideRequest(ctx context.Context, id, status, by string, at time.Time) (*AccessRequest, error)
	// GrantsIssued clears GrantsPending: no grant of the request is to be
	// issued any more, and PutGrant refuses those that would be from then
	// on. ENOTFOUND when the request is gone.
	GrantsIssued(ctx context.Context, id string) error
	// RecordApproval sets ApprovalRecorded on an approved request and
	// reports whether this call set it: of the calls completing one
	// approval, at once or retried, exactly one answers true and records
	// the approval. ENOTFOUND when the request is gone, ECONFLICT when it
	// is not approved.
	RecordApproval(ctx context.Context, id string) (bool, error)
	ListRequests(ctx context.Context, f RequestFilter) ([]AccessRequest, string, error)

	// PutGrant stores a grant, replacing any grant for the same customer,
	// partner org and user (a re-approved request replaces level and expiry).
	// A grant of an approval whose grants were all issued or closed
	// (GrantsIssued on g.RequestID) is refused with ECONFLICT, atomically
	// with the write: an approval retried while its grant is revoked must
	// not issue it again. A grant whose Seq is below that of the grant last
	// written, or of the last revocation, for the same partner org and
	// user is refused with ECONFLICT and reason ReasonGrantSuperseded,
	// atomically too: a later decision stands, whichever write comes last.
	PutGrant(ctx context.Context, g *Grant) error
	// GetGrant returns a live grant by customer and id. It is the lookup
	// of a revocation: a store whose clock may differ from the shared
	// state's judges live at the earlier of the two, like RevokeGrant and
	// RevokedGrant, so that a replica whose clock runs ahead revokes what
	// the others still honour.
	GetGrant(ctx context.Context, customer, id string) (*Grant, error)
	// RevokeGrant deletes a grant and returns it; ENOTFOUND if absent. It
	// takes the next Seq of the grant's partner organisation at the
	// customer, so that no approval decided before it issues the grant
	// again. It keeps the grant as it was for RevokedGrant, in the same
	// atomic write, with who revoked it: subject by of organisation byOrg.
	// Revoking a user's individual grant also leaves, in that write, a
	// Hold on the user with that Seq until the grant would have expired
	// (AddHold), which EffectiveGrants returns from then on.
	RevokeGrant(ctx context.Context, customer, id, by, byOrg string) (*Grant, error)
	// TakeSelfServiceChange takes one of the limit changes an
	// organisation may make for itself in a window (access requests,
	// shares), counted across replicas as TakeConsentChange counts a
	// customer's, in a budget of its own.
	TakeSelfServiceChange(ctx context.Context, org string, limit int, window time.Duration) (wait time.Duration, ok bool, err error)
	// RevokedGrant returns a grant RevokeGrant removed, as it was but with
	// RevokedAt, RevokedBy and RevokedByOrg set, until the time it would have expired; ENOTFOUND for
	// an id never revoked.
	// A retried revocation finds there that its grant existed, and whose
	// it was, so it publishes the eviction again for its parties only.
	RevokedGrant(ctx context.Context, customer, id string) (*Grant, error)
	// EffectiveGrants returns the user's individual and the org's live
	// grants for the customer, and the user's live holds, in one read.
	EffectiveGrants(ctx context.Context, customer, partnerOrg, user string) (EffectiveGrants, error)
	// GrantsByCustomer lists a customer's live grants ("My Partners").
	GrantsByCustomer(ctx context.Context, customer string) ([]Grant, error)
	// GrantsByPartner lists the live grants a partner user may act under:
	// the user's individual grants and their organisation's grants ("My
	// Customers"; precedence per customer is the caller's).
	GrantsByPartner(ctx context.Context, partnerOrg, user string) ([]Grant, error)
	// GrantsExpiringBefore lists live grants expiring before t, soonest
	// first, for "expiring soon" events.
	GrantsExpiringBefore(ctx context.Context, t time.Time, limit int) ([]Grant, error)
	// RequestsDecided returns the requests decided (DecideRequest) or
	// whose approval was marked recorded (RecordApproval) at a time not
	// before since, as they stand, each once, for AppendOnceWindow past
	// the later of the two, earliest first. Both keep the request for it
	// before or with the write they make: the decision's records are
	// appended after it, and a process that stops, or loses the streams'
	// node, before they are leaves the decision with no record; a sweep of
	// any replica finds it there.
	RequestsDecided(ctx context.Context, since time.Time) ([]AccessRequest, error)
	// GrantsRevoked returns the grants RevokeGrant revoked at a time
	// (RevokedAt) not before since, as RevokedGrant keeps them, each for
	// AppendOnceWindow past the revocation (and no longer than the grant
	// would have lived), earliest first: kept, as RequestsDecided keeps a
	// decision, for a sweep to record a revocation whose records never
	// got through. A revocation the store cannot keep so still goes
	// ahead: it narrows access.
	GrantsRevoked(ctx context.Context, since time.Time) ([]Grant, error)
	// RequestsCreated returns the requests CreateRequest stored with a
	// CreatedAt not before since, as they stand, each for
	// AppendOnceWindow past its creation, earliest first. CreateRequest
	// keeps the request for it before or with the write that stores it:
	// the request's records (the grant.requested event the customer's
	// mailer asks the contact manager by) are appended after it, and a
	// process that stops, or loses the streams' node, before they are
	// leaves the request waiting with no one told; a sweep of any replica
	// finds it there. A request kept but never stored is left out.
	RequestsCreated(ctx context.Context, since time.Time) ([]AccessRequest, error)
}

// ShareStore keeps resources shared with cc-level partner users. A share
// is made to one user of one partner organisation, and is keyed and
// matched by both, as grants are: a user of another organisation with the
// same subject is someone else. A share stored without a partner
// organisation (written before shares named one) matches no one.
type ShareStore interface {
	// PutShare stores a share and returns it as stored: in one atomic
	// step, the share stored under its key is kept as it is when it is
	// the write s repeats (Share.Retried), and nothing new is kept for
	// SharesChanged; otherwise s replaces it (another sharer, a share put
	// again after a withdrawal, or past the window). EINVALID without a
	// partner organisation.
	PutShare(ctx context.Context, s *Share) (*Share, error)
	// DeleteShare deletes the share of resource with partnerOrg's user,
	// withdrawn by by; partnerOrg "" deletes a share stored without one.
	// It returns the share as removed (RemovedAt, RemovedBy set), and
	// keeps it so for RemovedShares, in the same write. ENOTFOUND if absent.
	DeleteShare(ctx context.Context, customer, resource, partnerOrg, user, by string) (*Share, error)
	// RemovedShares lists the customer's shares DeleteShare removed within
	// AppendOnceWindow, the last removal of each, ordered as ListShares:
	// a retried withdrawal finds there that its share was removed, when,
	// and by whom.
	RemovedShares(ctx context.Context, customer string) ([]Share, error)
	// SharesChanged returns the shares PutShare stored (as stored) and
	// DeleteShare removed (as removed: RemovedAt set) at a time (SharedAt,
	// RemovedAt) not before since, each for AppendOnceWindow past it,
	// earliest first: each write keeps its share for it in the same
	// atomic step, for a sweep of any replica to record a change whose
	// records never got through.
	SharesChanged(ctx context.Context, since time.Time) ([]Share, error)
	IsShared(ctx context.Context, customer, resource, partnerOrg, user string) (bool, error)
	// SharesFor lists the resource ids of customer shared with partnerOrg's
	// user, sorted; none when partnerOrg is "".
	SharesFor(ctx context.Context, customer, partnerOrg, user string) ([]string, error)
	// ListShares lists a customer's shares ordered by user, resource and
	// partner organisation (ShareOrder).
	ListShares(ctx context.Context, customer string) ([]Share, error)
}

// SubscriptionStore keeps partner users' notification subscriptions.
type SubscriptionStore interface {
	PutSubscription(ctx context.Context, s *Subscription) error
	DeleteSubscription(ctx context.Context, user, customer, kind string) error
	SubscriptionsByUser(ctx context.Context, user string) ([]Subscription, error)
	SubscriptionsByCustomer(ctx context.Context, customer string) ([]Subscription, error)
}

// AssignmentChange is one conditional change of a customer's assignment,
// made on facts the caller read and had policy judge: it applies only
// while the customer is still in From ("" when it was unassigned). To is
// the new assignment, of the same customer; nil removes the assignment.
// By and At are who removes it and when: the store keeps them with the
// assignment as removed (RemovedAssignment).
type AssignmentChange struct {
	Customer string
	From     string
	To       *Assignment
	By       string
	At       time.Time
	// Change is what a write a caller asked for is recorded as
	// (ChangePut, ChangeImport): the store keeps the assignment it writes
	// under it for AssignmentsChanged, in the same atomic step, unless the
	// write changes nothing. A removal with a By is kept as ChangeDelete.
	// "" keeps nothing: a write putting back what was.
	Change string
	// Via is the domain the writer signed in through, kept with the write.
	Via string
	// Undoes, on a change putting back what an earlier change of the same
	// caller replaced, is that change: the store forgets the write it
	// kept, in the same step, as one that no caller was answered.
	Undoes *AssignmentChange
	// MaxInDomain, when positive, bounds the customers To.Domain may hold
	// once the call's changes into it are applied: a call that would take
	// a domain past the bound of any of its changes writes nothing and
	// fails with ECONFLICT, reason ReasonTooManyAssignments. The count and
	// the write are one step, so calls racing for the last places cannot
	// together pass it. Zero bounds nothing (putting back what was).
	MaxInDomain int
}

// What an assignment write is recorded as (AssignmentChange.Change).
const (
	ChangePut    = "put"
	ChangeImport = "import"
	ChangeDelete = "delete"
)

// AssignmentWrite is an assignment as a change wrote it (Change ChangePut
// or ChangeImport) or removed it (ChangeDelete, RemovedAt and RemovedBy
// set), as AssignmentsChanged returns it.
type AssignmentWrite struct {
	Assignment
	Change string `json:"change"`
	Via    string `json:"via,omitempty"` // the domain its writer signed in through (AssignmentChange.Via)
}

// At is when the write was made: the removal's time, or the assignment's.
func (w *AssignmentWrite) At() time.Time {
	if w.Change == ChangeDelete {
		return w.RemovedAt
	}
	return w.UpdatedAt
}

// Kept is the write c makes as the store keeps it for AssignmentsChanged,
// given the assignment old it replaces (nil when unassigned); nil when it
// keeps none (see AssignmentChange.Change).
func (c *AssignmentChange) Kept(old *Assignment) *AssignmentWrite {
	switch {
	case c.To == nil && old != nil && c.By != "":
		a := *old
		a.RemovedAt, a.RemovedBy = c.At, c.By
		return &AssignmentWrite{Assignment: a, Change: ChangeDelete}
	case c.To == nil || c.Change == "" || old != nil && old.Same(c.To):
		return nil
	}
	return &AssignmentWrite{Assignment: *c.To, Change: c.Change, Via: c.Via}
}

// Same reports whether a and b are the same assignment as written.
func (a *Assignment) Same(b *Assignment) bool {
	return a.Customer == b.Customer && a.Reseller == b.Reseller && a.Domain == b.Domain && a.UpdatedBy == b.UpdatedBy &&
		a.UpdatedAt.Equal(b.UpdatedAt)
}

// ReasonTooManyAssignments is the reason of a change refused by its
// domain's MaxInDomain.
const ReasonTooManyAssignments = "too_many_assignments"

// TooManyAssignments refuses changes that would add more customers to
// domain, which holds held, than its bound allows.
func TooManyAssignments(domain string, held, adding, bound int) *Error {
	return &Error{Code: ECONFLICT, Reason: ReasonTooManyAssignments,
		Message: fmt.Sprintf("too_many_assignments: domain %s holds %d customers; %d more would pass max_domain_assignments (%d); nothing was written, remove assignments first",
			domain, held, adding, bound)}
}

// AssignmentStore keeps reseller domain assignments.
type AssignmentStore interface {
	GetAssignment(ctx context.Context, customer string) (*Assignment, error)
	// GetAssignments reads the customers' assignments, in order, in few
	// round trips: nil where a customer is unassigned.
	GetAssignments(ctx context.Context, customers []string) ([]*Assignment, error)
	// ChangeAssignments applies each change on its own, atomically for its
	// customer, and only while the customer's domain is still the change's
	// From; a change whose customer is elsewhere now is not applied and its
	// index is returned in conflicts, in order. A malformed change fails
	// the call (EINVALID) before anything is written. On a store failure
	// the changes not listed may or may not have been applied. This is
	// the write the lifecycle uses: what policy judged is what is replaced.
	ChangeAssignments(ctx context.Context, cs []AssignmentChange) (conflicts []int, err error)
	// PutAssignment assigns the customer, moving it out of any other
	// domain, whatever it is in now: for loading state, not for changes a
	// caller asks for (those are ChangeAssignments).
	PutAssignment(ctx context.Context, a *Assignment) error
	DeleteAssignment(ctx context.Context, customer string) error
	// PutAssignments is a bulk load; it stops at the first error and
	// returns how many were stored.
	PutAssignments(ctx context.Context, as []Assignment) (int, error)
	// AssignmentsByDomain lists a domain's assignments, ordered by customer.
	AssignmentsByDomain(ctx context.Context, domain string, p Page) ([]Assignment, string, error)
	// RemovedAssignment returns the customer's assignment as the last
	// change that removed it left it, with RemovedAt and RemovedBy set
	// (the change's At and By), kept in the same write for
	// AppendOnceWindow past RemovedAt; ENOTFOUND otherwise. A retried
	// removal finds there that its assignment was removed, when, and by
	// whom.
	RemovedAssignment(ctx context.Context, customer string) (*Assignment, error)
	// TakeAssignmentRows takes rows of the limit assignment rows a
	// reseller domain may write in a window, all or none, counted across
	// replicas as TakeConsentChange counts a customer's changes, in a
	// budget of its own. Over the limit it takes nothing and returns false
	// with how long until the window ends.
	TakeAssignmentRows(ctx context.Context, domain string, rows, limit int, window time.Duration) (wait time.Duration, ok bool, err error)
	// AssignmentsChanged returns the writes ChangeAssignments kept
	// (AssignmentChange.Change, AssignmentChange.Kept) made at a time
	// (AssignmentWrite.At) not before since, each for AppendOnceWindow
	// past it, earliest first. Each is kept in the same atomic step as
	// the write, and forgotten in the step of a change that Undoes it: a
	// write's records (the audit entry, the assignment.changed event) are
	// appended after it, and a process that stops, or loses the streams'
	// node, before they are leaves a change of which domain sees which
	// customer with no record; a sweep of any replica finds it there.
	AssignmentsChanged(ctx context.Context, since time.Time) ([]AssignmentWrite, error)
}

// EventLog is the events stream the host application's mailer consumes.
type EventLog interface {
	// AppendEvent assigns e.ID and appends e.
	AppendEvent(ctx context.Context, e *Event) error
	ReadEvents(ctx context.Context, f StreamFilter) ([]Event, string, error)
}

// AuditLog is the audit stream.
type AuditLog interface {
	// AppendAudit assigns a.ID and appends a.
	AppendAudit(ctx context.Context, a *AuditEntry) error
	ReadAudit(ctx context.Context, f StreamFilter) ([]AuditEntry, string, error)
}

// Invalidator carries narrowing changes between replicas: a key published
// on one reaches the subscribers on every replica (including itself).
// Invalidate itself is best effort; cache TTLs bound staleness if a message
// is lost. The stores' own narrowing writes wait for every replica (see
// the conventions above).
type Invalidator interface {
	Invalidate(ctx context.Context, keys ...string) error
	// Subscribe calls fn for every key published from now on, one call at
	// a time, until cancel is called. fn must not block.
	Subscribe(fn func(key string)) (cancel func())
}

// InvalidateAll is delivered to subscribers when invalidations may have
// been missed (the connection to the bus was lost and re-established):
// drop every cached entry. It also ends InvalidationsLost: invalidations
// are heard again from then on.
const InvalidateAll = "*"

// InvalidationsLost is delivered to subscribers when the replica stops
// hearing invalidations (its connection to the bus is down): a narrowing
// change made meanwhile on another replica does not reach its caches
// until InvalidateAll comes. A subscriber that joins while invalidations
// are not heard gets it at once. A cache of delegation state reads each
// hit again from the store until then, keeping a fresh entry only when
// that read fails as unavailable; other subscribers ignore it, as any key
// they do not cache.
const InvalidationsLost = "*lost"

// HearingLease is implemented by an Invalidator whose replica may stop
// hearing invalidations before it can tell (its process paused, or cut
// off, while the bus dropped its subscription): Hears reports whether
// this replica still holds its lease on the bus, which every narrowing
// write waits on. While it does not, a cache of delegation state reads
// each hit again, as after InvalidationsLost. It is called on every
// cache hit, so it must be cheap.
type HearingLease interface {
	Hears() bool
}

// Invalidation keys, one per cached lookup on the check path.
// AssignmentKey names the folded id (FoldID): the stores file variants of
// one id as one assignment, so a change under one spelling evicts what a
// lookup under another cached.
func SessionKey(tokenHash string) string   { return "session:" + tokenHash }
func ConsentKey(customer string) string    { return "consent:" + customer }
func CustomerKey(customer string) string   { return "customer:" + customer }
func GrantKey(customer string) string      { return "grant:" + customer }
func ShareKey(customer string) string      { return "share:" + customer }
func AssignmentKey(customer string) string { return "assign:" + FoldID(customer) }

// Store is all of Deputy's state, as both implementations provide it.
type Store interface {
	CustomerStore
	ConsentStore
	SessionStore
	PartnerStore
	ShareStore
	SubscriptionStore
	AssignmentStore
	EventLog
	AuditLog
	Invalidator
	// Ping reports whether the store is reachable, for /readyz.
	Ping(ctx context.Context) error
	Close() error
}
