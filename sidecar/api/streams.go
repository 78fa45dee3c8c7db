package api

import (
	"context"
	"net/http"

	"github.com/deputyhq/deputy/sidecar"
)

// StreamReader reads the events stream and the audit trail.
type StreamReader interface {
	ReadEvents(ctx context.Context, f sidecar.StreamFilter) ([]sidecar.Event, string, error)
	ReadAudit(ctx context.Context, f sidecar.StreamFilter) ([]sidecar.AuditEntry, string, error)
}

// Streams serves the events stream, which the host application's mailer
// follows (grant requested, session started, consent changed, ...), and
// the audit trail of every management action.
type Streams struct{ store StreamReader }

var _ Routes = (*Streams)(nil)

// NewStreams returns the events and audit routes over store.
func NewStreams(store StreamReader) *Streams { return &Streams{store: store} }

// Register adds GET events and GET audit, both filtered by type (event type
// or audit action), customer, actor and time, and paginated.
func (h *Streams) Register(r *Router) {
	r.Handle("GET", "events", h.events)
	r.Handle("GET", "audit", h.audit)
}

func (h *Streams) filter(c *Call, action string) (sidecar.StreamFilter, error) {
	q := c.Request.URL.Query()
	f := sidecar.StreamFilter{Type: q.Get("type"), Customer: q.Get("customer"), Actor: q.Get("actor")}
	var err error
	if f.From, err = timeParam(q, "from"); err != nil {
		return f, err
	}
	if f.To, err = timeParam(q, "to"); err != nil {
		return f, err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return f, sidecar.Invalid("from", "must be before to")
	}
	p, err := c.Page()
	if err != nil {
		return f, err
	}
	f.Page = sidecar.Page{Cursor: p.Cursor, Limit: p.Limit}
	_, err = c.Authorize(action, map[string]any{"type": f.Type, "customer": f.Customer, "actor": f.Actor}, nil)
	return f, err
}

func (h *Streams) events(c *Call) error {
	f, err := h.filter(c, "events.read")
	if err != nil {
		return err
	}
	items, next, err := h.store.ReadEvents(c.Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, List[sidecar.Event]{Items: nonNil(items), NextCursor: next})
}

func (h *Streams) audit(c *Call) error {
	f, err := h.filter(c, "audit.read")
	if err != nil {
		return err
	}
	items, next, err := h.store.ReadAudit(c.Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, List[sidecar.AuditEntry]{Items: nonNil(items), NextCursor: next})
}

// nonNil keeps an empty page a JSON array.
func nonNil[T any](items []T) []T {
	if items == nil {
		return []T{}
	}
	return items
}
