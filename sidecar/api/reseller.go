package api

import (
	"io"
	"mime"
	"net/http"
	"slices"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// Reseller serves reseller domain assignments for the reseller's super
// admins. Every call is about the domain the caller signed in through:
// the manage policy refuses customers assigned to any other domain.
type Reseller struct {
	svc *delegation.Resellers
}

var _ Routes = (*Reseller)(nil)

// NewReseller returns the routes over the assignment lifecycle.
func NewReseller(svc *delegation.Resellers) *Reseller { return &Reseller{svc: svc} }

// Register mounts the routes.
func (h *Reseller) Register(r *Router) {
	r.Handle("GET", "reseller/assignments", h.list)
	r.Handle("POST", "reseller/imports", h.importAssignments)
	r.Handle("GET", "reseller/assignments/{customer}", h.get)
	r.Handle("PUT", "reseller/assignments/{customer}", h.put)
	r.Handle("DELETE", "reseller/assignments/{customer}", h.delete)
}

func callerDomain(id *sidecar.Identity) string {
	if id == nil {
		return ""
	}
	return id.Domain
}

// current returns the customer's assignment, nil when unassigned, and the
// target facts the policy needs about it.
func (h *Reseller) current(c *Call, customer string) (*sidecar.Assignment, map[string]any, error) {
	a, err := h.svc.Get(c.Context(), customer)
	target := map[string]any{"customer": customer}
	switch {
	case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		return nil, target, nil
	case err != nil:
		return nil, nil, err
	}
	target["current_domain"] = a.Domain
	return a, target, nil
}

func (h *Reseller) get(c *Call) error {
	customer := c.Request.PathValue("customer")
	a, target, err := h.current(c, customer)
	if err != nil {
		return err
	}
	target["domain"] = callerDomain(c.Identity)
	if _, err := c.Authorize("reseller.assignment.get", target, nil); err != nil {
		return err
	}
	if a == nil {
		return sidecar.Errorf(sidecar.ENOTFOUND, "customer %s is not assigned", customer)
	}
	return c.JSON(http.StatusOK, a)
}

type assignmentBody struct {
	Domain string `json:"domain"`
}

// put assigns the customer to the body's domain, by default the caller's.
func (h *Reseller) put(c *Call) error {
	customer := c.Request.PathValue("customer")
	var b assignmentBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	if b.Domain == "" {
		b.Domain = callerDomain(c.Identity)
	}
	_, target, err := h.current(c, customer)
	if err != nil {
		return err
	}
	target["domain"] = b.Domain
	if _, err := c.Authorize("reseller.assignment.put", target, nil); err != nil {
		return err
	}
	a, err := h.svc.Put(c.Context(), c.Identity, customer, b.Domain)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

func (h *Reseller) delete(c *Call) error {
	customer := c.Request.PathValue("customer")
	_, target, err := h.current(c, customer)
	if err != nil {
		return err
	}
	target["domain"] = callerDomain(c.Identity)
	if _, err := c.Authorize("reseller.assignment.delete", target, nil); err != nil {
		return err
	}
	if err := h.svc.Delete(c.Context(), c.Identity, customer); err != nil {
		return err
	}
	return c.NoContent()
}

// list pages through the assignments of the caller's own domain.
func (h *Reseller) list(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	domain := callerDomain(c.Identity)
	if _, err := c.Authorize("reseller.assignment.list", map[string]any{"domain": domain}, nil); err != nil {
		return err
	}
	items, next, err := h.svc.List(c.Context(), domain, sidecar.Page{Cursor: p.Cursor, Limit: p.Limit})
	if err != nil {
		return err
	}
	if items == nil {
		items = []sidecar.Assignment{}
	}
	return c.JSON(http.StatusOK, List[sidecar.Assignment]{Items: items, NextCursor: next})
}

type importResult struct {
	Imported int `json:"imported"`
}

// importAssignments bulk-loads CSV (text/csv) or JSON lines
// (application/x-ndjson, application/jsonl; or ?format=csv|jsonl). The
// whole file is checked, and authorized against every domain it names or
// moves customers out of, before anything is stored.
func (h *Reseller) importAssignments(c *Call) error {
	format, err := importFormat(c.Request)
	if err != nil {
		return err
	}
	max := h.svc.Config().MaxImportBytes
	data, err := io.ReadAll(io.LimitReader(c.Request.Body, max+1))
	if err != nil {
		return sidecar.Invalid("body", "read body: %v", err)
	}
	if int64(len(data)) > max {
		return &sidecar.Error{Code: sidecar.ETOOLARGE, Field: "body", Message: "import larger than the limit of " + itoa(max) + " bytes"}
	}
	rows, err := delegation.ParseAssignments(data, format, h.svc.Config().MaxImportRows)
	if err != nil {
		return err
	}
	prev := make(map[string]*sidecar.Assignment, len(rows))
	domains := []any{}
	seen := map[string]bool{}
	addDomain := func(d string) {
		if !seen[d] {
			seen[d] = true
			domains = append(domains, d)
		}
	}
	for _, r := range rows {
		addDomain(r.Domain)
		a, err := h.svc.Get(c.Context(), r.Customer)
		switch {
		case sidecar.ErrorCode(err) == sidecar.ENOTFOUND:
		case err != nil:
			return err
		default:
			prev[r.Customer] = a
			addDomain(a.Domain)
		}
	}
	target := map[string]any{"domain": callerDomain(c.Identity), "domains": domains, "rows": len(rows)}
	if _, err := c.Authorize("reseller.assignment.import", target, nil); err != nil {
		return err
	}
	n, err := h.svc.Import(c.Context(), c.Identity, rows, prev)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, importResult{Imported: n})
}

var importTypes = map[string]string{
	"text/csv":              delegation.FormatCSV,
	"application/csv":       delegation.FormatCSV,
	"application/x-ndjson":  delegation.FormatJSONLines,
	"application/jsonl":     delegation.FormatJSONLines,
	"application/jsonlines": delegation.FormatJSONLines,
}

func importFormat(r *http.Request) (string, error) {
	if f := r.URL.Query().Get("format"); f != "" {
		if f != delegation.FormatCSV && f != delegation.FormatJSONLines {
			return "", sidecar.Invalid("format", "must be csv or jsonl")
		}
		return f, nil
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if f, ok := importTypes[mt]; ok && err == nil {
		return f, nil
	}
	types := make([]string, 0, len(importTypes))
	for t := range importTypes {
		types = append(types, t)
	}
	slices.Sort(types)
	return "", sidecar.Invalid("format", "set ?format=csv|jsonl or a content type of %v", types)
}
