package delegation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/deputyhq/deputy/sidecar"
)

// Store is the state Login as Customer needs. Its Invalidator tells when
// what this process remembers writing may have been lost.
type Store interface {
	sidecar.CustomerStore
	sidecar.ConsentStore
	sidecar.SessionStore
	sidecar.EventLog
	sidecar.AuditLog
	sidecar.Invalidator
}

// Authorize asks policy whether the caller may perform action on target;
// a denial is an error (EFORBIDDEN, or the status the policy names). The
// management API passes its manage-policy check for the caller; every
// lifecycle method that acts for a caller takes one and calls it once it
// has loaded the facts policy judges, before it writes anything.
type Authorize func(action string, target map[string]any) error

// Impersonation runs the Login as Customer lifecycle. Who may do what is
// the manage policy's, asked through the Authorize each method that acts
// for a caller takes, with the customer, consent and session as stored.
type Impersonation struct {
	store  Store
	rules  *RuleBook // reads the switches from the active policy data
	cfg    ImpersonationConfig
	clock  sidecar.Clock
	logger *slog.Logger
	// records appends the session log's entries and the customer's
	// events: the change they describe is committed first.
	records *Recorder
	// staffSeen remembers when this process last wrote each subject's
	// staff mark, so a staff action costs a store write at most once per
	// cfg.CacheTTL, not every time. It is a hint, never the truth: the
	// mark can vanish from the store (a Redis restart without
	// persistence, failover to a lagging replica, eviction), and a mark
	// remembered forever would leave that staff account impersonable. So
	// an entry expires after cfg.CacheTTL, and all are forgotten when the
	// store says cached state can't be trusted (sidecar.InvalidateAll).
	staffMu   sync.Mutex // orders a recorded write after a forget
	staffGen  uint64     // counts forgets, under staffMu
	staffSeen *lru.Cache[string, time.Time]
	// sweepLost is the instant of the earliest sweep whose store write
	// failed since the ends it may have made were last recorded again:
	// a write whose reply was lost ended sessions and recorded nothing,
	// and the sweeps after it find nothing left to end. Zero: none. The
	// first sweep of a process takes it as failed one append-once window
	// back: a predecessor that lost a reply and restarted left no trace.
	sweepMu    sync.Mutex
	sweepLost  time.Time
	sweepFails uint64 // counts failed sweeps, under sweepMu
	swept      bool   // a sweep ran, under sweepMu
	// keptFrom is where the next sweep reads back what the store kept
	// to be recorded, by any replica: the consents taken
	// (LapsedConsentsTaken), the consents set (ConsentsSet), the
	// sessions started (SessionsStarted) and the sessions ended
	// (SessionsEnded). A take or an end whose reply was lost, or a
	// setting, a start or an end whose records were still to be appended
	// when its process stopped, is found there by whichever replica
	// sweeps next, whatever its caller did after the error. keptDone
	// holds the Onces of the lapses, settings, starts and ends this
	// process recorded from there since, with the sweep's now, so that it
	// appends each only once. Under sweepMu.
	keptFrom time.Time
	keptDone map[string]time.Time
	cancel   func()
}

// staffSeenSize bounds the subjects remembered as recorded; one forgotten
// is written again (an idempotent write) on its next staff action.
const staffSeenSize = 10_000

// ImpersonationOption configures Impersonation.
type ImpersonationOption func(*Impersonation)

// WithImpersonationConfig sets the impersonation config section.
func WithImpersonationConfig(c ImpersonationConfig) ImpersonationOption {
	return func(i *Impersonation) { i.cfg = c }
}

// WithImpersonationClock sets the clock.
func WithImpersonationClock(c sidecar.Clock) ImpersonationOption {
	return func(i *Impersonation) { i.clock = c }
}

// WithImpersonationLogger sets the logger.
func WithImpersonationLogger(l *slog.Logger) ImpersonationOption {
	return func(i *Impersonation) { i.logger = l }
}

// WithImpersonationRecorder sets the recorder that appends audit entries
// and events, shared with the other lifecycles and started by the owner.
// Without one, an append that fails is dropped and counted at once.
func WithImpersonationRecorder(r *Recorder) ImpersonationOption {
	return func(i *Impersonation) { i.records = r }
}

// NewImpersonation returns the lifecycle on store, reading switches from
// the active policy data.
func NewImpersonation(store Store, data PolicyData, opts ...ImpersonationOption) *Impersonation {
	i := &Impersonation{store: store, rules: NewRuleBook(data), clock: time.Now, logger: slog.Default()}
	i.staffSeen, _ = lru.New[string, time.Time](staffSeenSize) // fails only for a size below 1
	for _, o := range opts {
		o(i)
	}
	i.cfg.SetDefaults()
	if i.records == nil {
		i.records = NewRecorder(store, i.logger)
	}
	i.cancel = store.Subscribe(i.evict)
	return i
}

// Close stops listening for the store's invalidations.
func (i *Impersonation) Close() error {
	i.cancel()
	return nil
}

// evict forgets every staff mark written when the store signals that
// invalidations, and so perhaps writes, were lost.
func (i *Impersonation) evict(key string) {
	if key != sidecar.InvalidateAll {
		return
	}
	i.staffMu.Lock()
	i.staffGen++
	i.staffSeen.Purge()
	i.staffMu.Unlock()
}

// Config returns the effective config.
func (i *Impersonation) Config() ImpersonationConfig { return i.cfg }

// Switches returns the switches of the active policy data; with no policy
// active, or none in its data, impersonation is off.
func (i *Impersonation) Switches() (Switches, error) { return switchesIn(i.rules.active()) }

// switchesIn reads the switches of data, the base data of one activation
// (nil: none is loaded, and impersonation is off).
func switchesIn(data map[string]any) (Switches, error) {
	s, err := ReadSwitches(data)
	if err != nil {
		return s, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "policy data is malformed: " + err.Error()}
	}
	return s, nil
}

// authorized asks the manage policy whether the caller may take action on
// target, and returns the switches the call is to apply: those of the
// activation whose manage rules decided (RuleBook.decided), never the
// switches of a revision loaded while it was asked, nor of one loaded
// before it and gone again by its answer.
func (i *Impersonation) authorized(action string, target map[string]any, authorize Authorize) (Switches, error) {
	data, err := i.rules.decided(func() error { return authorize(action, target) })
	if err != nil {
		return Switches{}, err
	}
	return switchesIn(data)
}

// enabled refuses unless sw turns impersonation on, whatever the manage
// policy said.
func enabled(sw Switches) error {
	if !sw.Enabled {
		return sidecar.Errorf(sidecar.EFORBIDDEN, "impersonation_disabled")
	}
	return nil
}

// Field limits for client-supplied text.
const (
	maxIDLen     = 256
	maxReasonLen = 1000
)

func checkID(field, v string) error {
	switch {
	case v == "":
		return sidecar.Invalid(field, "required")
	case len(v) > maxIDLen:
		return sidecar.Invalid(field, "longer than %d bytes", maxIDLen)
	case strings.ContainsFunc(v, sidecar.IsControl):
		return sidecar.Invalid(field, "contains control characters")
	}
	return nil
}

// checkText admits free text that reaches the events stream the host's
// mailer turns into customer email, and the session log: control
// characters (CR, LF, ESC, bidi overrides, ... but tab) are refused, so a
// value cannot forge a mail header line, drive a terminal or show other
// text than it holds. HTML in it is the
// mailer's to escape (README, Events). It returns the text to store and
// judge: "" for text with no visible character (sidecar.Blank), which
// every reader sees as empty. It is made empty here, before policy, not
// judged by a rule of its own in policy: policy then refuses a blank
// reason exactly when it refuses a missing one, and the session log,
// audit trail and events never hold a reason or name that shows as
// nothing; Go's Unicode tables say which characters print as nothing.
func checkText(field, v string, max int) (string, error) {
	if len(v) > max {
		return "", sidecar.Invalid(field, "longer than %d bytes", max)
	}
	if sidecar.HasControl(v) {
		return "", sidecar.Invalid(field, "contains control characters")
	}
	if sidecar.Blank(v) {
		return "", nil
	}
	return v, nil
}

// checkTicket admits an optional support-tool reference such as JIRA-123,
// #4521 or a ticket URL: printable, without spaces, control characters
// or characters that print as nothing (a Hangul filler is refused as a
// space is).
func checkTicket(v string) error {
	if len(v) > maxIDLen {
		return sidecar.Invalid("ticket", "longer than %d bytes", maxIDLen)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return sidecar.Invisible(r) || !unicode.IsPrint(r) }) {
		return sidecar.Invalid("ticket", "must be a reference like JIRA-123 or #4521: no spaces or control characters")
	}
	return nil
}

// PutCustomer upserts a customer profile synced by the host application,
// once policy lets by.
func (i *Impersonation) PutCustomer(ctx context.Context, by *sidecar.Identity, c *sidecar.Customer, authorize Authorize) error {
	sw, err := i.authorized("customer.put", map[string]any{"customer_id": c.ID}, authorize)
	if err != nil {
		return err
	}
	if err := checkID("id", c.ID); err != nil {
		return err
	}
	if c.Name, err = checkText("name", c.Name, maxIDLen); err != nil {
		return err
	}
	for _, f := range [...]struct{ name, v string }{{"org", c.Org}, {"default_store_view", c.DefaultStoreView}} {
		if f.v != "" {
			if err := checkID(f.name, f.v); err != nil {
				return err
			}
		}
	}
	for _, v := range c.StoreViews {
		if err := checkID("store_views", v); err != nil {
			return err
		}
	}
	for _, r := range c.Roles {
		if err := checkID("roles", r); err != nil {
			return err
		}
	}
	c.UpdatedAt, c.UpdatedBy = i.clock(), by.Subject
	// A profile that is protected as written ends the customer's live
	// sessions in the same atomic step that stores it.
	ended, err := i.store.PutCustomer(ctx, c, protection(sw))
	if err != nil && !sidecar.IsUnpublished(err) {
		return err
	}
	i.audit(ctx, by, "customer.put", c.ID, c.ID, nil)
	for k := range ended {
		i.ended(ctx, by, &ended[k])
	}
	if len(ended) == 0 && protection(sw).Protects(c.ID, c, false) {
		// This may retry a put whose write ended the sessions and lost
		// its reply: it finds none left to end.
		rerr := i.recordEndsAgain(ctx, sidecar.SessionFilter{Customer: c.ID}, func(s *sidecar.Session) bool {
			return s.EndReason == sidecar.EndCustomerProtected
		})
		if err == nil {
			err = rerr
		}
	}
	return err
}

// DeleteCustomer removes a customer's profile, once policy lets by. Its
// live sessions end in the same atomic step (sidecar.EndCustomerDeleted):
// without the profile nothing says whether the account is protected, and
// no new session can start for it. The customer's consent is withdrawn
// in that step too: a profile synced later under the same id must not
// inherit it. A consent in force is reported as every withdrawal is (a
// consent.changed event and a consent.set audit entry), by the caller,
// with reason customer_deleted. A profile already gone is no error
// (DELETE is idempotent), and since policy was asked first, only a caller
// allowed to delete it learns that it is absent; its eviction is
// published again, since this may retry a delete whose eviction, or
// reply, was lost, and what that delete left to find is recorded again
// (recordDeletionsAgain).
func (i *Impersonation) DeleteCustomer(ctx context.Context, by *sidecar.Identity, id string, authorize Authorize) error {
	if err := authorize("customer.delete", map[string]any{"customer_id": id}); err != nil {
		return err
	}
	if err := checkID("id", id); err != nil {
		return err
	}
	del, err := i.store.DeleteCustomer(ctx, id, by.Subject)
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		if err := spend(ctx); err != nil { // nothing to narrow: see writeBudgetKey
			return err
		}
		if err := i.recordDeletionsAgain(ctx, id, time.Time{}); err != nil {
			return err
		}
		return evictAgain(ctx, i.store, sidecar.CustomerKey(id), sidecar.ConsentKey(id))
	}
	if err != nil && !sidecar.IsUnpublished(err) {
		return err
	}
	i.deleted(ctx, by, id, del)
	for k := range del.Ended {
		i.ended(ctx, by, &del.Ended[k])
	}
	// A delete whose reply was lost may have gone before it, the profile
	// put again since. This delete is made: a failure to read that is
	// logged, and the next delete of the customer reads it again.
	if rerr := i.recordDeletionsAgain(ctx, id, del.At); rerr != nil {
		i.logger.Warn("earlier customer deletions not read back", "customer", id, "error", rerr)
	}
	return err
}

// deleted records del, the deletion of customer id's profile, and, when
// it withdrew a consent, the withdrawal. The deletion's time, the store's,
// is the customer.delete record's Once, so recording the deletion again
// (recordDeletionsAgain) appends nothing when the first got through.
func (i *Impersonation) deleted(ctx context.Context, by *sidecar.Identity, id string, del *sidecar.CustomerDeletion) {
	a := &sidecar.AuditEntry{Time: i.clock(), Actor: by.Subject, Action: "customer.delete", Customer: id, Target: id, Outcome: "ok"}
	if !del.At.IsZero() {
		a.Time, a.Once = del.At, "customer.delete:"+id+":"+del.At.UTC().Format(time.RFC3339Nano)
	}
	i.records.Audit(ctx, a)
	if del.Withdrawn != nil {
		i.consentChanged(ctx, by, del.Withdrawn)
	}
}

// recordDeletionsAgain records once more the deletions of customer id's
// profile the store keeps, but the one made at made (zero: none), and
// the ends of the sessions they ended: a delete whose reply was lost
// answered an error before recording them, and the retry finds the
// profile gone, or a later delete finds it put again since. The store
// keeps every deletion, who made it and when, and the withdrawal it
// made, for sidecar.AppendOnceWindow (CustomerDeletions): a deletion that
// withdrew nothing and ended nothing leaves no other trace. A deletion's
// records carry its Once, so one recorded already appends nothing.
func (i *Impersonation) recordDeletionsAgain(ctx context.Context, id string, made time.Time) error {
	dels, err := i.store.CustomerDeletions(ctx, id)
	if err != nil {
		return err
	}
	before := false
	for k := range dels {
		if del := &dels[k]; !del.At.Equal(made) && sidecar.RecordableAgain(del.At, i.clock()) {
			i.deleted(ctx, &sidecar.Identity{Subject: del.By}, id, del)
			before = true
		}
	}
	if !before && !made.IsZero() { // the usual delete: none before it
		return nil
	}
	return i.recordEndsAgain(ctx, sidecar.SessionFilter{Customer: id}, func(s *sidecar.Session) bool {
		return s.EndReason == sidecar.EndCustomerDeleted
	})
}

// protection is what policy data protects beyond profiles and staff.
func protection(sw Switches) sidecar.Protection {
	return sidecar.Protection{Roles: sw.ProtectedRoles, Customers: sw.ProtectedCustomers}
}

// RecordStaff records that subject acted with a staff permission, so its
// own account can never be impersonated and the sessions impersonating it
// end (sidecar.EndCustomerProtected, by Deputy). The management API calls
// this on every staff action; the store is written again once the last
// write is cfg.CacheTTL old or the store lost track (see staffSeen). A
// failed write is logged and tried again on the subject's next action.
func (i *Impersonation) RecordStaff(ctx context.Context, subject string) {
	if subject == "" {
		return
	}
	if err := i.assertStaff(ctx, subject); err != nil {
		i.logger.Warn("staff subject not recorded", "subject", subject, "error", err)
	}
}

// assertStaff writes subject's staff mark unless this process wrote it
// less than cfg.CacheTTL ago and the store has not signalled a loss since.
func (i *Impersonation) assertStaff(ctx context.Context, subject string) error {
	now := i.clock()
	if at, ok := i.staffSeen.Get(subject); ok && now.Sub(at) < i.cfg.CacheTTL {
		return nil
	}
	i.staffMu.Lock()
	gen := i.staffGen
	i.staffMu.Unlock()
	if err := i.markStaff(ctx, subject); err != nil {
		return err
	}
	i.staffMu.Lock()
	if gen == i.staffGen { // no forget since: the write is still worth trusting
		i.staffSeen.Add(subject, now)
	}
	i.staffMu.Unlock()
	return nil
}

// markStaff records subject as staff and reports the sessions it ended.
// A mark that ends nothing may be written again after one whose reply
// was lost, which ended the sessions and recorded nothing: their ends
// are recorded again.
func (i *Impersonation) markStaff(ctx context.Context, subject string) error {
	ended, err := i.store.MarkStaff(ctx, subject)
	deputy := &sidecar.Identity{Subject: sidecar.SweepActor}
	for k := range ended {
		i.ended(ctx, deputy, &ended[k])
	}
	if err != nil || len(ended) > 0 {
		return err
	}
	return i.recordEndsAgain(ctx, sidecar.SessionFilter{Customer: subject}, func(s *sidecar.Session) bool {
		return s.EndReason == sidecar.EndCustomerProtected && s.EndedBy == sidecar.SweepActor
	})
}

// ConsentChange is a request to set or withdraw consent. ExpiresAt is nil
// for consent without an expiry: a time the caller gave is judged as the
// instant it is, even the zero one, which sidecar.Consent stores as "no
// expiry".
type ConsentChange struct {
	Customer  string
	Allowed   bool
	ExpiresAt *time.Time
}

// SetConsent records a customer's consent (history is kept by the store).
// Withdrawing it — or setting an expiry already past — ends the customer's
// live sessions at once. Policy judges it as the customer's own choice
// when by is the customer, else as set on the customer's behalf.
func (i *Impersonation) SetConsent(ctx context.Context, by *sidecar.Identity, ch ConsentChange, authorize Authorize) (*sidecar.Consent, []sidecar.Session, error) {
	action := "consent.set_for_customer"
	if by != nil && by.Subject == ch.Customer {
		action = "consent.set_self"
	}
	sw, err := i.authorized(action, map[string]any{"customer_id": ch.Customer}, authorize)
	if err != nil {
		return nil, nil, err
	}
	if err := checkID("customer_id", ch.Customer); err != nil {
		return nil, nil, err
	}
	// Only a withdrawal narrows for sure: a consent given may widen, and a
	// shorter expiry, while it narrows, is one a caller can set again and
	// again, a nanosecond sooner each time, with nothing counted between
	// (the store's budget counts it too). Withdrawing ends sessions as
	// well, and is never refused.
	if ch.Allowed {
		if err := spend(ctx); err != nil {
			return nil, nil, err
		}
	}
	now := i.clock()
	var expires time.Time // zero: no expiry
	if ch.ExpiresAt != nil {
		expires = *ch.ExpiresAt
		switch {
		// A withdrawal has nothing to expire. Were an expiry taken with
		// it, each new one would make the same withdrawal a change: it
		// would escape the dedupe below, and, being a withdrawal, the
		// budget too.
		case !ch.Allowed:
			return nil, nil, sidecar.Invalid("expires_at", "only with allowed true: a withdrawal has no expiry")
		// After now, hence never the zero time that means none.
		case !expires.After(now):
			return nil, nil, sidecar.Invalid("expires_at", "must be in the future")
		}
	}
	// A write that changes nothing records nothing new (recording the
	// setting again appends nothing the store took): repeating it must not
	// fill the events and audit streams, whose MAXLEN trimming would drop
	// real entries. Consent never given, or lapsed, reads as withdrawn.
	cur, err := i.store.GetConsent(ctx, ch.Customer)
	switch {
	case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		cur = &sidecar.Consent{Customer: ch.Customer}
	case err != nil:
		return nil, nil, err
	}
	// Withdrawals are all alike, whatever expiry an older one was stored
	// with.
	if cur.Allowed == ch.Allowed && (!ch.Allowed || cur.ExpiresAt.Equal(expires)) {
		if err := spend(ctx); err != nil { // nothing to narrow: see writeBudgetKey
			return nil, nil, err
		}
		// This may retry a change whose write reached the store while its
		// eviction, or its reply, was lost: record it again and evict
		// again. The consent is part of every impersonated decision, so
		// its key alone ends on every replica the sessions it no longer
		// covers.
		i.recordConsentAgain(ctx, cur)
		return cur, nil, evictAgain(ctx, i.store, sidecar.ConsentKey(ch.Customer))
	}
	c := &sidecar.Consent{Customer: ch.Customer, Allowed: ch.Allowed, ExpiresAt: expires, SetBy: by.Subject, SetAt: now}
	if err := i.takeConsentChange(ctx, c, sw); err != nil {
		return nil, nil, err
	}
	// The setting in force may be a change whose reply was lost, its
	// caller told it failed: not retried, since this is another change.
	// It is recorded again before this one, with the ends it made.
	i.recordConsentAgain(ctx, cur)
	// The store ends the sessions the new consent no longer covers in the
	// same atomic step: no fault can leave a live session without consent.
	ended, err := i.store.SetConsent(ctx, c)
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, nil, err
	}
	i.consentChanged(ctx, by, c)
	for k := range ended {
		i.ended(ctx, by, &ended[k])
	}
	return c, ended, err
}

// takeConsentChange holds a customer's own consent changes to the budget
// sw sets, across replicas: each writes the events stream and
// the audit trail, and any signed-in customer can make them. A withdrawal
// is never refused (it ends sessions on the customer), and needs a given
// consent before it, so it counts nothing; changes set on a customer's
// behalf are staff actions, under the caller's write budget.
func (i *Impersonation) takeConsentChange(ctx context.Context, c *sidecar.Consent, sw Switches) error {
	if !c.Allowed || !c.SelfSet() {
		return nil
	}
	if sw.MaxConsentChanges == 0 { // no impersonation section: no budget to take from
		return &sidecar.Error{Code: sidecar.EFORBIDDEN, Reason: "impersonation_disabled", Message: "impersonation is turned off in policy data"}
	}
	wait, ok, err := i.store.TakeConsentChange(ctx, c.Customer, sw.MaxConsentChanges, sw.ConsentChangeWindow)
	if err != nil {
		return err
	}
	if !ok {
		return sidecar.RateLimited(wait, "consent given %d times in %s; withdrawing it is always allowed", sw.MaxConsentChanges, sw.ConsentChangeWindow)
	}
	return nil
}

// consentChanged reports consent c as set: the event the mailer follows
// and the audit entry ops read, with c.Reason when nobody chose it.
//
// The records carry the customer, the setting and its time as their Once,
// so recording a setting again (recordConsentAgain) appends nothing when
// the first got through.
func (i *Impersonation) consentChanged(ctx context.Context, by *sidecar.Identity, c *sidecar.Consent) {
	data := map[string]string{"allowed": boolStr(c.Allowed), "set_by": c.SetBy}
	if !c.ExpiresAt.IsZero() {
		data["expires_at"] = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if c.Reason != "" {
		data["reason"] = c.Reason
	}
	at := c.SetAt
	if at.IsZero() {
		at = i.clock()
	}
	once := consentOnce(c, at)
	i.records.Event(ctx, &sidecar.Event{Type: sidecar.EventConsentChanged, Time: at, Customer: c.Customer, Actor: by.Subject, Data: data, Once: once})
	i.records.Audit(ctx, &sidecar.AuditEntry{Time: at, Actor: by.Subject, Action: "consent.set", Customer: c.Customer, Target: c.Customer,
		Outcome: "ok", SelfService: c.SelfSet(), Data: data, Once: once})
}

// consentOnce is the Once of the records of consent c, set at at: the
// customer, the setting and its time.
func consentOnce(c *sidecar.Consent, at time.Time) string {
	expires := ""
	if !c.ExpiresAt.IsZero() {
		expires = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return "consent:" + c.Customer + ":" + at.UTC().Format(time.RFC3339Nano) + ":" + boolStr(c.Allowed) + ":" + expires
}

// recordConsentSetAgain records once more c, a consent as SetConsent
// stored it (ConsentsSet), found by a sweep: the change's records are
// appended after it is stored, and may have been lost with its process.
// The ends it made are kept apart (SessionsEnded).
func (i *Impersonation) recordConsentSetAgain(ctx context.Context, c *sidecar.Consent) {
	if c.SetBy != "" && sidecar.RecordableAgain(c.SetAt, i.clock()) {
		i.consentChanged(ctx, &sidecar.Identity{Subject: c.SetBy}, c)
	}
}

// recordConsentAgain records once more c, the customer's consent as set,
// and the ends of the sessions setting it ended: a change whose store
// reply was lost answered an error before recording them, and its
// caller's retry, finding the consent already so, lands here; so does the
// next change of the consent, whatever it is. Within
// sidecar.AppendOnceWindow of the setting the store still knows whether
// the records got through, and appends them only if not; later it would
// append them twice, so a setting that old is left as it is.
func (i *Impersonation) recordConsentAgain(ctx context.Context, c *sidecar.Consent) {
	if c.SetBy == "" || !sidecar.RecordableAgain(c.SetAt, i.clock()) {
		return
	}
	i.consentChanged(ctx, &sidecar.Identity{Subject: c.SetBy}, c)
	// The setting ended the sessions it did not cover as withdrawn by
	// its setter.
	err := i.recordEndsAgain(ctx, sidecar.SessionFilter{Customer: c.Customer}, func(s *sidecar.Session) bool {
		return s.EndReason == sidecar.EndConsentWithdrawn && s.EndedBy == c.SetBy
	})
	if err != nil {
		i.logger.Error("sessions a retried consent change ended not recorded again", "customer", c.Customer, "error", err)
	}
}

// GetConsent returns the customer's current consent; a customer who never
// consented (or whose consent expired) reads as not allowed. Who set it,
// and when (SetBy, SetAt), is the latest entry of the consent history:
// left out unless policy also lets the caller read that (consent.history).
func (i *Impersonation) GetConsent(ctx context.Context, by *sidecar.Identity, customer string, authorize Authorize) (*sidecar.Consent, error) {
	target := map[string]any{"customer_id": customer}
	if err := authorize("consent.get", target); err != nil {
		return nil, err
	}
	if err := checkID("customer_id", customer); err != nil {
		return nil, err
	}
	c, err := i.store.GetConsent(ctx, customer)
	switch {
	case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		return &sidecar.Consent{Customer: customer}, nil
	case err != nil:
		return nil, err
	}
	// Any refusal, whatever its status, leaves the history out.
	if authorize("consent.history", target) != nil {
		c = &sidecar.Consent{Customer: c.Customer, Allowed: c.Allowed, ExpiresAt: c.ExpiresAt}
	}
	return c, nil
}

// ConsentHistory lists past consent settings, newest first, to whoever
// policy lets read the history (consent.history): who set the consent,
// and when, is more than the consent in force that staff starting a
// session read.
func (i *Impersonation) ConsentHistory(ctx context.Context, by *sidecar.Identity, customer string, p sidecar.Page, authorize Authorize) ([]sidecar.Consent, string, error) {
	if err := authorize("consent.history", map[string]any{"customer_id": customer}); err != nil {
		return nil, "", err
	}
	return i.store.ConsentHistory(ctx, customer, p)
}

// StartRequest asks for a session.
type StartRequest struct {
	Customer  string
	StoreView string
	Reason    string
	Ticket    string
}

// Started is a new session and its single-use redeem code (shown once,
// stored only as a hash).
type Started struct {
	Session   *sidecar.Session
	Code      string
	CodeUntil time.Time
	// Replaced are the staff member's other sessions the start ended
	// (sidecar.SessionStart.Supersede): live ones as replaced, lapsed
	// ones nobody had ended yet with their lapse.
	Replaced []sidecar.Session
}

// startAttempts bounds how often Start reads the facts again when the
// consent changed between reading it and storing the session, or a reload
// landed at every ask of the manage policy (RuleBook.decided).
const startAttempts = 3

// Start begins a session for staff on the customer, once policy has judged
// the facts: customer profile, consent, store view, reason. The store
// applies the same rules again in the atomic step that stores the session.
func (i *Impersonation) Start(ctx context.Context, staff *sidecar.Identity, req StartRequest, authorize Authorize) (*Started, error) {
	if err := checkID("customer_id", req.Customer); err != nil {
		return nil, err
	}
	if req.StoreView != "" {
		if err := checkID("store_view", req.StoreView); err != nil {
			return nil, err
		}
	}
	var err error
	if req.Reason, err = checkText("reason", req.Reason, maxReasonLen); err != nil {
		return nil, err
	}
	if err := checkTicket(req.Ticket); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		st, err := i.start(ctx, staff, req, authorize)
		if sidecar.ErrorCode(err) != sidecar.ECONFLICT || attempt == startAttempts {
			return st, err
		}
	}
}

func (i *Impersonation) start(ctx context.Context, staff *sidecar.Identity, req StartRequest, authorize Authorize) (*Started, error) {
	now := i.clock()
	cs, err := i.store.GetCustomerState(ctx, req.Customer)
	if err != nil {
		return nil, err
	}
	cust, consent := cs.Customer, cs.Consent
	target := map[string]any{
		"customer_id": req.Customer,
		"customer":    customerFacts(req.Customer, cs),
		"consent":     map[string]any{"live": consent.Granted(now)},
		"store_view":  req.StoreView,
		"reason":      req.Reason,
		"ticket":      req.Ticket,
	}
	// The session is stored under the switches (max_session, protected
	// accounts, one session per staff member) of the revision whose manage
	// rules authorized it, never under another's.
	sw, err := i.authorized("impersonation.start", target, authorize)
	if err != nil {
		return nil, err
	}
	if err := enabled(sw); err != nil {
		return nil, err
	}
	if cust == nil { // policy allowed an unknown customer: still nobody to act as
		return nil, &sidecar.Error{Code: sidecar.ENOTFOUND, Field: "customer_id", Message: "customer not found"}
	}
	// Policy let this subject start a session, so it is staff: from now on
	// its own customer account (same subject) cannot be impersonated.
	// Written as RecordStaff does.
	if err := i.assertStaff(ctx, staff.Subject); err != nil {
		return nil, err
	}
	view := req.StoreView
	if view == "" {
		view = cust.DefaultStoreView
	}

	// The session ends with the first of: max_session, the staff member's
	// token, and the customer's consent when it was given until a time.
	expires := now.Add(sw.MaxSession)
	if !staff.ExpiresAt.IsZero() && staff.ExpiresAt.Before(expires) {
		expires = staff.ExpiresAt
	}
	var consentUntil time.Time
	if consent.Granted(now) {
		consentUntil = consent.ExpiresAt
	}
	if !consentUntil.IsZero() && consentUntil.Before(expires) {
		expires = consentUntil
	}
	if !expires.After(now) {
		return nil, sidecar.Errorf(sidecar.EUNAUTHORIZED, "staff token expires now")
	}
	s := &sidecar.Session{
		ID:               "imp_" + randomHex(16),
		Actor:            staff.Subject,
		ActorName:        staff.Name,
		ActorRoles:       slices.Clone(staff.Roles),
		Customer:         cust.ID,
		CustomerName:     cust.Name,
		StoreView:        view,
		Reason:           req.Reason,
		Ticket:           req.Ticket,
		StartedAt:        now,
		ExpiresAt:        expires,
		ConsentExpiresAt: consentUntil,
		IdleTimeout:      sw.IdleTimeout,
	}
	code := randomToken()
	until := now.Add(i.cfg.RedeemTTL)
	if until.After(expires) {
		until = expires
	}
	if sw.OneSessionPerStaff {
		if err := i.evictReplaced(ctx, staff.Subject, now.Add(-sw.MaxSession)); err != nil {
			return nil, err
		}
	}
	replaced, err := i.store.StartSession(ctx, sidecar.SessionStart{
		Session:            s,
		CodeHash:           HashSecret(code),
		CodeExpiresAt:      until,
		ProtectedRoles:     sw.ProtectedRoles,
		ProtectedCustomers: sw.ProtectedCustomers,
		ReplaceLive:        sw.OneSessionPerStaff,
		Limits:             sw.Limits(),
		// Started later than the store's time (this replica's clock runs
		// ahead), the session would outlive max_session, and its code the
		// redeem TTL, on every other replica: the store moves s back.
		StartNoLater: true,
	})
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, err
	}
	if moved := now.Sub(s.StartedAt); moved > 0 {
		until = sidecar.MoveCodeExpiry(until, moved, s.ExpiresAt)
	}
	deputy := &sidecar.Identity{Subject: sidecar.SweepActor}
	for k := range replaced {
		by := staff
		if replaced[k].EndedBy == sidecar.SweepActor { // lapsed: ended as the sweep would have
			by = deputy
		}
		i.ended(ctx, by, &replaced[k])
	}
	if err != nil {
		// The sessions it replaced ended, but replicas were not told. The
		// 503 makes the caller retry, and the retry publishes their
		// evictions again (evictReplaced). The new session's code is never
		// handed out: end it rather than leave it live until its expiry.
		if _, eerr := i.store.EndSession(ctx, s.ID, staff.Subject, sidecar.EndEnded, now, sw.Limits()); eerr != nil && !sidecar.IsUnpublished(eerr) {
			i.logger.Warn("unannounced session not ended", "session", s.ID, "error", eerr)
		}
		return nil, err
	}
	i.started(ctx, s)
	return &Started{Session: s, Code: code, CodeUntil: until, Replaced: replaced}, nil
}

// started records the start of s. The records carry the session's id as
// their Once, so recording a start again (recordStartAgain) appends
// nothing when the first got through.
func (i *Impersonation) started(ctx context.Context, s *sidecar.Session) {
	data := sessionData(s)
	once := startOnce(s.ID)
	i.records.Event(ctx, &sidecar.Event{Type: sidecar.EventImpersonationStarted, Time: s.StartedAt, Customer: s.Customer, Actor: s.Actor, Data: data, Once: once})
	i.records.Audit(ctx, &sidecar.AuditEntry{Time: s.StartedAt, Actor: s.Actor, Action: "impersonation.start", Customer: s.Customer, Target: s.ID,
		Outcome: "ok", Data: data, Once: once})
}

// startOnce is the Once of the records of session id's start.
func startOnce(id string) string { return "impersonation.start:" + id }

// recordStartAgain records once more the start of s, stored by a start
// that may have lost the store's reply and answered an error before
// recording it, or whose records were lost with its process, within
// sidecar.AppendOnceWindow of the start (see sidecar.RecordableAgain).
func (i *Impersonation) recordStartAgain(ctx context.Context, s *sidecar.Session) {
	if sidecar.RecordableAgain(s.StartedAt, i.clock()) {
		i.started(ctx, s)
	}
}

// customerFacts is the profile as the manage policy judges it; a subject
// known as staff reads as protected. Its "spellings" are the other
// spellings of the id (sidecar.Spelling) with a profile or a staff mark,
// present only when there are any: policy's _protected holds for the
// customer when it holds for one of them.
func customerFacts(id string, cs *sidecar.CustomerState) map[string]any {
	c, staff := cs.Customer, cs.Staff
	if c == nil {
		f := map[string]any{"id": id, "exists": false}
		addSpellings(f, cs)
		return f
	}
	views := make([]any, 0, len(c.StoreViews)+1)
	seenDefault := false
	for _, v := range c.StoreViews {
		views = append(views, v)
		seenDefault = seenDefault || v == c.DefaultStoreView
	}
	if !seenDefault && c.DefaultStoreView != "" {
		views = append(views, c.DefaultStoreView)
	}
	roles := make([]any, len(c.Roles))
	for k, r := range c.Roles {
		roles[k] = r
	}
	f := map[string]any{
		"id":                 c.ID,
		"exists":             true,
		"protected":          c.Protected || staff,
		"roles":              roles,
		"org":                c.Org,
		"store_views":        views,
		"default_store_view": c.DefaultStoreView,
	}
	addSpellings(f, cs)
	return f
}

// addSpellings adds to customer facts f the "spellings" of cs: for each,
// its id, whether its profile or staff mark protects it, and its
// profile's roles.
func addSpellings(f map[string]any, cs *sidecar.CustomerState) {
	if len(cs.Spellings) == 0 {
		return
	}
	out := make([]any, len(cs.Spellings))
	for k, v := range cs.Spellings {
		roles := []any{}
		protected := v.Staff
		if v.Customer != nil {
			protected = protected || v.Customer.Protected
			for _, r := range v.Customer.Roles {
				roles = append(roles, r)
			}
		}
		out[k] = map[string]any{"id": v.ID, "protected": protected, "roles": roles}
	}
	f["spellings"] = out
}

// Redeemed is a session whose redeem code was used: Token goes into the
// cookie and is never stored.
type Redeemed struct {
	Session  *sidecar.Session
	Token    string
	Redirect string
}

// Redeem exchanges a single-use code for the session token; host is the
// storefront host the link was used on, where the cookie is set. A used,
// unknown or late code is refused the same way, so codes cannot be probed.
// The code is the credential: the caller may be anonymous (by is nil),
// and policy is asked with no target. A caller whose identity was
// verified is refused unless they are the session's staff member, as the
// check refuses the session's cookie for them: the code is used up, since
// the link has been in someone else's hands, and the audit trail names
// who opened it (EFORBIDDEN, sidecar.ReasonRedeemActorMismatch).
func (i *Impersonation) Redeem(ctx context.Context, by *sidecar.Identity, code, redirect, host string, authorize Authorize) (*Redeemed, error) {
	sw, err := i.authorized("impersonation.redeem", nil, authorize)
	if err != nil {
		return nil, err
	}
	if code == "" {
		return nil, sidecar.Invalid("code", "required")
	}
	if len(code) > 128 {
		return nil, sidecar.Invalid("code", "malformed")
	}
	if host == "" {
		// The session is bound to this host: without one it would be
		// bound to none, or valid on every host.
		return nil, sidecar.Invalid("host", "required: the session is bound to the host the link is used on")
	}
	// Read as the check reads the hosts it honours the session on: a form
	// that a proxy and the application read as different hosts binds it
	// to none, and is refused before the code is spent.
	h, err := sidecar.ParseHost(host)
	if err != nil {
		return nil, sidecar.RefuseHost("host", err)
	}
	host = h.String()
	if !i.cfg.OnStorefront(host) {
		// Refused before the code is spent: a link opened on the wrong
		// host (or sent there) stays usable on the storefront until it
		// expires, and no cookie is set where the session is never honoured.
		return nil, sidecar.Invalid("host", "not a storefront host (impersonation.storefront_hosts): open the redeem link on the storefront")
	}
	target, err := SafeRedirect(redirect, i.cfg.RedirectHosts)
	if err != nil {
		return nil, err
	}
	if err := enabled(sw); err != nil {
		return nil, err
	}
	var redeemer string
	if by != nil {
		redeemer = by.Subject
	}
	token := randomToken()
	s, err := i.store.RedeemSession(ctx, HashSecret(code), HashSecret(token), host, redeemer, sw.Limits())
	switch sidecar.ErrorCode(err) {
	case "":
	case sidecar.EFORBIDDEN:
		if s != nil {
			i.records.Audit(ctx, &sidecar.AuditEntry{Time: i.clock(), Actor: redeemer, Action: "impersonation.redeem",
				Customer: s.Customer, Target: s.ID, Outcome: sidecar.EFORBIDDEN,
				Data: map[string]string{"reason": sidecar.ErrorReason(err), "session_actor": s.Actor}})
			i.logger.Warn("redeem link opened by someone other than its staff member: refused, and the code used up",
				"session", s.ID, "actor", s.Actor, "opened_by", redeemer, "customer", s.Customer)
		}
		return nil, err
	case sidecar.ENOTFOUND:
		return nil, sidecar.Errorf(sidecar.EUNAUTHORIZED, "redeem code unknown, already used or expired")
	case sidecar.ECONFLICT: // redeemed already, or ended (session_<state>)
		return nil, sidecar.Errorf(sidecar.EUNAUTHORIZED, "%s", sidecar.ErrorMessage(err))
	default:
		return nil, err
	}
	i.audit(ctx, &sidecar.Identity{Subject: s.Actor}, "impersonation.redeem", s.Customer, s.ID, nil)
	return &Redeemed{Session: s, Token: token, Redirect: target}, nil
}

// End ends a session at staff's (or the customer's) request. It returns
// the ended session only to a caller policy lets read it, as GetSession
// would; to one who may end it but not read it (the customer acted for,
// or a holder of end_any_login_as_customer alone), it returns nil and no
// error.
//
// Ending a session that has ended is idempotent, and publishes its
// eviction again: the caller may be retrying an End whose write reached
// the store while its answer, or the eviction after it, was lost, and
// replicas that cached the session would otherwise honour it until their
// cache TTL. To a caller who is no party to it, a session that had ended
// reads as GetSession reads it: unknown. An End that another party's
// beats to the store (both read it live) is answered the same way, and
// records the end as the store kept it: by whoever ended it, and why.
func (i *Impersonation) End(ctx context.Context, by *sidecar.Identity, id string, authorize Authorize) (*sidecar.Session, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	l, err := i.rules.Limits(nil)
	if err != nil {
		return nil, err
	}
	stored, err := i.store.GetSession(ctx, id)
	if err != nil {
		return nil, unknown(err, whatSession)
	}
	b := stored.Within(l)
	s := &b
	if err := authorize("impersonation.end", map[string]any{"session": sessionTarget(s)}); err != nil {
		return nil, unseen(err, whatSession)
	}
	// Only an end the store holds makes this End one of an ended session.
	// One that has lapsed by this replica's clock alone is ended all the
	// same: the store judges lapse at the earlier of the two clocks and
	// ends a lapsed session as lapsed, and a replica whose clock runs
	// ahead would otherwise leave it live for the others.
	if !s.EndedAt.IsZero() {
		return i.endedAlready(ctx, s, authorize)
	}
	reason := sidecar.EndEnded
	if by.Subject != s.Actor {
		reason = sidecar.EndRevoked
	}
	at := i.clock()
	ended, err := i.store.EndSession(ctx, id, by.Subject, reason, at, l)
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, err
	}
	if ended.EndedBy != by.Subject || ended.EndReason != reason || !ended.EndedAt.Equal(at) {
		// Another party (or the sweep) ended it since it was read live,
		// or the store found it lapsed: its end is theirs to be recorded
		// as, and this End is one of an ended session. An eviction left
		// unpublished is published again by the caller's retry.
		if err != nil {
			i.recordEndAgain(ctx, ended)
			return nil, err
		}
		return i.endedAlready(ctx, ended, authorize)
	}
	i.ended(ctx, by, ended)
	if err != nil {
		return nil, err
	}
	return shown(ended, readable(ended, authorize)), nil
}

// endedAlready answers End of session s, found ended: an ended session
// stays as it ended. Its end is recorded again, as whoever the store kept
// as having ended it, and its eviction published again.
func (i *Impersonation) endedAlready(ctx context.Context, s *sidecar.Session, authorize Authorize) (*sidecar.Session, error) {
	if err := spend(ctx); err != nil { // nothing to narrow: see writeBudgetKey
		return nil, err
	}
	i.recordEndAgain(ctx, s)
	if s.TokenHash != "" { // else never redeemed: cached nowhere
		if err := evictAgain(ctx, i.store, sidecar.SessionKey(s.TokenHash)); err != nil {
			return nil, err
		}
	}
	err := readable(s, authorize)
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		return nil, err
	}
	return shown(s, err), nil
}

// shown is s when the caller may read it (refused is nil), else nil:
// whatever the refusal, the session is left out.
func shown(s *sidecar.Session, refused error) *sidecar.Session {
	if refused != nil {
		return nil
	}
	return s
}

// evictReplaced publishes again the evictions of actor's sessions started
// since that a new session replaced, or that ended as lapsed (a start
// ends those too, and the sweep's evictions are best effort), and records
// their ends again: a start whose store write ended a session while its
// eviction, or its reply, was lost answered 503 (recording nothing when
// the reply was lost), and this is its retry. The two newest sessions are
// the ones that matter (the one replaced, and the one that start stored
// and ended); a page looks past a few more.
func (i *Impersonation) evictReplaced(ctx context.Context, actor string, since time.Time) error {
	ss, _, err := i.store.ListSessions(ctx, sidecar.SessionFilter{Actor: actor, From: since, Page: sidecar.Page{Limit: replacedLookBack}})
	if err != nil {
		return err
	}
	var keys []string
	for k := range ss {
		s := &ss[k]
		if s.EndReason != sidecar.EndReplaced && s.EndedBy != sidecar.SweepActor {
			continue
		}
		i.recordEndAgain(ctx, s)
		if s.TokenHash != "" {
			keys = append(keys, sidecar.SessionKey(s.TokenHash))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return evictAgain(ctx, i.store, keys...)
}

// replacedLookBack is how many of an actor's newest sessions a start
// looks through for replaced ones to evict again.
const replacedLookBack = 10

// evictAgain tells every replica to drop keys again, for a retried narrowing
// write that found nothing left to change. A failure is the caller's to
// retry (Unpublished, 503): the change it asked for may not have reached
// the other replicas.
func evictAgain(ctx context.Context, inv sidecar.Invalidator, keys ...string) error {
	if err := inv.Invalidate(ctx, keys...); err != nil {
		return sidecar.Unpublished(err)
	}
	return nil
}

// getSession reads a session as the active policy data's session limits
// bound it (sidecar.Session.Within): ended, expired or idle as the check
// path judges it, whether or not the sweep has ended it yet.
func (i *Impersonation) getSession(ctx context.Context, id string) (*sidecar.Session, error) {
	l, err := i.rules.Limits(nil)
	if err != nil {
		return nil, err
	}
	s, err := i.store.GetSession(ctx, id)
	if err != nil {
		return nil, err
	}
	b := s.Within(l)
	return &b, nil
}

// GetSession returns a session by id, once policy lets by list its
// actor's sessions.
func (i *Impersonation) GetSession(ctx context.Context, by *sidecar.Identity, id string, authorize Authorize) (*sidecar.Session, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	s, err := i.getSession(ctx, id)
	if err != nil {
		return nil, unknown(err, whatSession)
	}
	if err := readable(s, authorize); err != nil {
		return nil, err
	}
	return s, nil
}

// readable asks policy whether the caller may read s: whether it may list
// the sessions of s's actor. A caller refused as no party to s is told s
// is unknown.
func readable(s *sidecar.Session, authorize Authorize) error {
	return unseen(authorize("impersonation.list", map[string]any{"actor": s.Actor, "session": sessionTarget(s)}), whatSession)
}

// sessionTarget is what policy judges an action on a session by: its
// parties as stored.
func sessionTarget(s *sidecar.Session) map[string]any {
	return map[string]any{"id": s.ID, "actor": s.Actor, "subject": s.Customer}
}

// List returns sessions (live or all) matching f, once policy lets by
// list those of f's actor (all actors when f names none).
func (i *Impersonation) List(ctx context.Context, by *sidecar.Identity, f sidecar.SessionFilter, authorize Authorize) ([]sidecar.Session, string, error) {
	if err := authorize("impersonation.list", map[string]any{"actor": f.Actor}); err != nil {
		return nil, "", err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return nil, "", sidecar.Invalid("from", "must be before to")
	}
	var err error
	if f.Limits, err = i.rules.Limits(nil); err != nil {
		return nil, "", err
	}
	ss, next, err := i.store.ListSessions(ctx, f)
	for k := range ss {
		ss[k] = ss[k].Within(f.Limits)
	}
	return ss, next, err
}

// Log is the session log, read from the audit trail: one entry per session
// started (filtered by actor, customer and start time), shown with how and
// by whom it ended. A session the store no longer keeps (past retention)
// is rebuilt from what its audit entry recorded. Policy decides who reads
// it.
func (i *Impersonation) Log(ctx context.Context, by *sidecar.Identity, f sidecar.SessionFilter, authorize Authorize) ([]sidecar.Session, string, error) {
	if err := authorize("impersonation.log", map[string]any{"actor": f.Actor, "customer_id": f.Customer}); err != nil {
		return nil, "", err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return nil, "", sidecar.Invalid("from", "must be before to")
	}
	entries, next, err := i.store.ReadAudit(ctx, sidecar.StreamFilter{
		Type: "impersonation.start", Actor: f.Actor, Customer: f.Customer, From: f.From, To: f.To, Page: f.Page,
	})
	if err != nil {
		return nil, "", err
	}
	out := make([]sidecar.Session, 0, len(entries))
	for _, e := range entries {
		s, err := i.getSession(ctx, e.Target)
		switch {
		case err == nil:
			out = append(out, *s)
		case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
			out = append(out, sessionFromAudit(e))
		default:
			return nil, "", err
		}
	}
	return out, next, nil
}

func sessionFromAudit(e sidecar.AuditEntry) sidecar.Session {
	s := sidecar.Session{
		ID: e.Target, Actor: e.Actor, ActorName: e.Data["actor_name"], Customer: e.Customer,
		StoreView: e.Data["store_view"], Reason: e.Data["reason"], Ticket: e.Data["ticket"], StartedAt: e.Time,
	}
	s.ExpiresAt, _ = time.Parse(time.RFC3339, e.Data["expires_at"])
	return s
}

// Sweep ends the sessions that expired, went idle or outlived their
// consent without anyone ending them, those whose customer policy data
// now protects or whose actor's roles it no longer lets impersonate, and
// reports consents that lapsed,
// each with its event: once across replicas, since the store hands each
// lapse to one sweeper.
func (i *Impersonation) Sweep(ctx context.Context) error {
	now := i.clock()
	deputy := &sidecar.Identity{Subject: sidecar.SweepActor}
	aerr := i.recordSweptAgain(ctx, now)
	// Sessions lapse within the current max_session and idle_timeout
	// too (with none readable, within what each stored at its start):
	// policy data that lowered them denied the sessions they cut at their
	// next request; this ends and records them as expired or idle.
	sw, serr := i.Switches()
	ended, err := i.store.EndLapsedSessions(ctx, now, sw.Limits())
	for k := range ended {
		i.ended(ctx, deputy, &ended[k])
	}
	// Policy data that now protects a customer denied its sessions at
	// their next request; this records their end.
	var perr error
	werr := err // the store's ends that failed, perhaps made
	if serr != nil {
		perr = serr
	} else {
		ended, perr = i.store.EndProtectedSessions(ctx, protection(sw), now)
		werr = errors.Join(werr, perr)
		for k := range ended {
			i.ended(ctx, deputy, &ended[k])
		}
		// Policy judges the actor's roles only while impersonation is on:
		// with the switch off it denies for that reason, and the sessions
		// may resume when it is turned back on.
		if sw.Enabled {
			var uerr error
			ended, uerr = i.store.EndUnpermittedSessions(ctx, sw.ImpersonatingRoles, now)
			for k := range ended {
				i.ended(ctx, deputy, &ended[k])
			}
			perr, werr = errors.Join(perr, uerr), errors.Join(werr, uerr)
		}
	}
	if werr != nil {
		i.sweepFailed(now)
	}
	// The store keeps what it takes, as taken at now: a take whose reply
	// was lost is read back by the next sweep of any replica
	// (recordSweptAgain).
	lapsed, cerr := i.store.TakeLapsedConsents(ctx, now)
	for k := range lapsed {
		if i.keptFirst(lapseOnce(&lapsed[k]), now) {
			i.consentLapsed(ctx, &lapsed[k])
		}
	}
	return errors.Join(aerr, err, perr, cerr)
}

// keptFirst reports whether this process recorded the change whose
// records carry once no time since keptFrom, and remembers it, as
// recorded by the sweep at now.
func (i *Impersonation) keptFirst(once string, now time.Time) bool {
	i.sweepMu.Lock()
	defer i.sweepMu.Unlock()
	if _, done := i.keptDone[once]; done {
		return false
	}
	if i.keptDone == nil {
		i.keptDone = make(map[string]time.Time)
	}
	i.keptDone[once] = now
	return true
}

// lapseOnce is the Once of consent c's lapse: a consent lapses at most
// once at a time (one given again must expire later).
func lapseOnce(c *sidecar.Consent) string {
	return onceOf("consent.expired", c.Customer, c.ExpiresAt.UTC().Format(time.RFC3339Nano))
}

// consentLapsed records that consent c lapsed: its event and its audit
// entry. The records carry the customer and the expiry as their Once (a
// consent lapses at most once at a time: one given again must expire
// later), so recording a lapse again (recordSweptAgain) appends nothing
// when the first got through.
func (i *Impersonation) consentLapsed(ctx context.Context, c *sidecar.Consent) {
	data := map[string]string{"expires_at": c.ExpiresAt.UTC().Format(time.RFC3339)}
	at, once := i.clock(), lapseOnce(c)
	i.records.Event(ctx, &sidecar.Event{Type: sidecar.EventConsentExpired, Time: at, Customer: c.Customer, Actor: sidecar.SweepActor, Data: data, Once: once})
	// A lapse records no one's action, and a customer makes one as
	// often as they set a consent that lapses: self-service, whoever
	// set it (setting it on behalf is recorded apart, as consent.set).
	i.records.Audit(ctx, &sidecar.AuditEntry{Time: at, Actor: sidecar.SweepActor, Action: "consent.expired", Customer: c.Customer, Target: c.Customer,
		Outcome: "ok", SelfService: true, Data: data, Once: once})
}

// sweepFailed remembers that the sweep at now may have ended sessions
// without recording them.
func (i *Impersonation) sweepFailed(now time.Time) {
	i.sweepMu.Lock()
	defer i.sweepMu.Unlock()
	i.sweepFails++
	if i.sweepLost.IsZero() || now.Before(i.sweepLost) {
		i.sweepLost = now
	}
}

// recordSweptAgain records once more the ends of the sessions Deputy
// ended since the earliest failed sweep (sweepLost), and forgets that
// sweep once it has, and the lapses of the consents taken, the consents
// set, the starts of the sessions started and the ends of the sessions
// ended, by any write on any replica, since keptFrom. The sessions a
// sweep ends were live until it, or lapsed at most a sweep's lag before:
// they started within max_session and the append-once window before it,
// the sessions read.
// The store keeps the consents taken, as taken at the sweep's now, the
// consents set, by their setting, the sessions started, by their start,
// and the sessions ended, by their end, for the append-once window; what
// a sweep reads back is what was taken, set, started or ended since the
// last (one sweep interval before it: a write made at an earlier now may
// land late), so a lapse, a setting, a start or an end costs each
// replica one more record at most. The first sweep of a process reads
// back the whole window, as its predecessor may have lost a reply, or
// stopped with records not appended, and left no trace.
func (i *Impersonation) recordSweptAgain(ctx context.Context, now time.Time) error {
	i.sweepMu.Lock()
	if !i.swept {
		i.swept = true
		back := now.Add(-sidecar.AppendOnceWindow)
		if i.sweepLost.IsZero() || back.Before(i.sweepLost) {
			i.sweepLost = back
		}
		i.keptFrom = back
	}
	since, fails, from := i.sweepLost, i.sweepFails, i.keptFrom
	i.sweepMu.Unlock()
	lapsed, err := i.store.LapsedConsentsTaken(ctx, from)
	if err != nil {
		return err
	}
	for k := range lapsed {
		if i.keptFirst(lapseOnce(&lapsed[k]), now) {
			i.consentLapsed(ctx, &lapsed[k])
		}
	}
	set, err := i.store.ConsentsSet(ctx, from)
	if err != nil {
		return err
	}
	for k := range set {
		if c := &set[k]; i.keptFirst(consentOnce(c, c.SetAt), now) {
			i.recordConsentSetAgain(ctx, c)
		}
	}
	// Starts before ends: the session log holds a session's start before
	// its end.
	started, err := i.store.SessionsStarted(ctx, from)
	if err != nil {
		return err
	}
	for k := range started {
		if s := &started[k]; i.keptFirst(startOnce(s.ID), now) {
			i.recordStartAgain(ctx, s)
		}
	}
	ended, err := i.store.SessionsEnded(ctx, from)
	if err != nil {
		return err
	}
	for k := range ended {
		if s := &ended[k]; i.keptFirst(endOnce(s.ID), now) {
			i.recordEndAgain(ctx, s)
		}
	}
	i.sweepMu.Lock()
	i.keptFrom = now.Add(-max(i.cfg.SweepInterval, keptOverlap))
	for once, at := range i.keptDone {
		if at.Before(i.keptFrom) {
			delete(i.keptDone, once)
		}
	}
	i.sweepMu.Unlock()
	if since.IsZero() {
		return nil
	}
	sw, err := i.Switches()
	if err != nil {
		return err
	}
	f := sidecar.SessionFilter{From: since.Add(-sw.MaxSession - sidecar.AppendOnceWindow)}
	err = i.recordEndsAgain(ctx, f, func(s *sidecar.Session) bool {
		return s.EndedBy == sidecar.SweepActor && !s.EndedAt.Before(since)
	})
	if err != nil {
		return err
	}
	i.sweepMu.Lock()
	if i.sweepFails == fails { // no sweep failed meanwhile
		i.sweepLost = time.Time{}
	}
	i.sweepMu.Unlock()
	return nil
}

// RunSweeper sweeps every SweepInterval until ctx ends.
func (i *Impersonation) RunSweeper(ctx context.Context) {
	t := time.NewTicker(i.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := i.Sweep(ctx); err != nil && ctx.Err() == nil {
			i.logger.Warn("impersonation sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ended records the end of s, by whom and why. The records carry the
// session's id as their Once, so recording an end again (recordEndAgain)
// appends nothing when the first got through.
//
// The start's records may be missing: a start whose reply was lost
// answered an error before recording it, and one whose process stopped
// before the recorder appended them answered 201. Sweeps record such a
// start (recordSweptAgain), but the end may come first: it records the
// start first, appending nothing when the start's records got through,
// so the session log and the events stream never hold an end without
// its start before it.
func (i *Impersonation) ended(ctx context.Context, by *sidecar.Identity, s *sidecar.Session) {
	i.recordStartAgain(ctx, s)
	data := sessionData(s)
	data["ended_by"] = s.EndedBy
	data["end_reason"] = s.EndReason
	at := s.EndedAt
	if at.IsZero() {
		at = i.clock()
	}
	once := endOnce(s.ID)
	i.records.Event(ctx, &sidecar.Event{Type: sidecar.EventImpersonationEnded, Time: at, Customer: s.Customer, Actor: s.Actor, Data: data, Once: once})
	i.records.Audit(ctx, &sidecar.AuditEntry{Time: at, Actor: by.Subject, Action: "impersonation.end", Customer: s.Customer, Target: s.ID,
		Outcome: "ok", Data: data, Once: once})
}

// endOnce is the Once of the records of session id's end: a session
// ends once.
func endOnce(id string) string { return "impersonation.end:" + id }

// recordEndAgain records once more the end of s, found ended: the End
// that ended it may have lost the store's reply and answered an error
// before recording it, and its caller's retry lands here. Within
// sidecar.AppendOnceWindow of the end the store still knows whether the
// records got through, and appends them only if not; later it would
// append them twice, so an end that old is left as it is.
func (i *Impersonation) recordEndAgain(ctx context.Context, s *sidecar.Session) {
	if !sidecar.RecordableAgain(s.EndedAt, i.clock()) {
		return
	}
	i.ended(ctx, &sidecar.Identity{Subject: s.EndedBy}, s)
}

// recordEndsAgain records once more (recordEndAgain) the ends of the
// sessions f selects that match: a write that ended sessions and lost its
// store's reply answered an error before recording them, and its retry
// finds them ended, nothing left for it to end. Recording again an end
// whose records got through appends nothing, so match only narrows what
// is recorded again and no clock decides which ends were that write's.
// It reads every page f selects.
func (i *Impersonation) recordEndsAgain(ctx context.Context, f sidecar.SessionFilter, match func(*sidecar.Session) bool) error {
	f.Limit = sidecar.MaxPageLimit
	for {
		ss, next, err := i.store.ListSessions(ctx, f)
		if err != nil {
			return err
		}
		for k := range ss {
			if s := &ss[k]; !s.EndedAt.IsZero() && match(s) {
				i.recordEndAgain(ctx, s)
			}
		}
		if next == "" {
			return nil
		}
		f.Cursor = next
	}
}

func sessionData(s *sidecar.Session) map[string]string {
	d := map[string]string{
		"session":    s.ID,
		"actor":      s.Actor,
		"store_view": s.StoreView,
		"expires_at": s.ExpiresAt.UTC().Format(time.RFC3339),
	}
	if s.ActorName != "" {
		d["actor_name"] = s.ActorName
	}
	if s.Reason != "" {
		d["reason"] = s.Reason
	}
	if s.Ticket != "" {
		d["ticket"] = s.Ticket
	}
	return d
}

// event and audit never fail the action they describe: the state change
// already happened, so the recorder appends its record, retrying.
func (i *Impersonation) event(ctx context.Context, typ, customer, actor string, data map[string]string) {
	i.records.Event(ctx, &sidecar.Event{Type: typ, Time: i.clock(), Customer: customer, Actor: actor, Data: data})
}

func (i *Impersonation) audit(ctx context.Context, by *sidecar.Identity, action, customer, target string, data map[string]string) {
	i.appendAudit(ctx, &sidecar.AuditEntry{Actor: by.Subject, Action: action, Customer: customer, Target: target, Data: data})
}

// appendAudit records a, done now and ended ok.
func (i *Impersonation) appendAudit(ctx context.Context, a *sidecar.AuditEntry) {
	a.Time, a.Outcome = i.clock(), "ok"
	i.records.Audit(ctx, a)
}

// RedeemURL is the path of the redeem link for code.
func RedeemURL(prefix, code, redirect string) string {
	q := url.Values{"code": {code}}
	if redirect != "" {
		q.Set("redirect", redirect)
	}
	return prefix + "impersonation/redeem?" + q.Encode()
}

// HashSecret is how session tokens and redeem codes are stored: SHA-256,
// hex. The secrets are 256-bit random, so no salt or stretching is needed.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// randomToken is 256 bits from crypto/rand, URL-safe.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on broken systems)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
