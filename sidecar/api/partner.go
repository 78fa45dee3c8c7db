package api

import (
	"net/http"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// Partner serves partner access: access requests and their decisions,
// "My Customers" / "My Partners", revocation, resource shares for cc and
// subscriptions. The lifecycle asks the manage policy about every action,
// with the facts as stored; the handlers decode and encode.
type Partner struct {
	svc *delegation.Partners
}

var _ Routes = (*Partner)(nil)

// NewPartner returns the routes over the partner lifecycle.
func NewPartner(svc *delegation.Partners) *Partner { return &Partner{svc: svc} }

// Register mounts the routes.
func (h *Partner) Register(r *Router) {
	r.Handle("POST", "partner/requests", h.createRequest)
	r.Handle("GET", "partner/requests", h.listRequests)
	r.Handle("GET", "partner/requests/{id}", h.getRequest)
	r.Handle("POST", "partner/requests/{id}/approve", h.approve)
	r.HandleNarrowing("POST", "partner/requests/{id}/reject", h.reject)
	r.Handle("GET", "partner/customers", h.myCustomers)
	r.Handle("GET", "partner/partners", h.myPartners)
	r.HandleNarrowing("DELETE", "partner/grants/{customer}/{id}", h.revoke)
	r.Handle("GET", "partner/shares/{customer}", h.listShares)
	r.Handle("PUT", "partner/shares/{customer}/{user}/{resource}", h.putShare)
	r.HandleNarrowing("DELETE", "partner/shares/{customer}/{user}/{resource}", h.deleteShare)
	r.Handle("GET", "partner/subscriptions", h.mySubscriptions)
	r.Handle("PUT", "partner/subscriptions/{customer}/{kind}", h.subscribe)
	r.HandleNarrowing("DELETE", "partner/subscriptions/{customer}/{kind}", h.unsubscribe) // a no-op deletes nothing, as cheap as a read: never counted
	r.Handle("GET", "partner/subscribers/{customer}", h.subscribers)
}

// grantView is a grant as the API shows it, with its scope spelled out.
type grantView struct {
	sidecar.Grant
	Scope string `json:"scope"`
}

func viewGrants(gs []sidecar.Grant) []grantView {
	out := make([]grantView, len(gs))
	for i, g := range gs {
		out[i] = grantView{Grant: g, Scope: g.Scope()}
	}
	return out
}

func callerOrg(id *sidecar.Identity) string {
	if id == nil {
		return ""
	}
	return id.Org
}

// --- access requests ---------------------------------------------------------

func (h *Partner) createRequest(c *Call) error {
	var in delegation.AccessRequestInput
	if err := c.Decode(&in); err != nil {
		return err
	}
	r, err := h.svc.Request(c.Context(), c.Identity, in, authorizer(c))
	if err != nil {
		return err
	}
	c.ResponseWriter().Header().Set("Location", Prefix+"partner/requests/"+r.ID)
	return c.JSON(http.StatusCreated, r)
}

// listRequests lists the customer's requests with ?customer=, else the
// caller's partner organisation's; ?status= filters.
func (h *Partner) listRequests(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	q := c.Request.URL.Query()
	f := sidecar.RequestFilter{Status: q.Get("status"), Page: sidecar.Page{Cursor: p.Cursor, Limit: p.Limit}}
	switch f.Status {
	case "", sidecar.RequestPending, sidecar.RequestApproved, sidecar.RequestRejected, sidecar.RequestExpired:
	default:
		return sidecar.Invalid("status", "must be pending, approved, rejected or expired")
	}
	if f.Customer = q.Get("customer"); f.Customer == "" {
		f.PartnerOrg = callerOrg(c.Identity)
	}
	items, next, err := h.svc.ListRequests(c.Context(), c.Identity, f, authorizer(c))
	if err != nil {
		return err
	}
	if items == nil {
		items = []sidecar.AccessRequest{}
	}
	return c.JSON(http.StatusOK, List[sidecar.AccessRequest]{Items: items, NextCursor: next})
}

func (h *Partner) getRequest(c *Call) error {
	r, err := h.svc.GetRequest(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

type decisionView struct {
	Request *sidecar.AccessRequest `json:"request"`
	Grants  []grantView            `json:"grants,omitempty"`
}

func (h *Partner) approve(c *Call) error {
	r, grants, err := h.svc.Approve(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, decisionView{Request: r, Grants: viewGrants(grants)})
}

func (h *Partner) reject(c *Call) error {
	r, err := h.svc.Reject(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, decisionView{Request: r})
}

// --- grants ------------------------------------------------------------------

func (h *Partner) myCustomers(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	items, err := h.svc.MyCustomers(c.Context(), c.Identity, authorizer(c))
	if err != nil {
		return err
	}
	page, err := Paginate(items, func(a delegation.CustomerAccess) string { return a.Customer }, p)
	return pageJSON(c, page, err)
}

// myPartners lists the grants of ?customer= (default: the caller's org).
func (h *Partner) myPartners(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	customer := c.Request.URL.Query().Get("customer")
	if customer == "" {
		customer = callerOrg(c.Identity)
	}
	gs, err := h.svc.MyPartners(c.Context(), c.Identity, customer, authorizer(c))
	if err != nil {
		return err
	}
	page, err := Paginate(viewGrants(gs), func(g grantView) string { return delegation.GrantSortKey(g.Grant) }, p)
	return pageJSON(c, page, err)
}

// revoke is idempotent: a grant already gone answers 204 too.
func (h *Partner) revoke(c *Call) error {
	if _, err := h.svc.Revoke(c.Context(), c.Identity, c.Request.PathValue("customer"), c.Request.PathValue("id"), authorizer(c)); err != nil {
		return err
	}
	return c.NoContent()
}

// --- shares ------------------------------------------------------------------

type shareBody struct {
	PartnerOrg string `json:"partner_org"`
}

func (h *Partner) listShares(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	ss, err := h.svc.Shares(c.Context(), c.Identity, c.Request.PathValue("customer"), authorizer(c))
	if err != nil {
		return err
	}
	page, err := Paginate(ss, func(s sidecar.Share) string { return s.User + "\x00" + s.Resource + "\x00" + s.PartnerOrg }, p)
	return pageJSON(c, page, err)
}

func (h *Partner) putShare(c *Call) error {
	customer, user, resource := c.Request.PathValue("customer"), c.Request.PathValue("user"), c.Request.PathValue("resource")
	var b shareBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	s, err := h.svc.Share(c.Context(), c.Identity, customer, delegation.ShareInput{Resource: resource, User: user, PartnerOrg: b.PartnerOrg}, authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s)
}

func (h *Partner) deleteShare(c *Call) error {
	customer, user, resource := c.Request.PathValue("customer"), c.Request.PathValue("user"), c.Request.PathValue("resource")
	in := delegation.ShareInput{Resource: resource, User: user, PartnerOrg: c.Request.URL.Query().Get("partner_org")}
	if err := h.svc.Unshare(c.Context(), c.Identity, customer, in, authorizer(c)); err != nil {
		return err
	}
	return c.NoContent()
}

// --- subscriptions -------------------------------------------------------------

func (h *Partner) subscribe(c *Call) error {
	v, err := h.svc.Subscribe(c.Context(), c.Identity, c.Request.PathValue("customer"), c.Request.PathValue("kind"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (h *Partner) unsubscribe(c *Call) error {
	if err := h.svc.Unsubscribe(c.Context(), c.Identity, c.Request.PathValue("customer"), c.Request.PathValue("kind"), authorizer(c)); err != nil {
		return err
	}
	return c.NoContent()
}

func (h *Partner) mySubscriptions(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	vs, err := h.svc.MySubscriptions(c.Context(), c.Identity, authorizer(c))
	if err != nil {
		return err
	}
	page, err := Paginate(vs, delegation.SubscriptionSortKey, p)
	return pageJSON(c, page, err)
}

// subscribers lists the subscriptions to the customer that count now
// (?kind= filters), for the customer's contact manager and the mailer.
func (h *Partner) subscribers(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	vs, err := h.svc.Subscribers(c.Context(), c.Identity, c.Request.PathValue("customer"), c.Request.URL.Query().Get("kind"), authorizer(c))
	if err != nil {
		return err
	}
	page, err := Paginate(vs, delegation.SubscriptionSortKey, p)
	return pageJSON(c, page, err)
}

// pageJSON answers with one page, or the error of a bad cursor.
func pageJSON[T any](c *Call, l List[T], err error) error {
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, l)
}
