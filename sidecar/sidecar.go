package sidecar

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Delegation modes, as injected in x-deputy-mode and seen by policy.
const (
	ModeImpersonation = "impersonation"
	ModePartner       = "partner"
	ModeReseller      = "reseller"
)

// Identity is a verified caller: the claims of a bearer token after
// signature, issuer, audience and time checks, mapped to Deputy's names.
type Identity struct {
	Subject    string         `json:"sub"`
	Name       string         `json:"name,omitempty"`
	Email      string         `json:"email,omitempty"`
	Roles      []string       `json:"roles,omitempty"`
	Privileges []string       `json:"privileges,omitempty"`
	Org        string         `json:"org,omitempty"`
	Domain     string         `json:"domain,omitempty"`
	Issuer     string         `json:"iss,omitempty"`
	ExpiresAt  time.Time      `json:"exp,omitzero"`
	Claims     map[string]any `json:"claims,omitempty"` // all verified claims, as issued
}

// HasRole reports whether the identity carries the role.
func (id *Identity) HasRole(role string) bool {
	if id == nil {
		return false
	}
	for _, r := range id.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Delegation is the acting-on-behalf that applies to one request: a live
// impersonation session, a partner grant or a reseller assignment.
type Delegation struct {
	Mode      string `json:"mode"`
	ID        string `json:"id"`    // session or grant id
	Actor     string `json:"actor"` // the real person
	ActorName string `json:"actor_name,omitempty"`
	// ActorRoles: for impersonation, the staff member's roles at start.
	ActorRoles  []string  `json:"actor_roles,omitempty"`
	ActorOrg    string    `json:"actor_org,omitempty"`
	Subject     string    `json:"subject"` // customer or customer org acted for
	SubjectName string    `json:"subject_name,omitempty"`
	Level       string    `json:"level,omitempty"` // partner level
	Scope       string    `json:"scope,omitempty"` // partner grant scope: organisation or individual
	StoreView   string    `json:"store_view,omitempty"`
	Domain      string    `json:"domain,omitempty"` // reseller domain
	Reason      string    `json:"reason,omitempty"`
	Ticket      string    `json:"ticket,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	// SubjectProtected and SubjectRoles say, for impersonation, what the
	// customer's account is as of this request: protected by its profile
	// or known as staff, and the roles its profile carries. Policy refuses
	// a protected subject, and one holding a role in its protected_roles.
	SubjectProtected bool     `json:"subject_protected,omitempty"`
	SubjectRoles     []string `json:"subject_roles,omitempty"`
	// Attributes are extra facts a resolver found (e.g. resources shared
	// with a cc-level partner); they reach policy unchanged. A resolver
	// may hand the same map out with many delegations: never modify it.
	Attributes map[string]any `json:"attributes,omitempty"`
}

// Request is the part of an incoming check that identity verification and
// delegation resolution look at. Header names are lower case.
type Request struct {
	Method  string
	Host    string
	Path    string // the canonical path: decoded once, slashes merged, ";params" dropped; no query
	Headers map[string]string
	// HeaderMap holds Envoy's header_map entries (encode_raw_headers),
	// names as sent, repeated names as repeated entries.
	HeaderMap []HeaderField
	// PlainNames says that every name in Headers is lower case without
	// "_" (as Envoy sends them), so a header is there under its own name
	// or not at all, and HeaderValues looks it up instead of comparing
	// every name. Whoever builds Headers sets it, from the names it holds;
	// false (unknown) costs only time.
	PlainNames bool
	// PolicyData is the base data of the policy activation deciding the
	// request (nil: the active one). Resolvers read business rules from
	// it, so a check's Go and Rego apply the same revision even when a
	// reload lands in between.
	PolicyData map[string]any
}

// HTTPHeaders returns the headers of an HTTP request as Request.Headers
// holds them: names lower case, the values of a repeated name joined as
// Envoy joins them, "; " for cookie and "," for others (so two bearer
// tokens read as one that no issuer signed, and two Cookie headers as one
// cookie list), every spelling of a name kept apart for HeaderValues to
// find.
// Every surface that reads a request's identity from net/http builds its
// headers here, so that they all read one token. room reserves entries for
// the caller to add.
func HTTPHeaders(h http.Header, room int) map[string]string {
	out := make(map[string]string, len(h)+room)
	for k, vs := range h {
		k = strings.ToLower(k)
		sep := ","
		if k == "cookie" {
			sep = "; "
		}
		out[k] = strings.Join(vs, sep)
	}
	return out
}

// HeaderField is one header as sent.
type HeaderField struct{ Name, Value string }

// Header returns the value of a lower-case header name, as the upstream
// gets it: from Headers, and from HeaderMap, where Envoy sends the headers
// with encode_raw_headers (names in any case). Several values are joined
// as Envoy joins a repeated header in Headers ("; " for cookie, "," for
// others), so two bearer tokens read as one that no issuer signed.
func (r *Request) Header(name string) string {
	v, ok := r.Headers[name]
	if len(r.HeaderMap) == 0 {
		return v
	}
	sep := ","
	if name == "cookie" {
		sep = "; "
	}
	for _, h := range r.HeaderMap {
		if strings.EqualFold(h.Name, name) {
			if ok {
				v += sep
			}
			v, ok = v+h.Value, true
		}
	}
	return v
}

// HeaderValues returns every value sent under a header name (lower case,
// "-" between words) in any spelling an upstream reads as it: any case,
// "_" for "-" (Caddy and Envoy forward underscore names, and CGI and PHP
// read both as HTTP_X_NAME), from Headers and HeaderMap, in a stable order.
func (r *Request) HeaderValues(name string) []string {
	return r.AppendHeaderValues(nil, name)
}

// AppendHeaderValues appends HeaderValues(name) to dst and returns it: a
// caller on the check path passes a buffer on its stack.
func (r *Request) AppendHeaderValues(dst []string, name string) []string {
	if v, ok := r.Headers[name]; ok {
		dst = append(dst, v)
	}
	if !r.PlainNames {
		var other []string
		for k, v := range r.Headers {
			if k != name && SameHeaderName(k, name) {
				other = append(other, v)
			}
		}
		slices.Sort(other)
		dst = append(dst, other...)
	}
	for _, h := range r.HeaderMap {
		if SameHeaderName(h.Name, name) {
			dst = append(dst, h.Value)
		}
	}
	return dst
}

// HeaderName is the form Deputy keeps a configured header name in: lower
// case, "-" between words. CGI, PHP and WSGI upstreams read "_" and "-" in
// a name alike, so a name configured as x_auth_token is x-auth-token to
// them, and must be to Deputy too, or Deputy reads one spelling while the
// application reads another.
func HeaderName(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}

// ValidHeaderName reports whether s may name a header Deputy reads, owns
// or sets: not empty, and only letters, digits, "-" and "_". PHP, CGI and
// WSGI read "." and every other byte as "_", as they read "-": a name
// configured as x.acme.subject reaches the application as HTTP_X_ACME_SUBJECT,
// the name a client's plain x-acme-subject reaches it under, which Deputy
// would neither own nor read.
func ValidHeaderName(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return s != ""
}

// InvalidHeaderName is the EINVALID error naming field when name is not
// a ValidHeaderName, or nil.
func InvalidHeaderName(field, name string) error {
	if ValidHeaderName(name) {
		return nil
	}
	return Invalid(field, "%q %s", name, headerNameRule)
}

// InvalidHeaderNameEntry is InvalidHeaderName for entry i of the list
// field, naming the entry.
func InvalidHeaderNameEntry(field string, i int, name string) error {
	if ValidHeaderName(name) {
		return nil
	}
	return Invalid(field, "entry %d: %q %s", i, name, headerNameRule)
}

const headerNameRule = "is not a header name: use only letters, digits, \"-\" and \"_\" " +
	"(upstreams read \".\" and other bytes as they read \"-\": the application would read a client's header under Deputy's name)"

// SameHeaderName reports whether a header name as sent reads as name (lower
// case, "-" between words): in any case, with "_" for "-".
func SameHeaderName(sent, name string) bool {
	if len(sent) != len(name) {
		return false
	}
	for i := 0; i < len(sent); i++ {
		c := sent[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// IdentityVerifier turns the credentials of a request into an Identity.
// It returns (nil, nil) when the request presents no credentials, and an
// error (EUNAUTHORIZED with the reason) when it presents bad ones.
type IdentityVerifier interface {
	Verify(ctx context.Context, r *Request) (*Identity, error)
}

// DelegationResolver finds the delegation a request asks for. It returns
// (nil, nil) when the request does not act on anyone's behalf. Errors with
// EUNAVAILABLE mean state could not be read: the check fails closed.
type DelegationResolver interface {
	Resolve(ctx context.Context, r *Request, id *Identity) (*Delegation, error)
}

// DelegationResolverFunc adapts a function to DelegationResolver.
type DelegationResolverFunc func(ctx context.Context, r *Request, id *Identity) (*Delegation, error)

func (f DelegationResolverFunc) Resolve(ctx context.Context, r *Request, id *Identity) (*Delegation, error) {
	return f(ctx, r, id)
}

// ClearCookie rides (as Err) on a delegation error whose cookie names no
// live session: the denial carries SetCookie so the browser drops it
// instead of sending it on every request.
type ClearCookie struct {
	SetCookie string // the Set-Cookie value
}

func (c *ClearCookie) Error() string { return "clear the session cookie" }

// Attempt rides (as Err, WithAttempt) on a delegation error: whom the
// refused request tried to act for. It is for the decision record alone,
// beside the caller's own identity: it grants nothing, and reaches
// neither policy nor the upstream.
type Attempt struct {
	// OnBehalfOf is the customer the request named, or the customer of
	// the session its cookie named.
	OnBehalfOf string
	// Session is the id of the session the cookie named, when one was
	// found; never the cookie's token, which is the credential.
	Session      string
	SessionActor string // that session's actor
	Err          error  // the cause it stands in front of
}

func (a *Attempt) Error() string { return "attempted delegation" }

func (a *Attempt) Unwrap() error { return a.Err }

// WithAttempt returns err, an *Error, as a new *Error whose cause is a,
// in front of the cause it had (a.Err is set to it); any other error,
// which no delegation refusal is, is returned unchanged. err itself is
// not modified: a resolver may hand the same error to many requests.
func WithAttempt(err error, a Attempt) error {
	e, ok := err.(*Error)
	if !ok {
		return err
	}
	c := *e
	a.Err = e.Err
	c.Err = &a
	return &c
}

// ActorTokenSigner mints the short-lived JWT injected as x-deputy-token.
type ActorTokenSigner interface {
	Sign(d *Delegation) (string, error)
}

// Decision is what a check decided and why, as logged and counted.
type Decision struct {
	ID         string
	Time       time.Time
	Allowed    bool
	HTTPStatus int
	Reason     string
	Error      string // evaluation or resolution error, if any
	DryRun     bool   // decided with dry run on: the client was allowed regardless

	Method  string
	Host    string
	Path    string
	TraceID string

	Identity   *Identity
	Delegation *Delegation
	// Attempt is whom a request refused its delegation tried to act for,
	// when the refusal says (nil otherwise); Delegation is nil then.
	Attempt *Attempt

	Revision string // policy bundle revision
	// Policy is the *policy.Activation that decided, nil when none was
	// serving. The decision log masks Input with its data.system.log.mask
	// rules, whichever set serves when the record is written; a record
	// whose Policy is of another type loses its input.
	Policy  any
	Latency time.Duration
	Stages  Stages

	// Input is the policy input, for decision logs that keep it (masked).
	Input any
}

// Stages are the time spent in each stage of a check.
type Stages struct {
	Identity time.Duration
	State    time.Duration
	Policy   time.Duration
}

// DecisionLogger receives every decision. Log must not block: it queues.
type DecisionLogger interface {
	Log(d *Decision)
}

// Clock returns the current time; injected so tests control expiry.
type Clock func() time.Time

// URLOverrideHeaders are the request headers that replace the request URI
// in upstreams that honour them (IIS URL Rewrite sets them; Zend Framework
// 1 and Magento 1, Laminas and Symfony before their 2018 fixes route on
// them; ingress-nginx sends X-Original-URL with the query). The check
// refuses them and the decision log masks the credentials in them. An
// array, returned by value: no caller can change another's list.
func URLOverrideHeaders() [2]string {
	return [...]string{"x-original-url", "x-rewrite-url"}
}
