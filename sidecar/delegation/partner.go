package delegation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// Defaults of the partner config section: mechanics only. The limits a
// request and a subscription must meet are policy data (PartnerRules).
const (
	DefaultMaxGrantUsers    = 100
	DefaultOnBehalfOfHeader = "x-on-behalf-of"
	DefaultSweepInterval    = time.Hour
)

// Subscription kinds a partner user may subscribe to.
const (
	SubscriptionNotifications = "notifications"
	SubscriptionDashboard     = "dashboard"
)

// PartnerConfig is the "partner" section of Deputy's configuration: the
// header naming the customer and bounds on work. Business rules (pending
// expiry, grant lengths, the subscription level, when a grant is announced
// as expiring, the path naming the customer) are policy data in
// policies/deputy/partner/data.json.
type PartnerConfig struct {
	MaxGrantUsers    int           `yaml:"max_grant_users" usage:"users one individual access request may name"`
	SweepInterval    time.Duration `yaml:"sweep_interval" usage:"how often expiring grants are looked for; access requests, decisions, revocations and shares whose audit entries or events are missing are looked for at this interval or every minute, whichever is shorter"`
	OnBehalfOfHeader string        `yaml:"on_behalf_of_header" usage:"request header naming the customer a partner acts for (a path under data.deputy.partner.customer_path_prefix naming another customer is refused); read in any case with _ as -, as CGI, PHP and WSGI upstreams read it"`
}

// PartnerDefaults returns the partner section with every default set.
func PartnerDefaults() PartnerConfig {
	var c PartnerConfig
	c.SetDefaults()
	return c
}

// WithDefaults returns c with every unset field at its default.
func (c PartnerConfig) WithDefaults() PartnerConfig {
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *PartnerConfig) SetDefaults() {
	if c.MaxGrantUsers == 0 {
		c.MaxGrantUsers = DefaultMaxGrantUsers
	}
	if c.OnBehalfOfHeader == "" {
		c.OnBehalfOfHeader = DefaultOnBehalfOfHeader
	}
	c.OnBehalfOfHeader = sidecar.HeaderName(c.OnBehalfOfHeader)
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
}

// Validate checks the section; errors name the field.
func (c PartnerConfig) Validate() error {
	switch {
	case c.MaxGrantUsers < 0:
		return sidecar.Invalid("partner.max_grant_users", "must not be negative")
	case c.SweepInterval < 0:
		return sidecar.Invalid("partner.sweep_interval", "must not be negative")
	case c.OnBehalfOfHeader != "":
		return sidecar.InvalidHeaderName("partner.on_behalf_of_header", c.OnBehalfOfHeader)
	}
	return nil
}

// PartnerState is the part of the store partner access needs.
type PartnerState interface {
	sidecar.PartnerStore
	sidecar.ShareStore
	sidecar.SubscriptionStore
	sidecar.CustomerStore
	sidecar.EventLog
	sidecar.AuditLog
	sidecar.Invalidator // to evict again on a retried revocation
}

// Partners owns the partner access lifecycle: requests, decisions, grants,
// revocation, shares for cc and subscriptions. Who may call what is the
// manage policy's, asked through the Authorize each method takes with the
// request or grant as stored. Partners checks the facts (ranges, request
// state) and, behind policy, that the caller is a party to what it
// changes.
type Partners struct {
	store   PartnerState
	cfg     PartnerConfig
	clock   sidecar.Clock
	newID   func() string
	logger  *slog.Logger
	rules   *RuleBook
	records *Recorder // appends the audit trail's records

	kept keptSweep // how far RecordAgain has got
}

// PartnerOption configures Partners.
type PartnerOption func(*Partners)

// WithPartnerClock sets the clock (default time.Now).
func WithPartnerClock(c sidecar.Clock) PartnerOption { return func(p *Partners) { p.clock = c } }

// WithPartnerIDs sets how request and grant ids are made (default: random).
func WithPartnerIDs(f func() string) PartnerOption { return func(p *Partners) { p.newID = f } }

// WithPartnerLogger sets the logger for audit failures (default slog.Default()).
func WithPartnerLogger(l *slog.Logger) PartnerOption { return func(p *Partners) { p.logger = l } }

// WithPartnerRecorder sets the recorder that appends audit entries (see
// WithImpersonationRecorder).
func WithPartnerRecorder(r *Recorder) PartnerOption { return func(p *Partners) { p.records = r } }

// NewPartners returns the partner lifecycle on store. data is the active
// policy data, where the partner limits live (data.deputy.partner).
func NewPartners(store PartnerState, data PolicyData, cfg PartnerConfig, opts ...PartnerOption) *Partners {
	p := &Partners{store: store, cfg: cfg.WithDefaults(), clock: time.Now, newID: newGrantID, logger: slog.Default(), rules: NewRuleBook(data)}
	for _, o := range opts {
		o(p)
	}
	if p.records == nil {
		p.records = NewRecorder(store, p.logger)
	}
	return p
}

// Config returns the effective configuration.
func (p *Partners) Config() PartnerConfig { return p.cfg }

// AccessRequestInput is what a partner user asks for.
type AccessRequestInput struct {
	Customer     string        `json:"customer"`
	ContactEmail string        `json:"contact_email"`
	ExpiryDays   int           `json:"expiry_days"`
	Level        sidecar.Level `json:"level"`
	Scope        string        `json:"scope"`
	Users        []string      `json:"users,omitempty"`
}

// Request stores a pending access request of caller's organisation, once
// policy lets caller ask for it, and tells the customer's contact manager.
func (p *Partners) Request(ctx context.Context, caller *sidecar.Identity, in AccessRequestInput, authorize Authorize) (*sidecar.AccessRequest, error) {
	target := map[string]any{"customer": in.Customer, "partner_org": orgOf(caller), "level": string(in.Level), "scope": in.Scope}
	lim, err := p.authorized("partner.request", target, authorize)
	if err != nil {
		return nil, err
	}
	r, err := p.checkRequest(ctx, caller, in, lim)
	if err != nil {
		return nil, err
	}
	if err := p.checkPending(ctx, r, lim); err != nil {
		return nil, err
	}
	if err := p.takeSelfService(ctx, r.PartnerOrg, lim); err != nil {
		return nil, err
	}
	if err := p.store.CreateRequest(ctx, r); err != nil {
		return nil, err
	}
	return r, p.requested(ctx, r)
}

// requested records the creation of r: the audit entry and the
// grant.requested event the customer's mailer asks the contact manager
// by. The records carry the request's id as their Once, so recording a
// request again (RecordAgain) appends nothing when the first got
// through. The event's append error is returned.
func (p *Partners) requested(ctx context.Context, r *sidecar.AccessRequest) error {
	once := "partner.request:" + r.ID
	p.auditOnce(ctx, r.CreatedAt, once, r.RequestedBy, "partner.request", r.Customer, r.ID, map[string]string{"level": string(r.Level), "scope": r.Scope, "partner_org": r.PartnerOrg})
	return p.eventOnce(ctx, r.CreatedAt, once, sidecar.EventGrantRequested, r.Customer, r.RequestedBy, map[string]string{
		"to":          r.ContactEmail,
		"request_id":  r.ID,
		"partner_org": r.PartnerOrg,
		"level":       string(r.Level),
		"scope":       r.Scope,
		"users":       strings.Join(r.Users, ","),
		"expiry_days": strconv.Itoa(r.ExpiryDays),
		"expires_at":  r.PendingExpiresAt.UTC().Format(time.RFC3339),
	})
}

// authorized asks the manage policy whether the caller may take action on
// target, and returns the partner limits the call is to apply: those of
// the activation whose manage rules decided (RuleBook.decided), never the
// limits of a revision loaded while it was asked.
func (p *Partners) authorized(action string, target map[string]any, authorize Authorize) (*PartnerRules, error) {
	data, err := p.rules.decided(func() error { return authorize(action, target) })
	if err != nil {
		return nil, err
	}
	return partnerOf(p.rules.parse(data))
}

func orgOf(id *sidecar.Identity) string {
	if id == nil {
		return ""
	}
	return id.Org
}

// checkRequest validates input for caller under lim and returns the
// request it would create. Users named for individual scope must be the caller or
// have a profile (set by the host application) whose org is the caller's
// organisation.
func (p *Partners) checkRequest(ctx context.Context, caller *sidecar.Identity, in AccessRequestInput, lim *PartnerRules) (*sidecar.AccessRequest, error) {
	if caller == nil || caller.Org == "" {
		return nil, sidecar.Errorf(sidecar.EFORBIDDEN, "no_partner_org")
	}
	if err := ValidRef("customer", in.Customer); err != nil {
		return nil, err
	}
	if in.Customer == caller.Org {
		return nil, sidecar.Invalid("customer", "cannot request access to your own organisation")
	}
	if in.ContactEmail == "" {
		return nil, sidecar.Invalid("contact_email", "required")
	}
	if a, err := mail.ParseAddress(in.ContactEmail); err != nil || a.Address != in.ContactEmail {
		return nil, sidecar.Invalid("contact_email", "not a plain email address")
	}
	// net/mail admits any non-ASCII rune in an address (RFC 6532), C1
	// controls and bidi overrides too; the address reaches events the
	// mailer sends and lists both sides read.
	if strings.ContainsFunc(in.ContactEmail, sidecar.IsControl) {
		return nil, sidecar.Invalid("contact_email", "contains control characters")
	}
	if in.ExpiryDays < lim.MinGrantDays || in.ExpiryDays > lim.MaxGrantDays {
		return nil, sidecar.Invalid("expiry_days", "must be between %d and %d", lim.MinGrantDays, lim.MaxGrantDays)
	}
	if !in.Level.Valid() {
		return nil, sidecar.Invalid("level", "must be one of %s", levelNames())
	}
	users := slices.Clone(in.Users)
	switch in.Scope {
	case sidecar.ScopeOrganisation:
		if len(users) > 0 {
			return nil, sidecar.Invalid("users", "must be empty for organisation scope")
		}
	case sidecar.ScopeIndividual:
		if len(users) == 0 {
			return nil, sidecar.Invalid("users", "individual scope needs at least one user")
		}
		if len(users) > p.cfg.MaxGrantUsers {
			return nil, sidecar.Invalid("users", "at most %d users", p.cfg.MaxGrantUsers)
		}
		slices.Sort(users)
		users = slices.Compact(users)
		for _, u := range users {
			if err := ValidRef("users", u); err != nil {
				return nil, err
			}
			if err := p.checkMember(ctx, caller, u); err != nil {
				return nil, err
			}
		}
	default:
		return nil, sidecar.Invalid("scope", "must be %q or %q", sidecar.ScopeOrganisation, sidecar.ScopeIndividual)
	}
	now := p.clock()
	return &sidecar.AccessRequest{
		ID:               p.newID(),
		PartnerOrg:       caller.Org,
		RequestedBy:      caller.Subject,
		Customer:         in.Customer,
		ContactEmail:     in.ContactEmail,
		Level:            in.Level,
		ExpiryDays:       in.ExpiryDays,
		Scope:            in.Scope,
		Users:            users,
		Status:           sidecar.RequestPending,
		CreatedAt:        now,
		PendingExpiresAt: now.Add(grantDays(lim.PendingExpiryDays)),
	}, nil
}

// checkPending refuses r once its partner organisation has as many
// requests waiting as lim allows, in all or at r's customer. The
// count is read before the request is stored, so requests racing each
// other may pass it together: the per-caller write budget of the API
// bounds by how many.
func (p *Partners) checkPending(ctx context.Context, r *sidecar.AccessRequest, lim *PartnerRules) error {
	for _, c := range []struct {
		customer string
		max      int
		where    string
	}{
		{r.Customer, lim.MaxPendingPerCustomer, " at " + r.Customer},
		{"", lim.MaxPendingPerOrg, ""},
	} {
		n, err := p.countPending(ctx, r.PartnerOrg, c.customer, c.max)
		if err != nil {
			return err
		}
		if n >= c.max {
			return sidecar.Errorf(sidecar.ECONFLICT, "too_many_pending_requests: %s has %d access requests waiting%s, the most allowed; wait until one is decided or expires", r.PartnerOrg, n, c.where)
		}
	}
	return nil
}

// countPending counts the pending requests of partnerOrg (at customer,
// when set), stopping at max.
func (p *Partners) countPending(ctx context.Context, partnerOrg, customer string, max int) (int, error) {
	f := sidecar.RequestFilter{PartnerOrg: partnerOrg, Customer: customer, Status: sidecar.RequestPending}
	n := 0
	for {
		f.Limit = max - n
		rs, next, err := p.store.ListRequests(ctx, f)
		if err != nil {
			return 0, err
		}
		n += len(rs)
		if n >= max || next == "" {
			return n, nil
		}
		f.Cursor = next
	}
}

// checkMember lets caller name user for an individual grant when user is
// the caller or has a profile of the caller's organisation. Every other
// user gets the same answer, whether or not a profile exists: a partner
// must not learn who is a customer by naming ids.
func (p *Partners) checkMember(ctx context.Context, caller *sidecar.Identity, user string) error {
	if user == caller.Subject {
		return nil
	}
	prof, err := p.store.GetCustomer(ctx, user)
	switch {
	case err == nil && prof.Org == caller.Org:
		return nil
	case err == nil, sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		return sidecar.Invalid("users", "%s is not a known member of %s", user, caller.Org)
	}
	return err
}

// GetRequest returns a request with its status as of now, once policy
// lets caller see it.
func (p *Partners) GetRequest(ctx context.Context, caller *sidecar.Identity, id string, authorize Authorize) (*sidecar.AccessRequest, error) {
	r, err := p.store.GetRequest(ctx, id)
	if err != nil {
		return nil, unknown(err, whatRequest)
	}
	if err := authorize("partner.list_requests", requestTarget(r)); err != nil {
		return nil, unseen(err, whatRequest)
	}
	r.Status = r.StatusAt(p.clock())
	return r, nil
}

// requestTarget is what policy judges an action on a request by: the
// parties as the request stored them, and the level and scope it asks
// for (a revision's manage rules may grant a level no longer).
func requestTarget(r *sidecar.AccessRequest) map[string]any {
	return map[string]any{"customer": r.Customer, "partner_org": r.PartnerOrg, "request_id": r.ID, "level": string(r.Level), "scope": r.Scope}
}

// ListRequests lists requests with their status as of now, once policy
// lets caller list those of f's customer or partner organisation.
func (p *Partners) ListRequests(ctx context.Context, caller *sidecar.Identity, f sidecar.RequestFilter, authorize Authorize) ([]sidecar.AccessRequest, string, error) {
	target := map[string]any{}
	if f.Customer != "" {
		target["customer"] = f.Customer
	}
	if f.Customer == "" || f.PartnerOrg != "" {
		target["partner_org"] = f.PartnerOrg
	}
	if err := authorize("partner.list_requests", target); err != nil {
		return nil, "", err
	}
	rs, next, err := p.store.ListRequests(ctx, f)
	now := p.clock()
	for i := range rs {
		rs[i].Status = rs[i].StatusAt(now)
	}
	return rs, next, err
}

// Approve makes the request's grants live: one for the partner
// organisation, or one per named user. A grant for the same partner,
// customer and user is replaced with the new level and expiry.
//
// The decision is stored first, then the grants: a fault in between
// leaves an approved request without grants (access narrower than
// decided, never wider), and the request marked GrantsPending. The same
// approval retried then stores the grants the decision named, as of the
// decision, and completes it. So does an approval sent while another is
// still storing them (two contact managers, a double click): every grant
// is made from the request as stored, under the id its request and user
// make (grantID), so any number of approvals and retries write the same
// grants and answer the same ids, and the store records the approval
// (RecordApproval) for one of them only: one audit record and one
// grant.approved event per approval.
//
// Decisions on the same access are ordered by their Seq, which the store
// takes: a user's grant is not stored when a later approval or a
// revocation of that user's access was recorded meanwhile, whichever
// write comes last, so a slow or retried approval never undoes either.
// The approval still completes for its other users; when none is left it
// answers ECONFLICT grant_superseded.
func (p *Partners) Approve(ctx context.Context, caller *sidecar.Identity, id string, authorize Authorize) (*sidecar.AccessRequest, []sidecar.Grant, error) {
	r, err := p.decide(ctx, caller, id, sidecar.RequestApproved, "partner.approve", authorize)
	if r != nil && sidecar.ErrorCode(err) == sidecar.ECONFLICT && r.Status == sidecar.RequestApproved {
		if r.GrantsPending {
			err = nil // completing an approval cut part-way, or still under way
		} else if aerr := p.announceAgain(ctx, r); aerr != nil {
			return nil, nil, aerr
		}
	}
	if err != nil {
		return nil, nil, err
	}
	users := grantUsers(r)
	grants := make([]sidecar.Grant, 0, len(users))
	issued := make([]string, 0, len(users))
	closed := false
	for _, u := range users {
		g := grantOfRequest(r, u)
		err := p.store.PutGrant(ctx, &g)
		if sidecar.ErrorReason(err) == sidecar.ReasonGrantSuperseded {
			continue // a later decision on this user's access stands
		}
		if sidecar.ErrorCode(err) == sidecar.ECONFLICT {
			// Closed meanwhile: completed by another approval of the
			// request, or one of its grants was revoked (what is revoked
			// stays revoked).
			closed = true
			break
		}
		if err != nil {
			return nil, nil, err
		}
		grants = append(grants, g)
		issued = append(issued, u)
	}
	// Recorded before the approval is closed: a fault after it leaves
	// the request to a retry, which completes it without recording it
	// twice. A retry recording it again within the store's Once window
	// appends nothing if the first got through, and records it if the
	// first lost its reply (RecordApproval may have marked the request
	// recorded before the records were appended); later, the mark alone
	// keeps it to one.
	announced, err := p.recordApproval(ctx, caller, r, issued)
	if err != nil {
		return nil, nil, err
	}
	// Closed or not, finish closing: a closing cut part-way leaves the
	// request marked GrantsPending.
	if err := p.store.GrantsIssued(ctx, r.ID); err != nil {
		return nil, nil, err
	}
	r.GrantsPending, r.ApprovalRecorded = false, true
	if closed {
		// This call stored some of the grants or none: answer those of
		// the request that are live, as the approval that completed it
		// does; or, when later decisions hold every user's access, as it
		// did.
		var later bool
		if grants, later, err = p.liveGrantsOf(ctx, r); err != nil {
			return nil, nil, err
		}
		if len(grants) == 0 && !later {
			return nil, nil, sidecar.Errorf(sidecar.ECONFLICT, "request_grants_closed")
		}
	}
	if len(grants) == 0 {
		return nil, nil, sidecar.Superseded()
	}
	return r, grants, announced
}

// announceAgain records once more the approval of r, completed: the
// approval that completed it may have answered the fault of its event's
// append (with its grants live and the request closed), and its retry
// lands here, answered that the request is approved. Within
// sidecar.AppendOnceWindow of the decision the store still knows whether
// the records got through, and appends them only if not, with the grants
// of the request that are live, as the contact manager who decided it;
// later it would append them twice, so an approval that old is left as it
// is. The event's append error is returned, so the retry answers the
// fault again rather than that all is done.
func (p *Partners) announceAgain(ctx context.Context, r *sidecar.AccessRequest) error {
	if p.clock().Sub(r.DecidedAt) >= sidecar.AppendOnceWindow {
		return nil
	}
	users, err := p.liveUsersOf(ctx, r)
	if err != nil {
		return err
	}
	return p.record(ctx, &sidecar.Identity{Subject: r.DecidedBy}, r, users)
}

// recordApproval records r's approval, completed by caller, with the
// grants issued to users, unless the store marked it recorded more than
// sidecar.AppendOnceWindow after its decision. It returns the event's
// append error apart from the store's.
func (p *Partners) recordApproval(ctx context.Context, caller *sidecar.Identity, r *sidecar.AccessRequest, users []string) (announced, err error) {
	first, err := p.store.RecordApproval(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if first || p.clock().Sub(r.DecidedAt) < sidecar.AppendOnceWindow {
		announced = p.record(ctx, caller, r, users)
	}
	return announced, nil
}

// record writes the audit record of r's approval, completed by caller,
// and announces the grants issued to users, if any. The records carry the
// request's id as their Once: an approval recorded again appends nothing
// when the first got through.
func (p *Partners) record(ctx context.Context, caller *sidecar.Identity, r *sidecar.AccessRequest, users []string) error {
	once, at := "partner.approve:"+r.ID, p.clock()
	p.auditOnce(ctx, at, once, r.DecidedBy, "partner.approve", r.Customer, r.ID, map[string]string{"level": string(r.Level), "partner_org": r.PartnerOrg, "completed_by": completedBy(caller, r)})
	if len(users) == 0 {
		return nil
	}
	return p.eventOnce(ctx, at, once, sidecar.EventGrantApproved, r.Customer, r.DecidedBy, map[string]string{
		"request_id":   r.ID,
		"partner_org":  r.PartnerOrg,
		"requested_by": r.RequestedBy,
		"level":        string(r.Level),
		"scope":        r.Scope,
		"users":        strings.Join(users, ","),
		"expires_at":   grantOfRequest(r, "").ExpiresAt.UTC().Format(time.RFC3339),
	})
}

// completedBy names caller when caller completes an approval someone else
// decided, and is "" otherwise.
func completedBy(caller *sidecar.Identity, r *sidecar.AccessRequest) string {
	if caller.Subject == r.DecidedBy {
		return ""
	}
	return caller.Subject
}

// grantUsers lists the users an approval of r issues grants to: "" for
// the partner organisation.
func grantUsers(r *sidecar.AccessRequest) []string {
	if r.Scope == sidecar.ScopeOrganisation {
		return []string{""}
	}
	return r.Users
}

// grantOfRequest is the grant the approval of r issues to user: made only
// of the request as stored, so every approval and retry of r makes the
// same grant.
func grantOfRequest(r *sidecar.AccessRequest, user string) sidecar.Grant {
	return sidecar.Grant{
		ID:         grantID(r.ID, user),
		Customer:   r.Customer,
		PartnerOrg: r.PartnerOrg,
		User:       user,
		Level:      r.Level,
		ExpiresAt:  r.DecidedAt.Add(grantDays(r.ExpiryDays)),
		ApprovedBy: r.DecidedBy,
		ApprovedAt: r.DecidedAt,
		RequestID:  r.ID,
		Seq:        r.Seq,
	}
}

// grantID is the id of the grant request issues to user: the request's
// id, a dot, and 128 bits of a hash of both. A revocation naming it finds
// the request again (requestOfGrant), and through it the user.
func grantID(request, user string) string {
	sum := sha256.Sum256([]byte(request + "\x00" + user))
	return request + "." + hex.EncodeToString(sum[:16])
}

// requestOfGrant returns the request and user a grant id was made from
// (grantID), when it is one of the customer's approved requests' ids;
// nil otherwise: ids of requests not approved, ids made before grant ids
// were derived, or made up.
func (p *Partners) requestOfGrant(ctx context.Context, customer, id string) (*sidecar.AccessRequest, string, error) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 {
		return nil, "", nil
	}
	r, err := p.store.GetRequest(ctx, id[:i])
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if r.Customer != customer || r.Status != sidecar.RequestApproved {
		return nil, "", nil
	}
	for _, u := range grantUsers(r) {
		if grantID(r.ID, u) == id {
			return r, u, nil
		}
	}
	return nil, "", nil
}

// liveGrantsOf returns the live grants stored for r's users that r
// issued, and whether every user's access is held by a grant of a later
// approval instead.
func (p *Partners) liveGrantsOf(ctx context.Context, r *sidecar.AccessRequest) ([]sidecar.Grant, bool, error) {
	var out []sidecar.Grant
	later := true
	for _, u := range grantUsers(r) {
		g, err := p.grantOf(ctx, r.Customer, r.PartnerOrg, u)
		if err != nil {
			return nil, false, err
		}
		switch {
		case g != nil && g.RequestID == r.ID:
			out = append(out, *g)
			later = false
		case g == nil || g.Seq <= r.Seq:
			later = false
		}
	}
	return out, later, nil
}

// liveUsersOf lists the users of r's live grants (liveGrantsOf), "" for
// the organisation's, as an approval's records name them.
func (p *Partners) liveUsersOf(ctx context.Context, r *sidecar.AccessRequest) ([]string, error) {
	live, _, err := p.liveGrantsOf(ctx, r)
	if err != nil {
		return nil, err
	}
	users := make([]string, len(live))
	for i, g := range live {
		users[i] = g.User
	}
	return users, nil
}

// issuedUsersOf lists the users of the grants r issued, "" for the
// organisation's: those live (liveUsersOf) and those revoked since, which
// the store keeps (RevokedGrant). An approval recorded after its grants
// were revoked still names whom it let in; the revocation is recorded
// after it.
func (p *Partners) issuedUsersOf(ctx context.Context, r *sidecar.AccessRequest) ([]string, error) {
	live, err := p.liveUsersOf(ctx, r)
	if err != nil {
		return nil, err
	}
	var users []string
	for _, u := range grantUsers(r) {
		if !slices.Contains(live, u) {
			_, err := p.store.RevokedGrant(ctx, r.Customer, grantID(r.ID, u))
			if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
				continue
			}
			if err != nil {
				return nil, err
			}
		}
		users = append(users, u)
	}
	return users, nil
}

// grantOf returns the live grant stored for user of partnerOrg (user ""
// the organisation's), or nil.
func (p *Partners) grantOf(ctx context.Context, customer, partnerOrg, user string) (*sidecar.Grant, error) {
	e, err := p.store.EffectiveGrants(ctx, customer, partnerOrg, user)
	if err != nil {
		return nil, err
	}
	if user != "" {
		return e.Individual, nil
	}
	return e.Organisation, nil
}

// Reject closes the request without a grant.
//
// The manager who rejected a request and rejects it again within
// sidecar.AppendOnceWindow of the decision is answered as the first time,
// and the rejection is recorded again: the first may have lost the store's
// reply, answered an error and recorded nothing. The records carry the
// request's id as their Once, so a rejection whose records got through is
// not recorded twice. Anyone else, or later, is told the request was
// rejected already.
func (p *Partners) Reject(ctx context.Context, caller *sidecar.Identity, id string, authorize Authorize) (*sidecar.AccessRequest, error) {
	r, err := p.decide(ctx, caller, id, sidecar.RequestRejected, "partner.reject", authorize)
	if r != nil && sidecar.ErrorCode(err) == sidecar.ECONFLICT && r.Status == sidecar.RequestRejected &&
		r.DecidedBy == caller.Subject && sidecar.RecordableAgain(r.DecidedAt, p.clock()) {
		err = spend(ctx) // a retry of this manager's rejection: nothing to narrow (see writeBudgetKey)
	}
	if err != nil {
		return nil, err
	}
	return r, p.rejected(ctx, r)
}

// rejected records the rejection of r. The records carry the request's id
// as their Once, so recording a rejection again (Reject retried,
// RecordAgain) appends nothing when the first got through. The event's
// append error is returned.
func (p *Partners) rejected(ctx context.Context, r *sidecar.AccessRequest) error {
	once := "partner.reject:" + r.ID
	p.auditOnce(ctx, r.DecidedAt, once, r.DecidedBy, "partner.reject", r.Customer, r.ID, map[string]string{"partner_org": r.PartnerOrg})
	return p.eventOnce(ctx, r.DecidedAt, once, sidecar.EventGrantRejected, r.Customer, r.DecidedBy, map[string]string{
		"request_id":   r.ID,
		"partner_org":  r.PartnerOrg,
		"requested_by": r.RequestedBy,
	})
}

// decide records caller's decision on a pending request once policy lets
// caller take it (action). A request decided already comes back as stored
// with an ECONFLICT error, so that Approve can complete an approval cut
// off part-way; a refusal comes back with no request.
//
// An approval must also be one the partner limits of the revision whose
// manage rules authorized it allow (grantAllowed): the request was
// checked against the limits serving when it was made, and a revision
// since may have shortened the grants anyone may hold. Completing an
// approval decided already checks nothing again: its grants are the ones
// that decision allowed, made of the request as stored.
func (p *Partners) decide(ctx context.Context, caller *sidecar.Identity, id, status, action string, authorize Authorize) (*sidecar.AccessRequest, error) {
	r, err := p.store.GetRequest(ctx, id)
	if err != nil {
		return nil, unknown(err, whatRequest)
	}
	lim, err := p.authorized(action, requestTarget(r), authorize)
	if err != nil {
		return nil, unseen(err, whatRequest)
	}
	if err := party(caller, r.Customer, r.PartnerOrg, whatRequest); err != nil {
		return nil, err
	}
	if caller.Org != r.Customer {
		return nil, sidecar.Errorf(sidecar.EFORBIDDEN, "not_contact_manager")
	}
	now := p.clock()
	if st := r.StatusAt(now); st != sidecar.RequestPending {
		return r, decidedError(st)
	}
	if status == sidecar.RequestApproved {
		if err := grantAllowed(r, lim); err != nil {
			return nil, err
		}
	}
	d, err := p.store.DecideRequest(ctx, id, status, caller.Subject, now)
	if sidecar.ErrorCode(err) == sidecar.ECONFLICT {
		// Lost a race with another decision or the pending expiry.
		if cur, gerr := p.store.GetRequest(ctx, id); gerr == nil {
			return cur, decidedError(cur.StatusAt(now))
		}
		return nil, err
	}
	return d, err
}

// grantAllowed refuses approving r when lim no longer allows the grant
// length it asks for. The request cannot be changed, only rejected, and
// asked for again within the limits.
func grantAllowed(r *sidecar.AccessRequest, lim *PartnerRules) error {
	const refused, then = "grant_days_not_allowed: the request asks for %d days, ", "; reject it, and the partner may ask again"
	switch {
	case r.ExpiryDays > lim.MaxGrantDays:
		return sidecar.Errorf(sidecar.EFORBIDDEN, refused+"past max_grant_days (%d)"+then, r.ExpiryDays, lim.MaxGrantDays)
	case r.ExpiryDays < lim.MinGrantDays:
		return sidecar.Errorf(sidecar.EFORBIDDEN, refused+"short of min_grant_days (%d)"+then, r.ExpiryDays, lim.MinGrantDays)
	}
	return nil
}

func decidedError(status string) error {
	if status == sidecar.RequestExpired {
		return sidecar.Errorf(sidecar.ECONFLICT, "request_expired")
	}
	return sidecar.Errorf(sidecar.ECONFLICT, "request_already_%s", status)
}

// Revoke ends a grant at once, from either side: the customer or the
// partner organisation. The store publishes the eviction to every replica.
//
// Revoking is idempotent for the grant's parties: a grant they revoked
// already (kept by the store until it would have expired), or that ends
// between the lookup and the revocation, is no error. Revoke then returns
// nil, audits and announces nothing, and publishes the eviction again: the
// caller may be retrying a revocation whose write reached the store while
// its answer, and the eviction after it, were lost, and replicas that
// cached the grant would otherwise honour it until their cache TTL.
//
// An id that is not stored, but that an approval of one of the customer's
// requests answers (grantID), revokes the live grant that request issued
// to the same user, whatever its id: it is a no-op only when nothing of
// that request is live for the user. Every approval of a request answers
// the grant ids the request makes, and a grant stored before ids were made
// so may have been written again under another by a retried approval.
//
// A grant that another grant of the same access replaced (asking again,
// once approved, replaces the earlier grant), before or during the
// revocation, is refused with ECONFLICT grant_replaced naming the grant
// live instead, with nothing changed or recorded: success would tell the
// caller the access is gone while the user holds it (see replaced).
//
// An id never issued (or expired), and any grant to a caller who is no
// party to it, answer alike ENOTFOUND, with nothing changed or published:
// no one learns which grants exist, nor makes every replica drop its cache.
func (p *Partners) Revoke(ctx context.Context, caller *sidecar.Identity, customer, id string, authorize Authorize) (*sidecar.Grant, error) {
	g, err := p.store.GetGrant(ctx, customer, id)
	gone := sidecar.ErrorCode(err) == sidecar.ENOTFOUND
	if gone {
		g, err = p.store.RevokedGrant(ctx, customer, id)
	}
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		if g, err = p.issuedUnder(ctx, customer, id); err == nil {
			gone = false // revoked below, if live under another id
		}
	}
	if err != nil {
		return nil, unknown(err, whatGrant)
	}
	if err := authorize("partner.revoke", map[string]any{"customer": g.Customer, "partner_org": g.PartnerOrg, "user": g.User, "grant_id": g.ID}); err != nil {
		return nil, unseen(err, whatGrant)
	}
	if err := party(caller, g.Customer, g.PartnerOrg, whatGrant); err != nil {
		return nil, err
	}
	if gone {
		if err := spend(ctx); err != nil { // nothing to narrow: see writeBudgetKey
			return nil, err
		}
		p.recordRevokeAgain(ctx, caller, g)
		return nil, evictAgain(ctx, p.store, sidecar.GrantKey(customer))
	}
	// An approval still completing must not issue this grant again after
	// it is revoked: close it first (a fault here leaves the grant as it
	// was, and the retry revokes it).
	if g.RequestID != "" {
		if err := p.closeApproval(ctx, g.RequestID); err != nil {
			return nil, err
		}
	}
	revoked, err := p.store.RevokeGrant(ctx, customer, id, caller.Subject, caller.Org)
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND && g.RequestID != "" {
		// The request's grant for the user may be stored under another
		// id. Closed, the request can store no more: revoking what it
		// stored is final.
		revoked, err = p.revokeReissued(ctx, caller, g)
	}
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		// Revoked, expired or replaced meanwhile, or an approval closed
		// above before it stored the grant. A revocation found is
		// recorded again: it may be this call's, its script run and its
		// reply lost, the client's retry finding nothing left to revoke.
		if err := spend(ctx); err != nil { // see writeBudgetKey
			return nil, err
		}
		if err := p.replaced(ctx, caller, g); err != nil {
			return nil, err
		}
		return nil, evictAgain(ctx, p.store, sidecar.GrantKey(customer))
	}
	// Unpublished: the grant is revoked but replicas were not told. It is
	// recorded as done, and the 503 makes the caller retry, which
	// publishes again.
	unpublished := err
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, err
	}
	g = revoked
	if err := p.revoked(ctx, caller.Subject, caller.Org, g, p.clock()); err != nil {
		return g, err
	}
	return g, unpublished
}

// reasonGrantReplaced is the reason of the ECONFLICT answering the
// revocation of a grant that another grant of the same access replaced.
const reasonGrantReplaced = "grant_replaced"

// replaced refuses the revocation of g, which found nothing of g left to
// revoke, when another grant holds the same access (a later approval
// replaced g): answered success, it would tell the caller that access is
// gone while the user holds it. It names that grant, for the caller to
// revoke it by its id. g revoked meanwhile (the store kept it), or
// nothing live for the same access, is no error: what the revocation
// asks holds, and a retry of one that revoked g answers as it did. g
// found revoked is recorded again (recordRevokeAgain), as the revoker's.
func (p *Partners) replaced(ctx context.Context, caller *sidecar.Identity, g *sidecar.Grant) error {
	revoked, err := p.store.RevokedGrant(ctx, g.Customer, g.ID)
	if err == nil {
		p.recordRevokeAgain(ctx, caller, revoked)
		return nil
	}
	if sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		return err
	}
	cur, err := p.grantOf(ctx, g.Customer, g.PartnerOrg, g.User)
	if err != nil || cur == nil || cur.ID == g.ID {
		return err
	}
	holder := "organisation " + g.PartnerOrg
	if g.User != "" {
		holder = "user " + g.User
	}
	return &sidecar.Error{Code: sidecar.ECONFLICT, Reason: reasonGrantReplaced, Message: fmt.Sprintf(
		"%s: grant %s is no longer live; the access of %s at %s is grant %s (level %s, until %s): revoke that grant to end it",
		reasonGrantReplaced, g.ID, holder, g.Customer, cur.ID, cur.Level, cur.ExpiresAt.UTC().Format(time.RFC3339))}
}

// revoked records the revocation of g by subject by of organisation
// byOrg at at. The records carry the grant's id as their Once, so
// recording a revocation again (recordRevokeAgain) appends nothing when
// the first got through. The event's append is the caller's to retry: its
// error is returned.
func (p *Partners) revoked(ctx context.Context, by, byOrg string, g *sidecar.Grant, at time.Time) error {
	once := "partner.revoke:" + g.ID
	p.auditOnce(ctx, at, once, by, "partner.revoke", g.Customer, g.ID, map[string]string{"partner_org": g.PartnerOrg, "user": g.User, "level": string(g.Level)})
	return p.eventOnce(ctx, at, once, sidecar.EventGrantRevoked, g.Customer, by, map[string]string{
		"grant_id":    g.ID,
		"partner_org": g.PartnerOrg,
		"user":        g.User,
		"level":       string(g.Level),
		"revoked_by":  byOrg,
	})
}

// recordRevokeAgain records once more the revocation of g, found revoked:
// the Revoke that revoked it may have lost the store's reply and answered
// an error before recording it, and a retry by either party lands here.
// The revocation is recorded as the revoker's, whom the store kept with
// the grant; a grant revoked by a release that kept no revoker (during a
// rolling upgrade) is recorded as the retrying caller's, a party to it,
// rather than not at all. Within
// sidecar.AppendOnceWindow of the revocation the store still knows whether
// the records got through, and appends them only if not; later it would
// append them twice, so a revocation that old is left as it is. An event
// that fails to append here is logged: the eviction is what this answers.
func (p *Partners) recordRevokeAgain(ctx context.Context, caller *sidecar.Identity, g *sidecar.Grant) {
	if g.RevokedAt.IsZero() || p.clock().Sub(g.RevokedAt) >= sidecar.AppendOnceWindow {
		return
	}
	by, byOrg := g.RevokedBy, g.RevokedByOrg
	if by == "" {
		by, byOrg = caller.Subject, caller.Org
	}
	if err := p.revoked(ctx, by, byOrg, g, g.RevokedAt); err != nil {
		p.logger.Error("grant.revoked event of a retried revocation not appended", "customer", g.Customer, "grant", g.ID, "error", err)
	}
}

// closeApproval closes request id so that no approval issues its grants
// again. An approval cut off before it was closed may have lost the reply
// of RecordApproval with nothing recorded, and once closed its retries
// answer ECONFLICT: it is recorded here first, with the grants of the
// request that are live, appended only if the first never got through,
// and as completed by the contact manager who decided it (not by whoever
// revokes). The event's append error is logged: the revocation is what
// this serves.
func (p *Partners) closeApproval(ctx context.Context, id string) error {
	r, err := p.store.GetRequest(ctx, id)
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		return nil
	}
	if err != nil {
		return err
	}
	if r.Status == sidecar.RequestApproved && r.GrantsPending {
		users, err := p.liveUsersOf(ctx, r)
		if err != nil {
			return err
		}
		announced, err := p.recordApproval(ctx, &sidecar.Identity{Subject: r.DecidedBy}, r, users)
		if err != nil {
			return err
		}
		if announced != nil {
			p.logger.Error("grant.approved event of an approval closed by a revocation not appended", "customer", r.Customer, "request", r.ID, "error", announced)
		}
	}
	if err := p.store.GrantsIssued(ctx, id); err != nil && sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
		return err
	}
	return nil
}

// issuedUnder returns the grant one of customer's requests issues under
// id (grantID), stored or not; ENOTFOUND when id is no such id.
func (p *Partners) issuedUnder(ctx context.Context, customer, id string) (*sidecar.Grant, error) {
	r, user, err := p.requestOfGrant(ctx, customer, id)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, notFound(whatGrant)
	}
	issued := grantOfRequest(r, user)
	return &issued, nil
}

// revokeReissued revokes for caller the live grant g's request issued to
// g's user, whatever its id; ENOTFOUND when there is none.
func (p *Partners) revokeReissued(ctx context.Context, caller *sidecar.Identity, g *sidecar.Grant) (*sidecar.Grant, error) {
	cur, err := p.grantOf(ctx, g.Customer, g.PartnerOrg, g.User)
	if err != nil {
		return nil, err
	}
	if cur == nil || cur.RequestID != g.RequestID {
		return nil, sidecar.Errorf(sidecar.ENOTFOUND, "grant not found")
	}
	return p.store.RevokeGrant(ctx, g.Customer, cur.ID, caller.Subject, caller.Org)
}

// takeSelfService holds what org does for itself that widens access (an
// access request, a share) to the budget lim sets, across
// replicas: each writes the self-service audit stream, which trims its
// oldest records, and any organisation's account can repeat it. What
// narrows (a rejection, a revocation, a share withdrawn) is never refused
// and needs a counted change before it, so it counts nothing; an approval
// decides a counted request.
func (p *Partners) takeSelfService(ctx context.Context, org string, lim *PartnerRules) error {
	wait, ok, err := p.store.TakeSelfServiceChange(ctx, org, lim.MaxSelfServiceChanges, lim.SelfServiceChangeWindow)
	if err != nil {
		return err
	}
	if !ok {
		return sidecar.RateLimited(wait, "organisation made %d access requests and shares in %s; withdrawing and revoking are always allowed",
			lim.MaxSelfServiceChanges, lim.SelfServiceChangeWindow)
	}
	return nil
}

// party refuses a caller that is neither side of a request or grant, as
// if what it names did not exist (see unseen).
func party(caller *sidecar.Identity, customer, partnerOrg, what string) error {
	if caller == nil || caller.Org == "" || (caller.Org != customer && caller.Org != partnerOrg) {
		return notFound(what)
	}
	return nil
}

// What a record is called in the answer to an id that names none.
const (
	whatRequest = "access request"
	whatGrant   = "grant"
	whatSession = "session"
)

// ReasonNotParty is the manage policy's reason for refusing a caller who
// is no party to the stored record an action names (a request, a grant, a
// session), and may not see it otherwise.
const ReasonNotParty = "not_party"

// unseen answers a refusal for want of being a party exactly as an
// unknown id is answered (unknown): a 403 would tell the caller that the
// id exists. Other refusals, to callers who may see the record, stand.
func unseen(err error, what string) error {
	if sidecar.ErrorCode(err) == sidecar.EFORBIDDEN && sidecar.ErrorMessage(err) == ReasonNotParty {
		return notFound(what)
	}
	return err
}

// unknown answers a store's ENOTFOUND in the words unseen uses, whatever
// the store's own.
func unknown(err error, what string) error {
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		return notFound(what)
	}
	return err
}

func notFound(what string) error { return sidecar.Errorf(sidecar.ENOTFOUND, "%s not found", what) }

// CustomerAccess is one line of "My Customers": the grant that applies to
// the caller for a customer after precedence.
type CustomerAccess struct {
	Customer  string        `json:"customer"`
	Level     sidecar.Level `json:"level"`
	Scope     string        `json:"scope"`
	ExpiresAt time.Time     `json:"expires_at"`
	GrantID   string        `json:"grant_id"`
}

// MyCustomers lists the customers caller may act for, sorted by customer,
// each with the grant that wins: the caller's own grant, even when lower,
// else the organisation's.
func (p *Partners) MyCustomers(ctx context.Context, caller *sidecar.Identity, authorize Authorize) ([]CustomerAccess, error) {
	if err := authorize("partner.list_customers", map[string]any{"partner_org": orgOf(caller)}); err != nil {
		return nil, err
	}
	if caller == nil || caller.Org == "" {
		return nil, sidecar.Errorf(sidecar.EFORBIDDEN, "no_partner_org")
	}
	gs, err := p.store.GrantsByPartner(ctx, caller.Org, caller.Subject)
	if err != nil {
		return nil, err
	}
	now := p.clock()
	byCustomer := map[string]sidecar.EffectiveGrants{}
	for i := range gs {
		g := &gs[i]
		if !g.Live(now) || g.PartnerOrg != caller.Org || (g.User != "" && g.User != caller.Subject) {
			continue
		}
		e := byCustomer[g.Customer]
		if g.User != "" {
			e.Individual = g
		} else {
			e.Organisation = g
		}
		byCustomer[g.Customer] = e
	}
	out := make([]CustomerAccess, 0, len(byCustomer))
	for c, e := range byCustomer {
		if e.Individual == nil {
			// Only the organisation's grant is listed: a hold left by the
			// caller's revoked or replaced individual grant may keep them
			// from it, as on the check path.
			var err error
			if e, err = p.store.EffectiveGrants(ctx, c, caller.Org, caller.Subject); err != nil {
				return nil, err
			}
		}
		g := e.At(now)
		if g == nil {
			continue
		}
		out = append(out, CustomerAccess{Customer: c, Level: g.Level, Scope: g.Scope(), ExpiresAt: g.ExpiresAt, GrantID: g.ID})
	}
	slices.SortFunc(out, func(a, b CustomerAccess) int { return strings.Compare(a.Customer, b.Customer) })
	return out, nil
}

// MyPartners lists a customer's live grants, sorted by partner org, user
// and id, once policy lets caller see them.
func (p *Partners) MyPartners(ctx context.Context, caller *sidecar.Identity, customer string, authorize Authorize) ([]sidecar.Grant, error) {
	if err := authorize("partner.list_partners", map[string]any{"customer": customer}); err != nil {
		return nil, err
	}
	gs, err := p.store.GrantsByCustomer(ctx, customer)
	if err != nil {
		return nil, err
	}
	now := p.clock()
	gs = slices.DeleteFunc(gs, func(g sidecar.Grant) bool { return !g.Live(now) })
	slices.SortFunc(gs, func(a, b sidecar.Grant) int { return strings.Compare(GrantSortKey(a), GrantSortKey(b)) })
	return gs, nil
}

// GrantSortKey orders "My Partners" and is its pagination cursor.
func GrantSortKey(g sidecar.Grant) string { return g.PartnerOrg + "\x00" + g.User + "\x00" + g.ID }

// Effective returns the grant that applies to user of partnerOrg for
// customer at now, or nil. It is a fact lookup for no caller: nothing that
// answers a caller may show its result without asking policy.
func (p *Partners) Effective(ctx context.Context, customer, partnerOrg, user string) (*sidecar.Grant, error) {
	e, err := p.store.EffectiveGrants(ctx, customer, partnerOrg, user)
	if err != nil {
		return nil, err
	}
	return EffectiveAt(e, p.clock()), nil
}

// EffectiveAt applies precedence at now: a live individual grant wins even
// when lower; an expired grant counts as absent; the hold a revoked
// individual grant, or one replaced by a grant ending earlier, left keeps
// its user from an organisation grant above its level until it would have
// expired (sidecar.Hold).
func EffectiveAt(e sidecar.EffectiveGrants, now time.Time) *sidecar.Grant { return e.At(now) }

// ShareInput is a resource the customer shares with a cc-level partner user.
type ShareInput struct {
	Resource   string `json:"resource"`
	User       string `json:"user"`
	PartnerOrg string `json:"partner_org"`
}

// Share makes resource of the caller's organisation readable by a cc-level
// partner user, once policy lets caller share it. Sharing again is not an
// error.
func (p *Partners) Share(ctx context.Context, caller *sidecar.Identity, customer string, in ShareInput, authorize Authorize) (*sidecar.Share, error) {
	target := map[string]any{"customer": customer, "user": in.User, "resource": in.Resource, "partner_org": in.PartnerOrg}
	lim, err := p.authorized("share.put", target, authorize)
	if err != nil {
		return nil, err
	}
	if caller == nil || caller.Org != customer {
		return nil, sidecar.Errorf(sidecar.EFORBIDDEN, "not_customer")
	}
	if err := ValidRef("resource", in.Resource); err != nil {
		return nil, err
	}
	if err := ValidRef("user", in.User); err != nil {
		return nil, err
	}
	if err := ValidRef("partner_org", in.PartnerOrg); err != nil {
		return nil, err
	}
	if err := p.takeSelfService(ctx, customer, lim); err != nil {
		return nil, err
	}
	// A retry of a share whose reply was lost gets the share the first
	// write stored, with its SharedAt and so its Once: it is recorded
	// once, whether the first was recorded live or is read back by a
	// sweep (RecordAgain). The store decides that in the same step as the
	// write (Share.Retried), so a withdrawal in between makes this a new
	// share, recorded as one.
	s, err := p.store.PutShare(ctx, &sidecar.Share{Customer: customer, Resource: in.Resource, User: in.User, PartnerOrg: in.PartnerOrg,
		SharedBy: caller.Subject, SharedAt: p.clock()})
	if err != nil {
		return nil, err
	}
	p.records.Audit(ctx, sharedAudit(s))
	return s, nil
}

// sharedAudit is the audit entry of sh put. Its Once is made of the share
// and the time it was put, so recording a share again (RecordAgain)
// appends nothing when the first got through.
func sharedAudit(sh *sidecar.Share) *sidecar.AuditEntry {
	once := onceOf("share.put", sh.Customer, sh.PartnerOrg, sh.User, sh.Resource, strconv.FormatInt(sh.SharedAt.UnixNano(), 10))
	return partnerAudit(sh.SharedAt, once, sh.SharedBy, "share.put", sh.Customer, sh.Resource, map[string]string{"user": sh.User, "partner_org": sh.PartnerOrg})
}

// Unshare withdraws a share once policy lets caller; withdrawing an
// absent share is not an error. Without in.PartnerOrg it withdraws the
// resource from the user in every partner organisation, shares stored
// without one included: a narrowing a caller who does not know the
// organisation can still make.
func (p *Partners) Unshare(ctx context.Context, caller *sidecar.Identity, customer string, in ShareInput, authorize Authorize) error {
	if err := authorize("share.delete", map[string]any{"customer": customer, "user": in.User, "resource": in.Resource, "partner_org": in.PartnerOrg}); err != nil {
		return err
	}
	if caller == nil || caller.Org != customer {
		return sidecar.Errorf(sidecar.EFORBIDDEN, "not_customer")
	}
	orgs := []string{in.PartnerOrg}
	if in.PartnerOrg == "" {
		all, err := p.store.ListShares(ctx, customer)
		if err != nil {
			return err
		}
		orgs = orgs[:0]
		for _, sh := range all {
			if sh.User == in.User && sh.Resource == in.Resource {
				orgs = append(orgs, sh.PartnerOrg)
			}
		}
	}
	deleted := false
	var unpublished error
	for _, org := range orgs {
		sh, err := p.store.DeleteShare(ctx, customer, in.Resource, org, in.User, caller.Subject)
		if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
			continue
		}
		if err != nil && !sidecar.IsUnpublished(err) {
			return err
		}
		// Unpublished: deleted, but replicas were not told. It is
		// recorded as done, and the 503 makes the caller retry, which
		// finds nothing to delete and publishes again.
		if err != nil {
			unpublished = err
		}
		deleted = true
		p.unshared(ctx, sh)
	}
	if !deleted {
		// Perhaps a retry of a withdrawal whose reply, and the records
		// and eviction after it, were lost.
		if err := spend(ctx); err != nil { // nothing to narrow: see writeBudgetKey
			return err
		}
		p.recordUnshareAgain(ctx, customer, in)
		return evictAgain(ctx, p.store, sidecar.ShareKey(customer))
	}
	return unpublished
}

// unshared records the withdrawal of sh, as DeleteShare removed it. The
// records carry a Once made of the share and the time of its removal, so
// recording a withdrawal again (recordUnshareAgain) appends nothing when
// the first got through.
func (p *Partners) unshared(ctx context.Context, sh *sidecar.Share) {
	p.records.Audit(ctx, unsharedAudit(sh))
}

// unsharedAudit is the audit entry of sh withdrawn, with a Once made of
// the share and the time of its removal.
func unsharedAudit(sh *sidecar.Share) *sidecar.AuditEntry {
	once := onceOf("share.delete", sh.Customer, sh.PartnerOrg, sh.User, sh.Resource, strconv.FormatInt(sh.RemovedAt.UnixNano(), 10))
	return partnerAudit(sh.RemovedAt, once, sh.RemovedBy, "share.delete", sh.Customer, sh.Resource, map[string]string{"user": sh.User, "partner_org": sh.PartnerOrg})
}

// recordUnshareAgain records once more the withdrawals of in the store
// still keeps (RemovedShares): the Unshare that removed a share may have
// lost the store's reply and answered an error before recording it, and
// its retry finds nothing left to delete. Only withdrawals recent enough
// for the store to tell whether their records got through are recorded
// (sidecar.RecordableAgain). A failed read is logged: the eviction is what the
// retry answers.
func (p *Partners) recordUnshareAgain(ctx context.Context, customer string, in ShareInput) {
	removed, err := p.store.RemovedShares(ctx, customer)
	if err != nil {
		p.logger.Error("withdrawn shares not read to record a retried withdrawal", "customer", customer, "resource", in.Resource, "error", err)
		return
	}
	for _, sh := range removed {
		if sh.Resource == in.Resource && sh.User == in.User && (in.PartnerOrg == "" || sh.PartnerOrg == in.PartnerOrg) &&
			sidecar.RecordableAgain(sh.RemovedAt, p.clock()) {
			p.unshared(ctx, &sh)
		}
	}
}

// Shares lists a customer's shares, once policy lets caller see them.
func (p *Partners) Shares(ctx context.Context, caller *sidecar.Identity, customer string, authorize Authorize) ([]sidecar.Share, error) {
	if err := authorize("share.list", map[string]any{"customer": customer}); err != nil {
		return nil, err
	}
	return p.store.ListShares(ctx, customer)
}

// SubscriptionView is a subscription with whether it counts now.
type SubscriptionView struct {
	Customer   string        `json:"customer"`
	Kind       string        `json:"kind"`
	User       string        `json:"user"`
	PartnerOrg string        `json:"partner_org"`
	Active     bool          `json:"active"`
	Level      sidecar.Level `json:"level,omitempty"`
	CreatedAt  time.Time     `json:"created_at,omitzero"`
}

// Subscriptions are stored under a subscriber key naming the user's
// organisation and the user, because a subscription is only as good as the
// grant of the user's organisation, and the record has no organisation of
// its own. Both come from the token and either may hold any printable
// character, so they are joined as grant fields are, with \x00, which
// neither may hold: no two pairs share a key.
func subscriber(caller *sidecar.Identity) (string, error) {
	if caller == nil || caller.Org == "" {
		return "", sidecar.Errorf(sidecar.EFORBIDDEN, "no_partner_org")
	}
	// The identity layer refuses control characters; a key must not rest
	// on that alone.
	for _, f := range [...]struct{ name, value string }{{"org", caller.Org}, {"sub", caller.Subject}} {
		if strings.ContainsRune(f.value, 0) {
			return "", sidecar.Invalid(f.name, "must not contain NUL")
		}
	}
	return caller.Org + "\x00" + caller.Subject, nil
}

// legacySubscriber is the key subscriptions were stored under before,
// "<org>/<user>", and whether caller has one. Only organisations without
// '/' were let subscribe under it, and among those the string names one
// pair; for an organisation holding '/' it would name another pair's
// subscriptions ("partnerco/a" and "b" read as partnerco's "a/b").
func legacySubscriber(caller *sidecar.Identity) (string, bool) {
	if strings.Contains(caller.Org, "/") {
		return "", false
	}
	return caller.Org + "/" + caller.Subject, true
}

// splitSubscriber reads a subscriber key, current or legacy.
func splitSubscriber(s string) (org, user string) {
	if org, user, ok := strings.Cut(s, "\x00"); ok {
		return org, user
	}
	org, user, _ = strings.Cut(s, "/")
	return org, user
}

// SubscriptionSortKey orders subscription lists and is their pagination
// cursor.
func SubscriptionSortKey(v SubscriptionView) string {
	return v.Customer + "\x00" + v.Kind + "\x00" + v.PartnerOrg + "\x00" + v.User
}

// Subscribe records caller's subscription to kind for customer. It needs a
// live grant of at least the level policy data sets: policy is shown the
// caller's effective grant as input.target.grant, and the same grant is
// checked here again.
func (p *Partners) Subscribe(ctx context.Context, caller *sidecar.Identity, customer, kind string, authorize Authorize) (*SubscriptionView, error) {
	target := map[string]any{"customer": customer, "kind": kind, "partner_org": orgOf(caller)}
	var g *sidecar.Grant
	if caller != nil && caller.Org != "" {
		var err error
		if g, err = p.Effective(ctx, customer, caller.Org, caller.Subject); err != nil {
			return nil, err
		}
		if g != nil {
			target["grant"] = map[string]any{
				"id": g.ID, "partner_org": g.PartnerOrg, "user": g.User, "level": string(g.Level),
				"scope": g.Scope(), "expires_at": g.ExpiresAt.UTC().Format(time.RFC3339Nano),
			}
		}
	}
	lim, err := p.authorized("subscription.put", target, authorize)
	if err != nil {
		return nil, err
	}
	user, err := subscriber(caller)
	if err != nil {
		return nil, err
	}
	if kind != SubscriptionNotifications && kind != SubscriptionDashboard {
		return nil, sidecar.Invalid("kind", "must be %q or %q", SubscriptionNotifications, SubscriptionDashboard)
	}
	if g == nil {
		return nil, sidecar.Errorf(sidecar.EFORBIDDEN, "no_live_grant")
	}
	if min := lim.SubscriptionMinLevel; !g.Level.AtLeast(min) {
		return nil, sidecar.Errorf(sidecar.EFORBIDDEN, "level_below_minimum:%s", min)
	}
	s := &sidecar.Subscription{User: user, Customer: customer, Kind: kind, CreatedAt: p.clock()}
	if err := p.store.PutSubscription(ctx, s); err != nil {
		return nil, err
	}
	// The same subscription under the legacy key is now a duplicate.
	if legacy, ok := legacySubscriber(caller); ok {
		if err := p.store.DeleteSubscription(ctx, legacy, customer, kind); err != nil && sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			return nil, err
		}
	}
	return &SubscriptionView{Customer: customer, Kind: kind, User: caller.Subject, PartnerOrg: caller.Org, Active: true, Level: g.Level, CreatedAt: s.CreatedAt}, nil
}

// Unsubscribe removes caller's subscription once policy lets caller; an
// absent one is not an error.
func (p *Partners) Unsubscribe(ctx context.Context, caller *sidecar.Identity, customer, kind string, authorize Authorize) error {
	if err := authorize("subscription.delete", map[string]any{"customer": customer, "kind": kind, "partner_org": orgOf(caller)}); err != nil {
		return err
	}
	user, err := subscriber(caller)
	if err != nil {
		return err
	}
	users := []string{user}
	if legacy, ok := legacySubscriber(caller); ok {
		users = append(users, legacy)
	}
	for _, u := range users {
		if err := p.store.DeleteSubscription(ctx, u, customer, kind); err != nil && sidecar.ErrorCode(err) != sidecar.ENOTFOUND {
			return err
		}
	}
	return nil
}

// MySubscriptions lists caller's subscriptions, each marked active only if
// the caller's grant still reaches the minimum level now.
func (p *Partners) MySubscriptions(ctx context.Context, caller *sidecar.Identity, authorize Authorize) ([]SubscriptionView, error) {
	lim, err := p.authorized("subscription.list", map[string]any{"partner_org": orgOf(caller)}, authorize)
	if err != nil {
		return nil, err
	}
	user, err := subscriber(caller)
	if err != nil {
		return nil, err
	}
	ss, err := p.store.SubscriptionsByUser(ctx, user)
	if err != nil {
		return nil, err
	}
	if legacy, ok := legacySubscriber(caller); ok {
		old, err := p.store.SubscriptionsByUser(ctx, legacy)
		if err != nil {
			return nil, err
		}
		ss = append(ss, old...)
	}
	return p.views(ctx, ss, lim)
}

// Subscribers lists the subscriptions to customer's kind that count now:
// those whose user still holds a grant of the minimum level. The host's
// mailer reads this instead of the raw records, to know whom to notify of
// the customer's events. It is an action of its own, not the listing of
// the customer's partners, so that policy lets the mailer read whom to
// notify without the customer's grants.
func (p *Partners) Subscribers(ctx context.Context, caller *sidecar.Identity, customer, kind string, authorize Authorize) ([]SubscriptionView, error) {
	lim, err := p.authorized("partner.list_subscribers", map[string]any{"customer": customer}, authorize)
	if err != nil {
		return nil, err
	}
	ss, err := p.store.SubscriptionsByCustomer(ctx, customer)
	if err != nil {
		return nil, err
	}
	ss = slices.DeleteFunc(ss, func(s sidecar.Subscription) bool { return kind != "" && s.Kind != kind })
	vs, err := p.views(ctx, ss, lim)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(vs, func(v SubscriptionView) bool { return !v.Active }), nil
}

// views shows ss, each active when its user's grant reaches lim's
// subscription level now.
func (p *Partners) views(ctx context.Context, ss []sidecar.Subscription, lim *PartnerRules) ([]SubscriptionView, error) {
	min := lim.SubscriptionMinLevel
	out := make([]SubscriptionView, 0, len(ss))
	for _, s := range ss {
		org, user := splitSubscriber(s.User)
		v := SubscriptionView{Customer: s.Customer, Kind: s.Kind, User: user, PartnerOrg: org, CreatedAt: s.CreatedAt}
		g, err := p.Effective(ctx, s.Customer, org, user)
		if err != nil {
			return nil, err
		}
		if g != nil {
			v.Level = g.Level
			v.Active = g.Level.AtLeast(min)
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b SubscriptionView) int {
		return strings.Compare(SubscriptionSortKey(a), SubscriptionSortKey(b))
	})
	// A subscription stored under both its legacy and its current key
	// (a fault between Subscribe's write and its removal of the legacy
	// one) is one subscription.
	return slices.CompactFunc(out, func(a, b SubscriptionView) bool { return SubscriptionSortKey(a) == SubscriptionSortKey(b) }), nil
}

// SweepExpiring appends a grant.expiring event for every live grant that
// ends within the configured window and has not been announced for its
// current expiry. Calling it again, or from several replicas, does not
// announce a grant twice: the events stream is the record of what was
// announced. limit bounds the grants examined (0: all). It returns how
// many it announced.
func (p *Partners) SweepExpiring(ctx context.Context, limit int) (int, error) {
	rules, err := p.rules.Partner()
	if err != nil {
		return 0, err
	}
	now := p.clock()
	window := grantDays(rules.ExpiringWithinDays)
	gs, err := p.store.GrantsExpiringBefore(ctx, now.Add(window), limit)
	if err != nil || len(gs) == 0 {
		return 0, err
	}
	done, err := p.announced(ctx, now.Add(-window))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range gs {
		exp := g.ExpiresAt.UTC().Format(time.RFC3339Nano)
		if !g.Live(now) || done[g.ID+"\x00"+exp] {
			continue
		}
		err = p.event(ctx, sidecar.EventGrantExpiring, g.Customer, "", map[string]string{
			"grant_id":    g.ID,
			"partner_org": g.PartnerOrg,
			"user":        g.User,
			"level":       string(g.Level),
			"expires_at":  exp,
		})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// announced returns the grant id and expiry of every grant.expiring event
// since the start of the window.
func (p *Partners) announced(ctx context.Context, since time.Time) (map[string]bool, error) {
	done := map[string]bool{}
	f := sidecar.StreamFilter{Type: sidecar.EventGrantExpiring, From: since, Page: sidecar.Page{Limit: sidecar.MaxPageLimit}}
	for {
		es, next, err := p.store.ReadEvents(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			done[e.Data["grant_id"]+"\x00"+e.Data["expires_at"]] = true
		}
		if next == "" || len(es) == 0 {
			return done, nil
		}
		f.Cursor = next
	}
}

// RecordAgain records once more the access requests created, the
// decisions on them, the revocations of grants and the shares put and
// withdrawn, by any call on any replica, since the last sweep of this
// process: their records are appended after the change is committed, and
// a process that stops, or loses the node of the audit and events
// streams, before the recorder appends them leaves the change with no
// record (a request no contact manager is asked about, a grant live with
// no record of who let it in). The store keeps the requests created, the
// requests decided (and the approvals marked recorded), the grants
// revoked and the shares changed for sidecar.AppendOnceWindow
// (RequestsCreated, RequestsDecided, GrantsRevoked, SharesChanged), and
// the records carry the Once of the first (the request's or the grant's
// id, the share and the time of its change), so what got through is not
// appended twice.
//
// A sweep reads back what was kept since the last sweep that recorded
// everything it read (one recordInterval before it: a write made at an
// earlier time may land late), so a change costs each replica one more
// record at most; the first sweep of a process reads back the whole
// window, as its predecessor may have stopped with records not appended
// and left no trace; a sweep that fails to append an event reads back
// from the same time again. Requests are recorded before decisions,
// decisions before revocations. An approval is recorded once it is marked
// recorded (the call completing it records it first), with the users it
// issued grants to (issuedUsersOf); a revocation as its revoker's. A
// revocation kept by a release that kept no revoker is left as it is.
//
// An approval whose call was cut before it marked the approval recorded
// (the replica stopped, or lost the store, between the decision and the
// marking), and that no retry completes, would stay unrecorded: once
// ApprovalGrace has passed since its decision, the sweep marks it
// recorded itself (RecordApproval, so that of it and any call completing
// the approval one records it) and records it with the users its grants
// stored so far let in, as the contact manager's who decided it. Within
// the grace it is left to the call still completing it, and read back by
// the next sweep. A retry completing it later issues the grants still
// missing without announcing the approval again.
func (p *Partners) RecordAgain(ctx context.Context) error {
	now := p.clock()
	from := p.kept.since(now)
	created, err := p.store.RequestsCreated(ctx, from)
	if err != nil {
		return err
	}
	var errs []error
	for k := range created {
		r := &created[k]
		errs = append(errs, p.kept.record(now, "partner.request:"+r.ID, func() error { return p.requested(ctx, r) }))
	}
	decided, err := p.store.RequestsDecided(ctx, from)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	var held time.Time // the earliest decision left to its call, if any
	for k := range decided {
		r := &decided[k]
		switch {
		case r.Status == sidecar.RequestApproved && r.ApprovalRecorded:
			errs = append(errs, p.kept.record(now, "partner.approve:"+r.ID, func() error {
				users, err := p.issuedUsersOf(ctx, r)
				if err != nil {
					return err
				}
				return p.record(ctx, &sidecar.Identity{Subject: r.DecidedBy}, r, users)
			}))
		case r.Status == sidecar.RequestApproved && now.Sub(r.DecidedAt) < ApprovalGrace:
			if held.IsZero() || r.DecidedAt.Before(held) {
				held = r.DecidedAt
			}
		case r.Status == sidecar.RequestApproved:
			errs = append(errs, p.kept.record(now, "partner.approve:"+r.ID, func() error { return p.recordCut(ctx, r) }))
		case r.Status == sidecar.RequestRejected:
			errs = append(errs, p.kept.record(now, "partner.reject:"+r.ID, func() error { return p.rejected(ctx, r) }))
		}
	}
	// Decisions before revocations: a grant's approval is recorded
	// before its revocation.
	revoked, err := p.store.GrantsRevoked(ctx, from)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for k := range revoked {
		g := &revoked[k]
		if g.RevokedBy == "" {
			continue
		}
		errs = append(errs, p.kept.record(now, "partner.revoke:"+g.ID, func() error {
			return p.revoked(ctx, g.RevokedBy, g.RevokedByOrg, g, g.RevokedAt)
		}))
	}
	shares, err := p.store.SharesChanged(ctx, from)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for k := range shares {
		// Appended here, not through the recorder: a share has no event
		// whose failure would tell the sweep to read it back again.
		a := sharedAudit(&shares[k])
		if !shares[k].RemovedAt.IsZero() {
			a = unsharedAudit(&shares[k])
		}
		errs = append(errs, p.kept.record(now, a.Once, func() error { return p.store.AppendAudit(ctx, a) }))
	}
	if err := errors.Join(errs...); err != nil {
		return err // the next sweep reads back from the same time
	}
	next := now.Add(-max(p.recordInterval(), keptOverlap))
	if !held.IsZero() && held.Before(next) {
		next = held // read back again once its grace has passed
	}
	p.kept.swept(next)
	return nil
}

// ApprovalGrace is how long after its decision an approval not marked
// recorded is left to the call completing it, before a sweep records it
// (RecordAgain): longer than an approval call takes.
const ApprovalGrace = time.Minute

// recordCut records r's approval, decided more than ApprovalGrace ago and
// not marked recorded: its call was cut before it marked it. The grants
// stored so far are named; the approval is not closed, so a retry still
// issues those missing. The event's append error is returned.
func (p *Partners) recordCut(ctx context.Context, r *sidecar.AccessRequest) error {
	users, err := p.issuedUsersOf(ctx, r)
	if err != nil {
		return err
	}
	announced, err := p.recordApproval(ctx, &sidecar.Identity{Subject: r.DecidedBy}, r, users)
	if err != nil {
		return err
	}
	return announced
}

// RecordInterval is the most time between two RecordAgain calls of
// RunSweeper, whatever SweepInterval: a change is read back by the sweeps
// of the interval after it, well within sidecar.AppendOnceWindow.
const RecordInterval = time.Minute

// recordInterval is how often RunSweeper calls RecordAgain.
func (p *Partners) recordInterval() time.Duration { return min(p.cfg.SweepInterval, RecordInterval) }

// RunSweeper calls RecordAgain and SweepExpiring now, then RecordAgain
// every recordInterval and SweepExpiring every SweepInterval, until ctx
// ends. A failed sweep is logged and retried at its next tick.
func (p *Partners) RunSweeper(ctx context.Context) {
	records := time.NewTicker(p.recordInterval())
	defer records.Stop()
	expiring := time.NewTicker(p.cfg.SweepInterval)
	defer expiring.Stop()
	record, announce := true, true
	for {
		if record {
			if err := p.RecordAgain(ctx); err != nil && ctx.Err() == nil {
				p.logger.Warn("partner records sweep failed", "error", err)
			}
		}
		if announce {
			if _, err := p.SweepExpiring(ctx, 0); err != nil && ctx.Err() == nil {
				p.logger.Warn("expiring-grant sweep failed", "error", err)
			}
		}
		record, announce = false, false
		select {
		case <-ctx.Done():
			return
		case <-records.C:
			record = true
		case <-expiring.C:
			announce = true
		}
	}
}

func (p *Partners) event(ctx context.Context, typ, customer, actor string, data map[string]string) error {
	return p.eventOnce(ctx, p.clock(), "", typ, customer, actor, data)
}

// eventOnce is event at at, appended by the store once per once within
// sidecar.AppendOnceWindow ("": every time).
func (p *Partners) eventOnce(ctx context.Context, at time.Time, once, typ, customer, actor string, data map[string]string) error {
	return p.store.AppendEvent(ctx, &sidecar.Event{Type: typ, Time: at, Customer: customer, Actor: actor, Data: nonEmpty(data), Once: once})
}

// nonEmpty drops data's empty values, and returns it.
func nonEmpty(data map[string]string) map[string]string {
	for k, v := range data {
		if v == "" {
			delete(data, k)
		}
	}
	return data
}

// auditOnce records a management action at at, appended once per once as
// eventOnce is ("": a Once of the recorder's); it is not the caller's
// failure, because the action itself has happened: the recorder retries
// it.
func (p *Partners) auditOnce(ctx context.Context, at time.Time, once, actor, action, customer, target string, data map[string]string) {
	p.records.Audit(ctx, partnerAudit(at, once, actor, action, customer, target, data))
}

// partnerAudit is the audit entry of a partner action.
//
// Every record is self-service (sidecar.AuditEntry.SelfService): Partners
// admits only a party acting for their own organisation (a partner user
// requesting or revoking for theirs, the customer's contact manager
// deciding, revoking or sharing for the customer: checkRequest, decide,
// Revoke, Share and Unshare check caller.Org whatever policy allows), and
// any ordinary account can repeat those as often as its write budget
// allows. Kept apart, they never push staff records out of the trail.
func partnerAudit(at time.Time, once, actor, action, customer, target string, data map[string]string) *sidecar.AuditEntry {
	return &sidecar.AuditEntry{Time: at, Actor: actor, Action: action, Customer: customer, Target: target, Outcome: "ok",
		SelfService: true, Data: nonEmpty(data), Once: once}
}

func grantDays(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func levelNames() string {
	names := make([]string, len(sidecar.Levels))
	for i, l := range sidecar.Levels {
		names[i] = string(l)
	}
	return strings.Join(names, ", ")
}

// ValidRef accepts the identifiers Deputy stores and puts in keys: 1–256
// printable characters without spaces, braces or control characters (bidi
// overrides among them, see sidecar.IsControl). A colon is allowed, as
// namespaced identities (<namespace>:<sub>) need it: every Redis key puts
// such a value either inside a hash tag ({cust:C}:grants), which the first
// '}' ends since braces are refused, or after a fixed family prefix of
// which none is a prefix of another ({imp}:live:a:A, invalidation keys
// grant:C); hash fields and set members join values with \x00, which
// control characters keep out. So no key, field or member reads two ways.
func ValidRef(field, s string) error {
	if s == "" {
		return sidecar.Invalid(field, "required")
	}
	if len(s) > 256 {
		return sidecar.Invalid(field, "at most 256 bytes")
	}
	for _, r := range s {
		if r == ' ' || sidecar.IsControl(r) || r == '{' || r == '}' {
			return sidecar.Invalid(field, "must not contain spaces, control characters or braces")
		}
	}
	return nil
}

func newGrantID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
