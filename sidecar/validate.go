package sidecar

import "time"

// Record validation and filter matching, written once here and called by
// every store: when memory and Redis each spelled these rules they drifted.
// Validate checks what a store needs to key and index a record; the
// lifecycles check the product rules before they get here.

// Validate reports whether c can be stored.
func (c *Customer) Validate() error {
	if c.ID == "" {
		return Invalid("id", "customer id is required")
	}
	return nil
}

// Validate reports whether c can be stored.
func (c *Consent) Validate() error {
	if c.Customer == "" {
		return Invalid("customer", "customer is required")
	}
	return nil
}

// Validate reports whether r can be stored.
func (r *AccessRequest) Validate() error {
	switch {
	case r.ID == "":
		return Invalid("id", "request id is required")
	case r.Customer == "":
		return Invalid("customer", "customer is required")
	case r.PartnerOrg == "":
		return Invalid("partner_org", "partner org is required")
	case !r.Level.Valid():
		return Invalid("level", "unknown level %q", r.Level)
	}
	return nil
}

// Validate reports whether g can be stored.
func (g *Grant) Validate() error {
	switch {
	case g.ID == "":
		return Invalid("id", "grant id is required")
	case g.Customer == "":
		return Invalid("customer", "customer is required")
	case g.PartnerOrg == "":
		return Invalid("partner_org", "partner org is required")
	case !g.Level.Valid():
		return Invalid("level", "unknown level %q", g.Level)
	}
	return nil
}

// Validate reports whether s can be stored.
func (s *Share) Validate() error {
	switch {
	case s.Customer == "":
		return Invalid("customer", "customer is required")
	case s.Resource == "":
		return Invalid("resource", "resource is required")
	case s.User == "":
		return Invalid("user", "user is required")
	case s.PartnerOrg == "":
		return Invalid("partner_org", "partner_org is required")
	}
	return nil
}

// Validate reports whether s can be stored.
func (s *Subscription) Validate() error {
	switch {
	case s.User == "":
		return Invalid("user", "user is required")
	case s.Customer == "":
		return Invalid("customer", "customer is required")
	case s.Kind == "":
		return Invalid("kind", "kind is required")
	}
	return nil
}

// Validate reports whether a can be stored.
func (a *Assignment) Validate() error {
	if err := ValidAssignedID("customer", a.Customer); err != nil {
		return err
	}
	switch {
	case a.Domain == "":
		return Invalid("domain", "domain is required")
	case a.Reseller == "":
		return Invalid("reseller", "reseller is required")
	}
	return nil
}

// Validate reports whether c can be applied: a customer id that may be
// assigned, and a new assignment (if any) that is well formed and of that
// customer, under any spelling that folds alike (sidecar.FoldID): a change
// may respell the id, as an import's undo does when it puts back the
// spelling a customer had.
func (c *AssignmentChange) Validate() error {
	if err := ValidAssignedID("customer", c.Customer); err != nil {
		return err
	}
	switch {
	case c.To == nil:
		return nil
	case FoldID(c.To.Customer) != FoldID(c.Customer):
		return Invalid("customer", "change of %s carries an assignment of %s", c.Customer, c.To.Customer)
	}
	return c.To.Validate()
}

// Validate reports whether e can be appended.
func (e *Event) Validate() error {
	if e.Type == "" {
		return Invalid("type", "event type is required")
	}
	return nil
}

// Validate reports whether a can be appended.
func (a *AuditEntry) Validate() error {
	if a.Action == "" {
		return Invalid("action", "audit action is required")
	}
	return nil
}

// Validate reports whether the filter names whose requests to list: a
// listing across every customer and partner is never wanted.
func (f RequestFilter) Validate() error {
	if f.Customer == "" && f.PartnerOrg == "" {
		return Invalid("customer", "customer or partner org is required")
	}
	return nil
}

// Match reports whether r, with its status as of now, is selected.
func (f RequestFilter) Match(r *AccessRequest, now time.Time) bool {
	return (f.Customer == "" || r.Customer == f.Customer) &&
		(f.PartnerOrg == "" || r.PartnerOrg == f.PartnerOrg) &&
		(f.Status == "" || r.StatusAt(now) == f.Status)
}
