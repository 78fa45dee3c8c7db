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
	r.HandleNarrowing("DELETE", "reseller/assignments/{customer}", h.delete)
}

func (h *Reseller) get(c *Call) error {
	a, err := h.svc.Get(c.Context(), c.Identity, c.Request.PathValue("customer"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

type assignmentBody struct {
	Domain string `json:"domain"`
}

// put assigns the customer to the body's domain, by default the caller's.
func (h *Reseller) put(c *Call) error {
	var b assignmentBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	if b.Domain == "" && c.Identity != nil {
		b.Domain = c.Identity.Domain
	}
	a, err := h.svc.Put(c.Context(), c.Identity, c.Request.PathValue("customer"), b.Domain, authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

func (h *Reseller) delete(c *Call) error {
	if err := h.svc.Delete(c.Context(), c.Identity, c.Request.PathValue("customer"), authorizer(c)); err != nil {
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
	items, next, err := h.svc.List(c.Context(), c.Identity, sidecar.Page{Cursor: p.Cursor, Limit: p.Limit}, authorizer(c))
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
// (application/x-ndjson, application/jsonl; or ?format=csv|jsonl). A
// caller who may not import into its own domain is refused before the
// body is read; then the whole file is checked before the lifecycle
// authorizes it against every domain it names or moves customers out of.
func (h *Reseller) importAssignments(c *Call) error {
	if err := h.svc.MayImport(c.Identity, authorizer(c)); err != nil {
		return err
	}
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
	n, err := h.svc.Import(c.Context(), c.Identity, rows, authorizer(c))
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
