package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// Impersonation serves Login as Customer: customer profiles, consent,
// sessions, the redeem link and the session log.
type Impersonation struct {
	svc *delegation.Impersonation
}

var _ Routes = (*Impersonation)(nil)

// NewImpersonation returns the routes over the lifecycle.
func NewImpersonation(svc *delegation.Impersonation) *Impersonation {
	return &Impersonation{svc: svc}
}

// Register mounts the routes.
func (h *Impersonation) Register(r *Router) {
	r.Handle("PUT", "customers/{id}", h.putCustomer)
	r.HandleNarrowing("DELETE", "customers/{id}", h.deleteCustomer)
	r.Handle("GET", "customers/{id}/consent", h.getConsent)
	r.HandleNarrowing("PUT", "customers/{id}/consent", h.putConsent) // given: counted by SetConsent
	r.Handle("GET", "customers/{id}/consent/history", h.consentHistory)
	r.Handle("POST", "impersonation/sessions", h.start)
	r.Handle("GET", "impersonation/sessions", h.list)
	r.Handle("GET", "impersonation/sessions/{id}", h.get)
	r.HandleNarrowing("DELETE", "impersonation/sessions/{id}", h.end)
	r.Handle("GET", "impersonation/log", h.log)
	r.HandlePublic("GET", delegation.RedeemPath, h.redeem)
	r.Intercept(h.encodedRedeem)
}

// --- customers --------------------------------------------------------------

type customerBody struct {
	Name             string   `json:"name"`
	Org              string   `json:"org"`
	DefaultStoreView string   `json:"default_store_view"`
	StoreViews       []string `json:"store_views"`
	Protected        bool     `json:"protected"`
	Roles            []string `json:"roles"` // as the storefront knows them; policy's protected_roles apply
}

func (h *Impersonation) putCustomer(c *Call) error {
	id := c.Request.PathValue("id")
	var b customerBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	cust := &sidecar.Customer{ID: id, Name: b.Name, Org: b.Org, DefaultStoreView: b.DefaultStoreView, StoreViews: b.StoreViews, Protected: b.Protected, Roles: b.Roles}
	if err := h.svc.PutCustomer(c.Context(), c.Identity, cust, authorizer(c)); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cust)
}

// deleteCustomer removes the profile and ends the customer's live
// sessions; a profile already gone answers 204 too.
func (h *Impersonation) deleteCustomer(c *Call) error {
	if err := h.svc.DeleteCustomer(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c)); err != nil {
		return err
	}
	return c.NoContent()
}

// --- consent ----------------------------------------------------------------

type consentBody struct {
	Allowed   *bool  `json:"allowed"`
	ExpiresAt string `json:"expires_at"` // RFC 3339; parsed here so the error names the field
}

type consentView struct {
	Customer  string     `json:"customer_id"`
	Allowed   bool       `json:"allowed"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	SetBy     string     `json:"set_by,omitempty"`
	SetAt     *time.Time `json:"set_at,omitempty"`
}

func viewConsent(c *sidecar.Consent, now time.Time) consentView {
	v := consentView{Customer: c.Customer, Allowed: c.Granted(now), SetBy: c.SetBy}
	if !c.ExpiresAt.IsZero() {
		t := c.ExpiresAt
		v.ExpiresAt = &t
	}
	if !c.SetAt.IsZero() {
		t := c.SetAt
		v.SetAt = &t
	}
	return v
}

func (h *Impersonation) getConsent(c *Call) error {
	con, err := h.svc.GetConsent(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewConsent(con, c.Now()))
}

func (h *Impersonation) putConsent(c *Call) error {
	id := c.Request.PathValue("id")
	var b consentBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	if b.Allowed == nil {
		return sidecar.Invalid("allowed", "required")
	}
	ch := delegation.ConsentChange{Customer: id, Allowed: *b.Allowed}
	if b.ExpiresAt != "" {
		t, ok := sidecar.ParseTime(b.ExpiresAt)
		if !ok {
			return sidecar.Invalid("expires_at", "must be an RFC 3339 time")
		}
		ch.ExpiresAt = &t
	}
	con, ended, err := h.svc.SetConsent(c.Context(), c.Identity, ch, authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		consentView
		EndedSessions int `json:"ended_sessions"`
	}{viewConsent(con, c.Now()), len(ended)})
}

func (h *Impersonation) consentHistory(c *Call) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	items, next, err := h.svc.ConsentHistory(c.Context(), c.Identity, c.Request.PathValue("id"), sidecar.Page{Cursor: p.Cursor, Limit: p.Limit}, authorizer(c))
	if err != nil {
		return err
	}
	out := List[consentView]{Items: make([]consentView, 0, len(items)), NextCursor: next}
	for i := range items {
		v := viewConsent(&items[i], c.Now())
		v.Allowed = items[i].Allowed // history shows what was set, not whether it still holds
		out.Items = append(out.Items, v)
	}
	return c.JSON(http.StatusOK, out)
}

// --- sessions ---------------------------------------------------------------

type startBody struct {
	CustomerID string `json:"customer_id"`
	StoreView  string `json:"store_view"`
	Reason     string `json:"reason"`
	Ticket     string `json:"ticket"`
	Redirect   string `json:"redirect"`
}

// sessionView is a session as the API shows it: never the token hash.
type sessionView struct {
	ID           string     `json:"id"`
	Actor        string     `json:"actor"`
	ActorName    string     `json:"actor_name,omitempty"`
	CustomerID   string     `json:"customer_id"`
	CustomerName string     `json:"customer_name,omitempty"`
	StoreView    string     `json:"store_view,omitempty"`
	Reason       string     `json:"reason,omitempty"`
	Ticket       string     `json:"ticket,omitempty"`
	StartedAt    time.Time  `json:"started_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	IdleTimeout  string     `json:"idle_timeout,omitempty"`
	LastSeen     *time.Time `json:"last_seen,omitempty"`
	Redeemed     bool       `json:"redeemed"`
	State        string     `json:"state"` // "live" or why it ended
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	EndedBy      string     `json:"ended_by,omitempty"`
}

func viewSession(s *sidecar.Session, now time.Time) sessionView {
	v := sessionView{
		ID: s.ID, Actor: s.Actor, ActorName: s.ActorName, CustomerID: s.Customer, CustomerName: s.CustomerName,
		StoreView: s.StoreView, Reason: s.Reason, Ticket: s.Ticket, StartedAt: s.StartedAt, ExpiresAt: s.ExpiresAt,
		Redeemed: s.TokenHash != "", State: s.EndState(now), EndedBy: s.EndedBy,
	}
	if v.State == "" {
		v.State = "live"
	}
	if s.IdleTimeout > 0 {
		v.IdleTimeout = s.IdleTimeout.String()
	}
	if !s.LastSeen.IsZero() {
		t := s.LastSeen
		v.LastSeen = &t
	}
	if !s.EndedAt.IsZero() {
		t := s.EndedAt
		v.EndedAt = &t
	}
	return v
}

func (h *Impersonation) start(c *Call) error {
	var b startBody
	if err := c.Decode(&b); err != nil {
		return err
	}
	// Refuse a bad redirect before anything is created.
	if _, err := delegation.SafeRedirect(b.Redirect, h.svc.Config().RedirectHosts); err != nil {
		return err
	}
	st, err := h.svc.Start(c.Context(), c.Identity, delegation.StartRequest{
		Customer: b.CustomerID, StoreView: b.StoreView, Reason: b.Reason, Ticket: b.Ticket,
	}, authorizer(c))
	if err != nil {
		return err
	}
	replaced := make([]string, 0, len(st.Replaced))
	for _, s := range st.Replaced {
		replaced = append(replaced, s.ID)
	}
	link := delegation.RedeemURL(Prefix, st.Code, b.Redirect)
	c.ResponseWriter().Header().Set("Location", Prefix+"impersonation/sessions/"+url.PathEscape(st.Session.ID))
	return c.JSON(http.StatusCreated, struct {
		Session         sessionView `json:"session"`
		RedeemURL       string      `json:"redeem_url"`
		RedeemExpiresAt time.Time   `json:"redeem_expires_at"`
		Replaced        []string    `json:"replaced_sessions"`
	}{viewSession(st.Session, c.Now()), link, st.CodeUntil, replaced})
}

func (h *Impersonation) get(c *Call) error {
	s, err := h.svc.GetSession(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewSession(s, c.Now()))
}

// end answers the ended session to a caller who may read it (GET), and
// 204 to one who may only end it.
func (h *Impersonation) end(c *Call) error {
	s, err := h.svc.End(c.Context(), c.Identity, c.Request.PathValue("id"), authorizer(c))
	if err != nil {
		return err
	}
	if s == nil {
		return c.NoContent()
	}
	return c.JSON(http.StatusOK, viewSession(s, c.Now()))
}

// list shows live sessions: the caller's own by default, anyone's with
// ?actor=<sub>, everyone's with ?all=true.
func (h *Impersonation) list(c *Call) error {
	q := c.Request.URL.Query()
	actor := c.Identity.Subject
	if a := q.Get("actor"); a != "" {
		actor = a
	}
	switch q.Get("all") {
	case "", "false":
	case "true":
		actor = ""
	default:
		return sidecar.Invalid("all", "must be true or false")
	}
	return h.sessions(c, sidecar.SessionFilter{Actor: actor, Customer: q.Get("customer_id"), LiveOnly: true}, h.svc.List)
}

// log is the session log: every session, live or ended, filterable.
func (h *Impersonation) log(c *Call) error {
	q := c.Request.URL.Query()
	f := sidecar.SessionFilter{Actor: q.Get("actor"), Customer: q.Get("customer_id")}
	var err error
	if f.From, err = timeParam(q, "from"); err != nil {
		return err
	}
	if f.To, err = timeParam(q, "to"); err != nil {
		return err
	}
	return h.sessions(c, f, h.svc.Log)
}

func (h *Impersonation) sessions(c *Call, f sidecar.SessionFilter, list func(context.Context, *sidecar.Identity, sidecar.SessionFilter, delegation.Authorize) ([]sidecar.Session, string, error)) error {
	p, err := c.Page()
	if err != nil {
		return err
	}
	f.Page = sidecar.Page{Cursor: p.Cursor, Limit: p.Limit}
	items, next, err := list(c.Context(), c.Identity, f, authorizer(c))
	if err != nil {
		return err
	}
	out := List[sessionView]{Items: make([]sessionView, 0, len(items)), NextCursor: next}
	for i := range items {
		out.Items = append(out.Items, viewSession(&items[i], c.Now()))
	}
	return c.JSON(http.StatusOK, out)
}

// timeParam reads a time filter bound; the zero time when absent, which
// the filters read as no bound. A bound the client names is never that:
// one at or before the zero instant (to=0001-01-01T00:00:00Z, what a Go
// client sends for a time it never set) is refused rather than read as
// everything.
func timeParam(q url.Values, name string) (time.Time, error) {
	s := q.Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, ok := sidecar.ParseTime(s)
	if !ok {
		return time.Time{}, sidecar.Invalid(name, "must be an RFC 3339 time")
	}
	if !t.After(time.Time{}) {
		return time.Time{}, sidecar.Invalid(name, "must be after 0001-01-01T00:00:00Z")
	}
	return t, nil
}

// encodedRedeem serves a redeem link that came with its "?"
// percent-encoded (redeem%3Fcode=..., at any level of encoding), whatever
// the method: proxies' access logs write such a path whole, so its code
// is used up, never redeemed, and the answer says to ask for a new link.
// It reads alike whether the code was live, used or never issued.
func (h *Impersonation) encodedRedeem(r *http.Request) Handler {
	codes, ok := delegation.ExposedRedeemCodes(Prefix, r.URL.EscapedPath(), r.URL.RawQuery)
	if !ok {
		return nil
	}
	return func(c *Call) error { return h.svc.BurnExposed(c.Context(), codes) }
}

// redeem is opened by the staff member's browser on the storefront host:
// the code is the credential. It sets the session cookie and redirects.
// A bearer token, when one is sent and verifies, must be the staff
// member's: opened by anyone else, the link is refused and used up. One
// that does not verify refuses the request before it gets here
// (HandlePublic), so no opener passes as anonymous.
func (h *Impersonation) redeem(c *Call) error {
	q := c.Request.URL.Query()
	rd, err := h.svc.Redeem(c.Context(), c.Identity, q.Get("code"), q.Get("redirect"), c.Request.Host, authorizer(c))
	if err != nil {
		return err
	}
	maxAge := int(rd.Session.ExpiresAt.Sub(c.Now()) / time.Second)
	if maxAge < 1 {
		maxAge = 1
	}
	w := c.ResponseWriter()
	http.SetCookie(w, &http.Cookie{
		Name:     h.svc.Config().SessionCookie,
		Value:    rd.Token,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   true,
		SameSite: http.SameSiteLaxMode,
	})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, c.Request, rd.Redirect, http.StatusFound)
	return nil
}
