package delegation

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/strictjson"
)

// Defaults of the reseller config section.
const (
	DefaultMaxImportRows  = 10000
	DefaultMaxImportBytes = 1 << 20
)

// ResellerConfig is the "reseller" section of Deputy's configuration:
// bounds on bulk imports. Who counts as reseller staff is policy data
// (data.deputy.reseller, read as ResellerRules).
type ResellerConfig struct {
	MaxImportRows  int   `yaml:"max_import_rows" usage:"rows one bulk assignment import may carry"`
	MaxImportBytes int64 `yaml:"max_import_bytes" usage:"bytes one bulk assignment import may carry (at most 64 MiB)"`
}

// ResellerDefaults returns the reseller section with every default set.
func ResellerDefaults() ResellerConfig {
	var c ResellerConfig
	c.SetDefaults()
	return c
}

// WithDefaults returns c with every unset field at its default.
func (c ResellerConfig) WithDefaults() ResellerConfig {
	c.SetDefaults()
	return c
}

// SetDefaults fills every unset field with its default.
func (c *ResellerConfig) SetDefaults() {
	if c.MaxImportRows == 0 {
		c.MaxImportRows = DefaultMaxImportRows
	}
	if c.MaxImportBytes == 0 {
		c.MaxImportBytes = DefaultMaxImportBytes
	}
}

// Validate checks the section; errors name the field.
func (c ResellerConfig) Validate() error {
	switch {
	case c.MaxImportRows < 0:
		return sidecar.Invalid("reseller.max_import_rows", "must not be negative")
	case c.MaxImportBytes < 0:
		return sidecar.Invalid("reseller.max_import_bytes", "must not be negative")
	case c.MaxImportBytes > 64<<20:
		return sidecar.Invalid("reseller.max_import_bytes", "must be at most 64 MiB")
	}
	return nil
}

// ResellerState is the part of the store reseller assignments need. Its
// only write is the conditional ChangeAssignments: a change lands only on
// the facts policy judged.
type ResellerState interface {
	GetAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error)
	GetAssignments(ctx context.Context, customers []string) ([]*sidecar.Assignment, error)
	ChangeAssignments(ctx context.Context, cs []sidecar.AssignmentChange) (conflicts []int, err error)
	RemovedAssignment(ctx context.Context, customer string) (*sidecar.Assignment, error)
	TakeAssignmentRows(ctx context.Context, domain string, rows, limit int, window time.Duration) (time.Duration, bool, error)
	// AssignmentsChanged reads back the writes kept for the records
	// sweep (RecordAgain).
	AssignmentsChanged(ctx context.Context, since time.Time) ([]sidecar.AssignmentWrite, error)
	AssignmentsByDomain(ctx context.Context, domain string, p sidecar.Page) ([]sidecar.Assignment, string, error)
	// GetCustomerState reads the customer's profile and staff mark, which
	// policy judges a put or an import by (a protected account is put
	// into no domain).
	GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error)
	sidecar.EventLog
	sidecar.AuditLog
	sidecar.Invalidator // to evict again on a retried delete
}

// assignmentTries bounds how often a change is read, judged and written
// again when another change to the same customer landed between its read
// and its write.
const assignmentTries = 3

// Resellers owns reseller domain assignments: one customer, one domain.
// Who may change which domain is the manage policy's, asked through the
// Authorize each method takes with the domains as stored; Resellers keeps
// the records well formed and announces changes.
//
// A change is written only while the customer is still where policy saw
// it. When another change landed in between, the call reads again, asks
// policy again on the new facts and writes on those, a bounded number of
// times: the caller gets the answer it would have got had the two calls
// come one after the other (the write, or policy's refusal), and a
// conflict (409) only when the customer keeps changing under it.
type Resellers struct {
	rules   *RuleBook // the reseller limits of the policy data
	store   ResellerState
	cfg     ResellerConfig
	clock   sidecar.Clock
	logger  *slog.Logger
	records *Recorder // appends the audit trail's records
	kept    keptSweep // how far RecordAgain has got
}

// ResellerOption configures Resellers.
type ResellerOption func(*Resellers)

// WithResellerClock sets the clock (default time.Now).
func WithResellerClock(c sidecar.Clock) ResellerOption { return func(r *Resellers) { r.clock = c } }

// WithResellerLogger sets the logger for audit failures (default slog.Default()).
func WithResellerLogger(l *slog.Logger) ResellerOption { return func(r *Resellers) { r.logger = l } }

// WithResellerRecorder sets the recorder that appends audit entries (see
// WithImpersonationRecorder).
func WithResellerRecorder(rec *Recorder) ResellerOption {
	return func(r *Resellers) { r.records = rec }
}

// WithResellerPolicyData reads the reseller limits
// (data.deputy.reseller.max_domain_assignments and
// max_assignment_rows_per_hour) from the policy data; without it, or when
// the data has no reseller section, the defaults apply.
func WithResellerPolicyData(data PolicyData) ResellerOption {
	return func(r *Resellers) { r.rules = NewRuleBook(data) }
}

// NewResellers returns the assignment lifecycle on store.
func NewResellers(store ResellerState, cfg ResellerConfig, opts ...ResellerOption) *Resellers {
	r := &Resellers{store: store, cfg: cfg.WithDefaults(), clock: time.Now, logger: slog.Default(), rules: NewRuleBook(nil)}
	for _, o := range opts {
		o(r)
	}
	if r.records == nil {
		r.records = NewRecorder(store, r.logger)
	}
	return r
}

// Config returns the effective configuration.
func (r *Resellers) Config() ResellerConfig { return r.cfg }

// Get returns the customer's assignment once policy lets by read it;
// ENOTFOUND when unassigned.
func (r *Resellers) Get(ctx context.Context, by *sidecar.Identity, customer string, authorize Authorize) (*sidecar.Assignment, error) {
	a, target, err := r.current(ctx, customer)
	if err != nil {
		return nil, err
	}
	target["domain"] = domainOf(by)
	if err := authorize("reseller.assignment.get", target); err != nil {
		if inAnotherDomain(err) {
			a = nil
		} else {
			return nil, err
		}
	}
	if a == nil {
		return nil, sidecar.Errorf(sidecar.ENOTFOUND, "customer %s is not assigned", customer)
	}
	return a, nil
}

// inAnotherDomain reports whether policy refused a caller who may act on
// its own domain's assignments because the customer is in another domain.
// Get and Delete answer such a customer as unassigned, word for word: a
// refusal would tell reseller staff which customer ids other domains hold,
// which the check path never tells (customer_not_in_domain there for
// both). A caller without the permission is refused as before, and one
// whose permission covers the other domain is never refused this way. A
// Put into one's own domain stays refused: it assigns an unassigned
// customer, so it cannot answer both alike, but it probes only by
// claiming, which is written and audited, never quietly.
func inAnotherDomain(err error) bool {
	return sidecar.ErrorCode(err) == sidecar.EFORBIDDEN && sidecar.ErrorMessage(err) == "customer_not_in_domain"
}

// current returns the customer's assignment, nil when unassigned, and the
// facts policy judges a change by: the customer and the domain it is
// stored in now, never one a client names.
func (r *Resellers) current(ctx context.Context, customer string) (*sidecar.Assignment, map[string]any, error) {
	if err := validCustomer(customer); err != nil {
		return nil, nil, err
	}
	target := map[string]any{"customer": customer}
	a, err := r.store.GetAssignment(ctx, customer)
	switch {
	case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		return nil, target, nil
	case err != nil:
		return nil, nil, err
	}
	target["current_domain"] = a.Domain
	return a, target, nil
}

// profile is customer's profile as Login as Customer judges it
// (customerFacts): policy refuses to put a protected account into any
// domain. A subject known as staff reads as protected, with or without a
// profile.
func (r *Resellers) profile(ctx context.Context, customer string) (map[string]any, error) {
	cs, err := r.store.GetCustomerState(ctx, customer)
	if err != nil {
		return nil, err
	}
	f := customerFacts(customer, cs)
	f["protected"] = cs.Staff || (cs.Customer != nil && cs.Customer.Protected)
	return f, nil
}

// validCustomer checks an assigned customer id: a reference of the
// characters on which the loose collations of upstreams agree up to
// letter case (sidecar.ValidAssignedID).
func validCustomer(customer string) error {
	if err := sidecar.ValidAssignedID("customer", customer); err != nil {
		return err
	}
	return ValidRef("customer", customer)
}

// Put assigns customer to domain on behalf of by's reseller organisation,
// once policy lets by move the customer out of its current domain and
// into domain.
func (r *Resellers) Put(ctx context.Context, by *sidecar.Identity, customer, domain string, authorize Authorize) (*sidecar.Assignment, error) {
	var (
		a     *sidecar.Assignment
		taken bool
	)
	err := retryMoved(func() error {
		prev, target, err := r.current(ctx, customer)
		if err != nil {
			return err
		}
		target["domain"] = domain
		if target["profile"], err = r.profile(ctx, customer); err != nil {
			return err
		}
		lim, err := r.authorized("reseller.assignment.put", target, authorize)
		if err != nil {
			return err
		}
		if err := ValidRef("domain", domain); err != nil {
			return err
		}
		if !taken {
			if err := r.takeRows(ctx, by, domain, 1, lim); err != nil {
				return err
			}
			taken = true
		}
		a = &sidecar.Assignment{Customer: customer, Reseller: resellerOf(by), Domain: domain, UpdatedBy: by.Subject, UpdatedAt: r.clock()}
		if writtenBefore(prev, a) {
			// by's own put, written already: a retry of one whose reply
			// was lost, or which answered Unpublished. Kept as written, it
			// carries the first write's time and so its Once, and is
			// recorded once, whether the first was recorded live or is
			// read back by a sweep (RecordAgain); the store keeps nothing
			// new for it, and the change publishes again.
			a = prev
		}
		return r.change(ctx, sidecar.AssignmentChange{Customer: customer, From: domainIn(prev), To: a, MaxInDomain: lim.MaxDomainAssignments,
			Change: sidecar.ChangePut, Via: domainOf(by)})
	})
	// Unpublished: the move stands but replicas were not told; it is
	// recorded as done, and the 503 makes the caller retry, which finds
	// the same assignment written (writtenBefore), records nothing new
	// and publishes again.
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, err
	}
	r.records.Audit(ctx, putAudit(a))
	r.changed(ctx, a, sidecar.ChangePut)
	return a, err
}

// writtenBefore reports whether prev, the assignment stored, is the write
// to as its writer made it before, within sidecar.AppendOnceWindow (the
// store tells whether its records got through as long as that): the same
// customer, reseller and domain, by the same caller. Any other is a new
// write: another domain, reseller or caller, an assignment written again
// after a delete (prev is then nil), or one past the window.
func writtenBefore(prev, to *sidecar.Assignment) bool {
	return prev != nil && prev.Customer == to.Customer && prev.Reseller == to.Reseller && prev.Domain == to.Domain &&
		prev.UpdatedBy == to.UpdatedBy && !prev.UpdatedAt.After(to.UpdatedAt) && sidecar.RecordableAgain(prev.UpdatedAt, to.UpdatedAt)
}

// putAudit is the audit entry of a written by a put. Its Once is the
// write's (assignmentOnce), so recording a put again (RecordAgain)
// appends nothing when the first got through.
func putAudit(a *sidecar.Assignment) *sidecar.AuditEntry {
	return &sidecar.AuditEntry{Time: a.UpdatedAt, Actor: a.UpdatedBy, Action: "reseller.assignment.put", Customer: a.Customer, Target: a.Customer,
		Outcome: "ok", Data: map[string]string{"domain": a.Domain}, Once: assignmentOnce(a)}
}

// Delete removes the customer from its domain once policy lets by; an
// absent assignment is not an error (DELETE is idempotent). Nor is, for a
// caller who may delete its own domain's assignments, a customer of
// another domain: from by's domain there is nothing to delete, and a
// refusal would tell which customer ids other domains hold (see
// inAnotherDomain). Nothing is changed or audited then.
//
// A delete that finds nothing to delete may retry one whose write reached
// the store while its answer was lost, before it was recorded: it records
// again the removal the store still keeps (recordDeleteAgain).
func (r *Resellers) Delete(ctx context.Context, by *sidecar.Identity, customer string, authorize Authorize) error {
	var prev *sidecar.Assignment
	err := retryMoved(func() error {
		var (
			target map[string]any
			err    error
		)
		if prev, target, err = r.current(ctx, customer); err != nil {
			return err
		}
		target["domain"] = domainOf(by)
		if err := authorize("reseller.assignment.delete", target); err != nil {
			if !inAnotherDomain(err) {
				return err
			}
			prev = nil
		}
		if prev == nil {
			// Nothing to delete, perhaps because this retries a delete
			// whose write reached the store while its answer, records and
			// eviction were lost: record it again, and evict again, so no
			// replica keeps it cached. It narrows nothing, so it is
			// counted (see writeBudgetKey).
			if err := spend(ctx); err != nil {
				return err
			}
			r.recordDeleteAgain(ctx, customer)
			return evictAgain(ctx, r.store, sidecar.AssignmentKey(customer))
		}
		prev.RemovedBy, prev.RemovedAt = by.Subject, r.clock()
		return r.change(ctx, sidecar.AssignmentChange{Customer: customer, From: prev.Domain, By: prev.RemovedBy, At: prev.RemovedAt})
	})
	// Unpublished: deleted, but replicas were not told; recorded as done,
	// and the retry finds nothing to delete and evicts again.
	if prev == nil || err != nil && !sidecar.IsUnpublished(err) {
		return err
	}
	r.deleted(ctx, prev)
	return err
}

// deleted records the removal of a, as removed (RemovedAt, RemovedBy),
// under the customer as assigned, whatever variant of its id (FoldID) the
// caller named. The records carry a Once made of the customer and the
// time of the removal, so recording a removal again (recordDeleteAgain)
// appends nothing when the first got through.
func (r *Resellers) deleted(ctx context.Context, a *sidecar.Assignment) {
	audit, event := deletedRecords(a)
	r.records.Audit(ctx, audit)
	r.records.Event(ctx, event)
}

// deletedRecords are the audit entry and the event of a removed.
func deletedRecords(a *sidecar.Assignment) (*sidecar.AuditEntry, *sidecar.Event) {
	once := onceOf("reseller.assignment.delete", sidecar.FoldID(a.Customer), strconv.FormatInt(a.RemovedAt.UnixNano(), 10))
	return &sidecar.AuditEntry{Time: a.RemovedAt, Actor: a.RemovedBy, Action: "reseller.assignment.delete", Customer: a.Customer,
			Target: a.Customer, Outcome: "ok", Data: map[string]string{"domain": a.Domain}, Once: once},
		&sidecar.Event{Type: sidecar.EventAssignmentChanged, Time: a.RemovedAt, Customer: a.Customer, Actor: a.RemovedBy,
			Data: map[string]string{"domain": a.Domain, "change": sidecar.ChangeDelete}, Once: once}
}

// recordDeleteAgain records once more the removal of customer's
// assignment the store still keeps (RemovedAssignment), when recent
// enough for the store to tell whether its records got through
// (sidecar.RecordableAgain). A failed read is logged: the eviction is what the
// retry answers.
func (r *Resellers) recordDeleteAgain(ctx context.Context, customer string) {
	a, err := r.store.RemovedAssignment(ctx, customer)
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		return
	}
	if err != nil {
		r.logger.Error("removed assignment not read to record a retried delete", "customer", customer, "error", err)
		return
	}
	if sidecar.RecordableAgain(a.RemovedAt, r.clock()) {
		r.deleted(ctx, a)
	}
}

// List returns one page of the assignments of the domain by signed in
// through, ordered by customer.
func (r *Resellers) List(ctx context.Context, by *sidecar.Identity, p sidecar.Page, authorize Authorize) ([]sidecar.Assignment, string, error) {
	domain := domainOf(by)
	if err := authorize("reseller.assignment.list", map[string]any{"domain": domain}); err != nil {
		return nil, "", err
	}
	if err := ValidRef("domain", domain); err != nil {
		return nil, "", err
	}
	return r.store.AssignmentsByDomain(ctx, domain, p)
}

// authorized asks the manage policy whether by may take action on target,
// and returns the reseller limits the call is to apply: those of the
// activation whose manage rules decided (RuleBook.decided), the defaults
// when no policy data or no reseller section is loaded.
func (r *Resellers) authorized(action string, target map[string]any, authorize Authorize) (*ResellerRules, error) {
	data, err := r.rules.decided(func() error { return authorize(action, target) })
	if err != nil {
		return nil, err
	}
	if data == nil {
		return DefaultResellerLimits(), nil
	}
	rules, err := r.rules.parse(data)
	if err != nil {
		return nil, err
	}
	if rules.Reseller == nil {
		return DefaultResellerLimits(), nil
	}
	return rules.Reseller, nil
}

// takeRows takes rows from the hourly budget of the domain by signed in
// through (domain when it signed in through none), across replicas: each
// row written is a record and an event in the stream the host's mailer
// reads, which trims its oldest entries, and one import carries up to
// max_import_rows of them. Removals are never counted. An import larger
// than the whole budget could never pass, and is too large.
func (r *Resellers) takeRows(ctx context.Context, by *sidecar.Identity, domain string, rows int, lim *ResellerRules) error {
	if d := domainOf(by); d != "" {
		domain = d
	}
	if rows > lim.MaxAssignmentRowsPerHour {
		return &sidecar.Error{Code: sidecar.ETOOLARGE, Field: "body",
			Message: fmt.Sprintf("%d rows; max_assignment_rows_per_hour (%d) bounds what a domain writes in an hour", rows, lim.MaxAssignmentRowsPerHour)}
	}
	wait, ok, err := r.store.TakeAssignmentRows(ctx, domain, rows, lim.MaxAssignmentRowsPerHour, time.Hour)
	if err != nil {
		return err
	}
	if !ok {
		return sidecar.RateLimited(wait, "domain %s wrote its max_assignment_rows_per_hour (%d) assignment rows for this hour; %d more do not fit, nothing was written; deleting is always allowed",
			domain, lim.MaxAssignmentRowsPerHour, rows)
	}
	return nil
}

// change writes one change; ECONFLICT when the customer moved since it
// was read.
func (r *Resellers) change(ctx context.Context, c sidecar.AssignmentChange) error {
	conflicts, err := r.store.ChangeAssignments(ctx, []sidecar.AssignmentChange{c})
	if err != nil {
		return err
	}
	if len(conflicts) > 0 {
		return moved(c.Customer)
	}
	return nil
}

// moved is the conflict of a change whose customer another change moved
// after it was read.
func moved(customer string) error {
	return sidecar.Errorf(sidecar.ECONFLICT, "the assignment of customer %s changed meanwhile; try again", customer)
}

// retryMoved runs attempt (read, judge, write) until it ends otherwise
// than with the customer having moved since its read, at most
// assignmentTries times.
func retryMoved(attempt func() error) error {
	var err error
	for range assignmentTries {
		if err = attempt(); sidecar.ErrorCode(err) != sidecar.ECONFLICT || sidecar.ErrorReason(err) == sidecar.ReasonTooManyAssignments {
			return err
		}
	}
	return err
}

// domainIn is the domain a read found the customer in, "" when unassigned.
func domainIn(a *sidecar.Assignment) string {
	if a == nil {
		return ""
	}
	return a.Domain
}

// domainOf is the reseller domain the caller signed in through.
func domainOf(id *sidecar.Identity) string {
	if id == nil {
		return ""
	}
	return id.Domain
}

// resellerOf names the reseller an assignment belongs to: the caller's
// organisation, or its domain when the token carries no organisation.
func resellerOf(id *sidecar.Identity) string {
	if id.Org != "" {
		return id.Org
	}
	return id.Domain
}

// ImportRow is one assignment of a bulk import, with its line.
type ImportRow struct {
	Line     int    `json:"line"`
	Customer string `json:"customer"`
	Domain   string `json:"domain"`
}

// Import formats.
const (
	FormatCSV        = "csv"
	FormatJSONLines  = "jsonl"
	maxImportErrors  = 20
	importHeaderLine = "customer,domain"
)

// ParseAssignments reads a bulk import: CSV "customer,domain" (an optional
// header line of those names) or JSON lines {"customer": "...", "domain":
// "..."}. Every malformed line is reported with its number, up to 20, in
// one EINVALID error; nothing is returned unless every line is good. A
// customer named twice is an error: the import would be ambiguous.
func ParseAssignments(data []byte, format string, maxRows int) ([]ImportRow, error) {
	var (
		rows []ImportRow
		errs []string
	)
	fail := func(line int, format string, args ...any) {
		if len(errs) < maxImportErrors {
			errs = append(errs, fmt.Sprintf("line %d: ", line)+fmt.Sprintf(format, args...))
		}
	}
	add := func(line int, customer, domain string) {
		for _, f := range [...][2]string{{"customer", customer}, {"domain", domain}} {
			if !utf8.ValidString(f[1]) {
				fail(line, "%s: invalid UTF-8", f[0])
				return
			}
		}
		if err := validCustomer(customer); err != nil {
			fail(line, "%s", sidecar.ErrorMessage(err))
			return
		}
		if err := ValidRef("domain", domain); err != nil {
			fail(line, "%s", sidecar.ErrorMessage(err))
			return
		}
		rows = append(rows, ImportRow{Line: line, Customer: customer, Domain: domain})
	}
	switch format {
	case FormatCSV:
		cr := csv.NewReader(bytes.NewReader(data))
		cr.FieldsPerRecord = -1
		cr.TrimLeadingSpace = true
		cr.ReuseRecord = true
		for {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				var pe *csv.ParseError
				if errors.As(err, &pe) {
					fail(pe.Line, "%v", pe.Err)
					if !errors.Is(pe.Err, csv.ErrFieldCount) {
						return nil, importError(errs)
					}
					continue
				}
				return nil, sidecar.Invalid("body", "read CSV: %v", err)
			}
			line, _ := cr.FieldPos(0)
			if len(rec) != 2 {
				fail(line, "want 2 fields (customer,domain), got %d", len(rec))
				continue
			}
			// Spaces and tabs around a field are layout; other spaces
			// (no-break, ideographic) are part of the id, and refused.
			c, d := strings.Trim(rec[0], " \t"), strings.Trim(rec[1], " \t")
			if len(rows) == 0 && len(errs) == 0 && strings.EqualFold(c+","+d, importHeaderLine) {
				continue
			}
			add(line, c, d)
			if len(rows) > maxRows {
				return nil, &sidecar.Error{Code: sidecar.ETOOLARGE, Field: "body", Message: fmt.Sprintf("more than %d rows", maxRows)}
			}
		}
	case FormatJSONLines:
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 0, 4096), len(data)+1)
		line := 0
		for sc.Scan() {
			line++
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			var v struct {
				Customer *string `json:"customer"`
				Domain   *string `json:"domain"`
			}
			// A line that does not say one thing (a repeated key, a key in
			// another letter case, invalid UTF-8) is refused, not read as
			// encoding/json would: {"customer":"c4","CUSTOMER":"c5"} is
			// not c5.
			if p, bad := strictjson.Check(b, &v); bad {
				fail(line, "%s: %s", p.Field, p.Message)
				continue
			}
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&v); err != nil {
				fail(line, "malformed JSON: %s", jsonProblem(err))
				continue
			}
			// Only whitespace may follow the value: More() reports false
			// on a stray closing delimiter (`{...}]`), which Token does not.
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				fail(line, "unexpected data after the JSON value")
				continue
			}
			if v.Customer == nil || v.Domain == nil {
				fail(line, "customer and domain are required")
				continue
			}
			add(line, *v.Customer, *v.Domain)
			if len(rows) > maxRows {
				return nil, &sidecar.Error{Code: sidecar.ETOOLARGE, Field: "body", Message: fmt.Sprintf("more than %d rows", maxRows)}
			}
		}
		if err := sc.Err(); err != nil {
			return nil, sidecar.Invalid("body", "read JSON lines: %v", err)
		}
	default:
		return nil, sidecar.Invalid("format", "must be %q or %q", FormatCSV, FormatJSONLines)
	}
	// Ids that fold alike are one customer (sidecar.FoldID): two lines
	// naming acme and ACME would assign it twice.
	seen := make(map[string]int, len(rows))
	for _, r := range rows {
		key := sidecar.FoldID(r.Customer)
		if first, ok := seen[key]; ok {
			fail(r.Line, "customer %s already assigned on line %d", r.Customer, first)
			continue
		}
		seen[key] = r.Line
	}
	if len(errs) > 0 {
		return nil, importError(errs)
	}
	if len(rows) == 0 {
		return nil, sidecar.Invalid("body", "no assignments")
	}
	return rows, nil
}

func importError(errs []string) error {
	return sidecar.Invalid("body", "%s", strings.Join(errs, "; "))
}

func jsonProblem(err error) string {
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + name
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return te.Field + " must be a string"
	}
	return err.Error()
}

// Import stores every row, or none, once policy lets by change every
// domain the rows name or move customers out of. Each row is written only
// while its customer is still where policy saw it; when one has moved
// meanwhile, the rows written are put back and the whole import is read,
// judged and written again (as Put is). On a store failure part-way it
// puts back what each customer had before.
func (r *Resellers) Import(ctx context.Context, by *sidecar.Identity, rows []ImportRow, authorize Authorize) (int, error) {
	var (
		changes []sidecar.AssignmentChange
		at      time.Time
		taken   bool
	)
	err := retryMoved(func() (err error) {
		changes, at, err = r.importOnce(ctx, by, rows, authorize, &taken)
		return err
	})
	// Unpublished: every row stands but replicas were not told; recorded
	// as done, and the retry finds every row written by this import
	// (importOnce), records it again under the same Once and publishes
	// again.
	if err != nil && !sidecar.IsUnpublished(err) {
		return 0, err
	}
	unpublished := err
	r.records.Audit(ctx, importAudit(by.Subject, at, len(changes), by.Domain))
	// Every row written now is announced. A row kept as written before
	// (importOnce) is announced again while the store can still tell
	// whether its announcement got through (sidecar.RecordableAgain): it may have
	// been written by an import whose reply was lost before it announced
	// it, and which this one retries. The event's Once is that of the
	// write, so an announcement that got through is not made twice.
	for _, c := range changes {
		if sidecar.RecordableAgain(c.To.UpdatedAt, r.clock()) {
			r.changed(ctx, c.To, sidecar.ChangeImport)
		}
	}
	return len(changes), unpublished
}

// importAudit is the audit entry of an import by by, written at at, of
// rows rows, through domain. Its Once is made of who imported and when,
// so recording an import again (RecordAgain) appends nothing when the
// first got through.
func importAudit(by string, at time.Time, rows int, domain string) *sidecar.AuditEntry {
	return &sidecar.AuditEntry{Time: at, Actor: by, Action: "reseller.assignment.import", Outcome: "ok",
		Data: map[string]string{"rows": strconv.Itoa(rows), "domain": domain}, Once: onceOf("reseller.assignment.import", by, strconv.FormatInt(at.UnixNano(), 10))}
}

// MayImport asks policy whether by may import into the domain it signed
// in through. The API asks it before it reads or parses a file, so a
// caller without the permission costs no more than that question (a file
// is up to max_import_rows store reads); Import then judges every domain
// the rows name or move customers out of.
func (r *Resellers) MayImport(by *sidecar.Identity, authorize Authorize) error {
	d := domainOf(by)
	return authorize("reseller.assignment.import", map[string]any{"domain": d, "domains": []any{d}})
}

// importOnce reads where every row's customer is, asks policy, and writes
// every row on those facts, or none.
// The rows are taken from the domain's hourly budget at the first
// attempt policy allows (*taken), and every change is bounded by
// max_domain_assignments.
func (r *Resellers) importOnce(ctx context.Context, by *sidecar.Identity, rows []ImportRow, authorize Authorize, taken *bool) ([]sidecar.AssignmentChange, time.Time, error) {
	prev := make(map[string]*sidecar.Assignment, len(rows))
	domains := []any{}
	seen := map[string]bool{}
	addDomain := func(d string) {
		if !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
	}
	customers := make([]string, len(rows))
	for i, row := range rows {
		customers[i] = row.Customer
	}
	current, err := r.store.GetAssignments(ctx, customers)
	if err != nil {
		return nil, time.Time{}, err
	}
	for i, row := range rows {
		addDomain(row.Domain)
		if a := current[i]; a != nil {
			prev[row.Customer] = a
			addDomain(a.Domain)
		}
	}
	profiles := make([]any, 0, len(rows))
	read := make(map[string]bool, len(rows))
	for _, row := range rows {
		if read[row.Customer] {
			continue
		}
		read[row.Customer] = true
		f, err := r.profile(ctx, row.Customer)
		if err != nil {
			return nil, time.Time{}, err
		}
		profiles = append(profiles, f)
	}
	target := map[string]any{"domain": domainOf(by), "domains": domains, "rows": len(rows), "profiles": profiles}
	lim, err := r.authorized("reseller.assignment.import", target, authorize)
	if err != nil {
		return nil, time.Time{}, err
	}
	if !*taken {
		if err := r.takeRows(ctx, by, rows[0].Domain, len(rows), lim); err != nil {
			return nil, time.Time{}, err
		}
		*taken = true
	}
	now := r.clock()
	cs := make([]sidecar.AssignmentChange, len(rows))
	at, again := time.Time{}, true // the time of by's import these rows were all written by, if one
	for i, row := range rows {
		p := prev[row.Customer]
		to := &sidecar.Assignment{Customer: row.Customer, Reseller: resellerOf(by), Domain: row.Domain, UpdatedBy: by.Subject, UpdatedAt: now}
		switch {
		case writtenBefore(p, to) && (i == 0 || again && p.UpdatedAt.Equal(at)):
			at, to = p.UpdatedAt, p
		case p != nil && p.Customer == to.Customer && p.Domain == to.Domain && p.Reseller == to.Reseller:
			// Assigned already as the row says: kept as written, so that
			// every write is one its writer announced (Import).
			to, again = p, false
		default:
			again = false
		}
		cs[i] = sidecar.AssignmentChange{Customer: row.Customer, From: domainIn(p), To: to, MaxInDomain: lim.MaxDomainAssignments,
			Change: sidecar.ChangeImport, Via: domainOf(by)}
	}
	if !again {
		at = now
	}
	// Every row written already by by's import at at, within the window
	// (writtenBefore): a retry of one whose reply was lost, or which
	// answered Unpublished. The import is that one, recorded at its time
	// and so under its Once, whether it was recorded live or is read back
	// by a sweep (RecordAgain).
	conflicts, err := r.store.ChangeAssignments(ctx, cs)
	if (err == nil || sidecar.IsUnpublished(err)) && len(conflicts) == 0 {
		return cs, at, err
	}
	if sidecar.ErrorReason(err) == sidecar.ReasonTooManyAssignments {
		return nil, time.Time{}, err // refused before anything was written
	}
	r.undo(ctx, cs, conflicts, prev)
	if err != nil && !sidecar.IsUnpublished(err) {
		return nil, time.Time{}, err
	}
	row := rows[conflicts[0]]
	return nil, time.Time{}, sidecar.Errorf(sidecar.ECONFLICT, "line %d: the assignment of customer %s changed meanwhile; nothing was imported, try again", row.Line, row.Customer)
}

// undo puts back what each customer had before cs, for every change but
// the conflicts (sorted indexes of cs, which were not applied), and only
// where the customer is still where the change put it: a change that
// never landed, or one that landed after it, stays.
func (r *Resellers) undo(ctx context.Context, cs []sidecar.AssignmentChange, conflicts []int, prev map[string]*sidecar.Assignment) {
	back := make([]sidecar.AssignmentChange, 0, len(cs)-len(conflicts))
	for i, c := range cs {
		if len(conflicts) > 0 && conflicts[0] == i {
			conflicts = conflicts[1:]
			continue
		}
		b := sidecar.AssignmentChange{Customer: c.Customer, From: c.To.Domain, To: prev[c.Customer]}
		if p := prev[c.Customer]; p == nil || !p.Same(c.To) {
			b.Undoes = &cs[i] // forget the write kept for it (a row written again as it was kept none)
		}
		back = append(back, b)
	}
	// A lost eviction of the undo is not a failure to undo: the import is
	// read and written again (retryMoved), or answers 409 asking for a
	// retry, and either publishes these keys again.
	if _, err := r.store.ChangeAssignments(ctx, back); err != nil && !sidecar.IsUnpublished(err) {
		r.logger.Error("import not undone", "rows", len(back), "error", err)
	}
}

// changed announces a, written by a change of kind ("put", "import"). The
// event goes through the Recorder, as audit entries do: the change stands
// whatever the append does. Its Once is made of the assignment as written,
// so announcing a write again appends nothing when the first got through.
func (r *Resellers) changed(ctx context.Context, a *sidecar.Assignment, kind string) {
	r.records.Event(ctx, changedEvent(a, kind))
}

// changedEvent is the event announcing a, written by a change of kind.
func changedEvent(a *sidecar.Assignment, kind string) *sidecar.Event {
	return &sidecar.Event{Type: sidecar.EventAssignmentChanged, Time: a.UpdatedAt, Customer: a.Customer, Actor: a.UpdatedBy,
		Data: map[string]string{"domain": a.Domain, "change": kind}, Once: assignmentOnce(a)}
}

// assignmentOnce is the Once of the event announcing a as written.
func assignmentOnce(a *sidecar.Assignment) string {
	return onceOf("assignment.changed", sidecar.FoldID(a.Customer), a.Domain, strconv.FormatInt(a.UpdatedAt.UnixNano(), 10))
}

// RecordAgain records once more the assignment writes (puts, imports)
// and removals made, by any call on any replica, since the last sweep of
// this process (see keptSweep): their records are appended after the
// write, and a process that stops, or loses the node of the audit and
// events streams, before the recorder appends them leaves a change of
// which domain sees which customer with no record. The store keeps each
// write for sidecar.AppendOnceWindow (AssignmentsChanged), and the records
// carry the Once of the first (made of the write: the customer, the
// domain and the time), so what got through is not appended twice.
//
// A put is recorded with its audit entry and event, a removal too, as its
// remover's; an import with the event of each row it wrote and one audit
// entry for the rows written at its time by its writer. The records are
// appended here, not through the recorder, so that a sweep that fails to
// append one reads it back again at the next.
func (r *Resellers) RecordAgain(ctx context.Context) error {
	now := r.clock()
	ws, err := r.store.AssignmentsChanged(ctx, r.kept.since(now))
	if err != nil {
		return err
	}
	type importKey struct {
		by string
		at int64
	}
	imported := map[importKey]int{} // rows each import wrote
	for _, w := range ws {
		if w.Change == sidecar.ChangeImport {
			imported[importKey{w.UpdatedBy, w.UpdatedAt.UnixNano()}]++
		}
	}
	var errs []error
	for k := range ws {
		w := &ws[k]
		var (
			audit *sidecar.AuditEntry
			event *sidecar.Event
		)
		switch w.Change {
		case sidecar.ChangePut:
			audit, event = putAudit(&w.Assignment), changedEvent(&w.Assignment, sidecar.ChangePut)
		case sidecar.ChangeImport:
			// The import's audit entry before its rows' events, once.
			key := importKey{w.UpdatedBy, w.UpdatedAt.UnixNano()}
			if n := imported[key]; n > 0 {
				a := importAudit(w.UpdatedBy, w.UpdatedAt, n, w.Via)
				errs = append(errs, r.kept.record(now, a.Once, func() error { return r.store.AppendAudit(ctx, a) }))
				imported[key] = 0
			}
			event = changedEvent(&w.Assignment, sidecar.ChangeImport)
		case sidecar.ChangeDelete:
			audit, event = deletedRecords(&w.Assignment)
		default:
			continue
		}
		errs = append(errs, r.kept.record(now, w.Change+":"+event.Once, func() error {
			if audit != nil {
				if err := r.store.AppendAudit(ctx, audit); err != nil {
					return err
				}
			}
			return r.store.AppendEvent(ctx, event)
		}))
	}
	if err := errors.Join(errs...); err != nil {
		return err // the next sweep reads back from the same time
	}
	r.kept.swept(now.Add(-max(RecordInterval, keptOverlap)))
	return nil
}

// RunSweeper calls RecordAgain now and then every RecordInterval, until
// ctx ends. A failed sweep is logged and retried at its next tick.
func (r *Resellers) RunSweeper(ctx context.Context) {
	t := time.NewTicker(RecordInterval)
	defer t.Stop()
	for {
		if err := r.RecordAgain(ctx); err != nil && ctx.Err() == nil {
			r.logger.Warn("reseller records sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
