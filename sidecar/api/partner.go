package api

import (
	"net/http"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// Partner serves partner access: access requests and their decisions,
// "My Customers" / "My Partners", revocation, resource shares for cc and
// subscriptions. Every action is authorized by the manage policy with the
// facts it needs in target; the lifecycle re-checks the facts it owns.
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
	r.Handle("POST", "partner/requests/{id}/reject", h.reject)
	r.Handle("GET", "partner/customers", h.myCustomers)
	r.Handle("GET", "partner/partners", h.myPartners)
	r.Handle("DELETE", "partner/grants/{customer}/{id}", h.revoke)
	r.Handle("GET", "partner/shares/{customer}", h.listShares)
	r.Handle("PUT", "partner/shares/{customer}/{user}/{resource}", h.putShare)
	r.Handle("DELETE", "partner/shares/{customer}/{user}/{resource}", h.deleteShare)
	r.Handle("GET", "partner/subscriptions", h.mySubscriptions)
	r.Handle("PUT", "partner/subscriptions/{customer}/{kind}", h.subscribe)
	r.Handle("DELETE", "partner/subscriptions/{customer}/{kind}", h.unsubscribe)
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
	target := map[string]any{"customer": in.Customer, "partner_org": callerOrg(c.Identity), "level": string(in.Level), "scope": in.Scope}
	if _, err := c.Authorize("partner.request", target, nil); err != nil {
		return err
	}
	r, err := h.svc.CheckRequest(c.Context(), c.Identity, in)
	if err != nil {
		return err
	}
	if err := h.svc.Request(c.Context(), r); err != nil {
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
	target := map[string]any{}
	if cust := q.Get("customer"); cust != "" {
		f.Customer = cust
		target["customer"] = cust
	} else {
		f.PartnerOrg = callerOrg(c.Identity)
		target["partner_org"] = f.PartnerOrg
	}
	if _, err := c.Authorize("partner.list_requests", target, nil); err != nil {
		return err
	}
	items, next, err := h.svc.ListRequests(c.Context(), f)
	if err != nil {
		return err
	}
	if items == nil {
		items = []sidecar.AccessRequest{}
	}
	return c.JSON(http.StatusOK, List[sidecar.AccessRequest]{Items: items, NextCursor: next})
}

func (h *Partner) getRequest(c *Call) error {
	r, err := h.svc.GetRequest(c.Context(), c.Request.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.authorizeRequest(c, "partner.list_requests", r); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// authorizeRequest authorizes an action on an existing request. The
// customer side is asked first, so a partner user is told they are not
// the contact manager rather than that the request belongs elsewhere.
func (h *Partner) authorizeRequest(c *Call, action string, r *sidecar.AccessRequest) error {
	_, err := c.Authorize(action, map[string]any{"customer": r.Customer, "partner_org": r.PartnerOrg, "request_id": r.ID}, nil)
	return err
}

type decisionView struct {
	Request *sidecar.AccessRequest `json:"request"`
	Grants  []grantView            `json:"grants,omitempty"`
}

func (h *Partner) approve(c *Call) error {
	r, err := h.svc.GetRequest(c.Context(), c.Request.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.authorizeRequest(c, "partner.approve", r); err != nil {
		return err
	}
	r, grants, err := h.svc.Approve(c.Context(), c.Identity, r.ID)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, decisionView{Request: r, Grants: viewGrants(grants)})
}

func (h *Partner) reject(c *Call) error {
	r, err := h.svc.GetRequest(c.Context(), c.Request.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.authorizeRequest(c, "partner.reject", r); err != nil {
		return err
	}
	r, err = h.svc.Reject(c.Context(), c.Identity, r.ID)
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
	if _, err := c.Authorize("partner.list_customers", map[string]any{"partner_org": callerOrg(c.Identity)}, nil); err != nil {
		return err
	}
	items, err := h.svc.MyCustomers(c.Context(), c.Identity)
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
	if _, err := c.Authorize("partner.list_partners", map[string]any{"customer": customer}, nil); err != nil {
		return err
	}
	gs, err := h.svc.MyPartners(c.Context(), customer)
	if err != nil {
		return err
	}
	page, err := Paginate(viewGrants(gs), func(g grantView) string { return delegation.GrantSortKey(g.Grant) }, p)
	return pageJSON(c, page, err)
}

func (h *Partner) revoke(c *Call) error {
	customer, id := c.Request.PathValue("customer"), c.Request.PathValue("id")
	g, err := h.svc.GetGrant(c.Context(), customer, id)
	if sidecar.ErrorCode(err) == sidecar.ENOTFOUND {
		// Already gone (revoked, expired or never issued): DELETE is
		// idempotent. The caller is authorized as a party to a grant of
		// its own organisation, so only someone who could have revoked it
		// gets the 204; nothing is changed, audited or announced.
		target := map[string]any{"customer": customer, "partner_org": callerOrg(c.Identity), "grant_id": id}
		if _, err := c.Authorize("partner.revoke", target, nil); err != nil {
			return err
		}
		return c.NoContent()
	}
	if err != nil {
		return err
	}
	target := map[string]any{"customer": g.Customer, "partner_org": g.PartnerOrg, "user": g.User, "grant_id": g.ID}
	if _, err := c.Authorize("partner.revoke", target, nil); err != nil {
		return err
	}
	if _, err := h.svc.Revoke(c.Context(), c.Identity, customer, id); err != nil {
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
	customer := c.Request.PathValue("customer")
	if _, err := c.Authorize("share.list", map[string]any{"customer": customer}, nil); err != nil {
		return err
	}
	ss, err := h.svc.Shares(c.Context(), customer)
	if err != nil {
		return err
	}
	page, err := Paginate(ss, func(s sidecar.Share) string { return s.User + "\x00" + s.Resource }, p)
	return pageJSON(c, page, err)
}

func (h *Partner) putShare(c *Call) error {
	customer, user, resource := c.Request.PathValue("customer"), c.Request.PathValue("user"), c.Request.PathValue("resource")
	var b shareBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	target := map[string]any{"customer": customer, "user": user, "resource": resource, "partner_org": b.PartnerOrg}
	if _, err := c.Authorize("share.put", target, nil); err != nil {
		return err
	}
	s, err := h.svc.Share(c.Context(), c.Identity, customer, delegation.ShareInput{Resource: resource, User: user, PartnerOrg: b.PartnerOrg})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s)
}

func (h *Partner) deleteShare(c *Call) error {
	customer, user, resource := c.Request.PathValue("customer"), c.Request.PathValue("user"), c.Request.PathValue("resource")
	target := map[string]any{"customer": customer, "user": user, "resource": resource}
	if _, err := c.Authorize("share.delete", target, nil); err != nil {
		return err
	}
	if err := h.svc.Unshare(c.Context(), c.Identity, customer, resource, user); err != nil {
		return err
	}
	return c.NoContent()
}

// --- subscriptions -------------------------------------------------------------

func (h *Partner) subscribe(c *Call) error {
	customer, kind := c.Request.PathValue("customer"), c.Request.PathValue("kind")
	target := map[string]any{"customer": customer, "kind": kind, "partner_org": callerOrg(c.Identity)}
	var extra map[string]any
	if c.Identity.Org != "" {
		g, err := h.svc.Effective(c.Context(), customer, c.Identity.Org, c.Identity.Subject)
		if err != nil {
			return err
		}
		if g != nil {
			extra = map[string]any{"delegation": map[string]any{
				"mode": sidecar.ModePartner, "id": g.ID, "subject": customer, "actor": c.Identity.Subject,
				"actor_org": g.PartnerOrg, "level": string(g.Level), "scope": g.Scope(),
				"expires_at": g.ExpiresAt.UTC().Format(time.RFC3339Nano),
			}}
		}
	}
	if _, err := c.Authorize("subscription.put", target, extra); err != nil {
		return err
	}
	v, err := h.svc.Subscribe(c.Context(), c.Identity, customer, kind)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (h *Partner) unsubscribe(c *Call) error {
	customer, kind := c.Request.PathValue("customer"), c.Request.PathValue("kind")
	if _, err := c.Authorize("subscription.delete", map[string]any{"customer": customer, "kind": kind, "partner_org": callerOrg(c.Identity)}, nil); err != nil {
		return err
	}
	if err := h.svc.Unsubscribe(c.Context(), c.Identity, customer, kind); err != nil {
		return err
	}
	return c.NoContent()
}

func (h *Partner) mySubscriptions(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	if _, err := c.Authorize("subscription.list", map[string]any{"partner_org": callerOrg(c.Identity)}, nil); err != nil {
		return err
	}
	vs, err := h.svc.MySubscriptions(c.Context(), c.Identity)
	if err != nil {
		return err
	}
	page, err := Paginate(vs, subscriptionKey, p)
	return pageJSON(c, page, err)
}

// subscribers lists the subscriptions to the customer that count now
// (?kind= filters), for the customer's contact manager and the mailer.
func (h *Partner) subscribers(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	customer := c.Request.PathValue("customer")
	if _, err := c.Authorize("partner.list_partners", map[string]any{"customer": customer}, nil); err != nil {
		return err
	}
	vs, err := h.svc.Subscribers(c.Context(), customer, c.Request.URL.Query().Get("kind"))
	if err != nil {
		return err
	}
	page, err := Paginate(vs, subscriptionKey, p)
	return pageJSON(c, page, err)
}

func subscriptionKey(v delegation.SubscriptionView) string {
	return v.Customer + "\x00" + v.Kind + "\x00" + v.PartnerOrg + "/" + v.User
}

// pageJSON answers with one page, or the error of a bad cursor.
func pageJSON[T any](c *Call, l List[T], err error) error {
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, l)
}
