// Package api owns Deputy's management HTTP API under /deputy/v1/: routing,
// bearer authentication, authorization of every action through
// data.deputy.manage.decision, strict JSON bodies, pagination and the JSON
// error shape. Resource handlers (impersonation, partner, reseller) register
// their routes through Routes; they never parse bodies or write errors
// themselves.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Prefix is where the management API is mounted.
const Prefix = "/deputy/v1/"

// Evaluator is the part of the policy engine the API needs;
// *policy.Engine satisfies it.
type Evaluator interface {
	Eval(ctx context.Context, query string, input ast.Value) (policy.Result, error)
}

// engineEvaluator adapts *policy.Engine, whose Eval takes variadic options.
type engineEvaluator struct{ e *policy.Engine }

func (a engineEvaluator) Eval(ctx context.Context, q string, in ast.Value) (policy.Result, error) {
	return a.e.Eval(ctx, q, in)
}

// evalOn evaluates on the serving activation and returns it, so the
// decision log masks the decision with the rules of the set that made it.
func (a engineEvaluator) evalOn(ctx context.Context, q string, in ast.Value) (policy.Result, *policy.Activation, error) {
	act := a.e.Current()
	if act == nil {
		return policy.Result{}, nil, policy.ErrNoPolicy
	}
	res, err := act.Eval(ctx, q, in)
	return res, act, err
}

// Routes is implemented by each resource area of the API.
type Routes interface {
	Register(r *Router)
}

// RoutesFunc adapts a function to Routes.
type RoutesFunc func(r *Router)

// Register calls f(r).
func (f RoutesFunc) Register(r *Router) { f(r) }

// Handler serves one authenticated (or public) call. A returned error is
// written as the JSON error body with the status of its code.
type Handler func(c *Call) error

// Server is the management API. It implements http.Handler.
type Server struct {
	cfg        Config
	verifier   sidecar.IdentityVerifier
	eval       Evaluator
	query      string
	logger     *slog.Logger
	clock      sidecar.Clock
	middleware []func(http.Handler) http.Handler
	routes     []Routes
	staff      func(ctx context.Context, subject string)
	decisions  sidecar.DecisionLogger
	writes     *writeLimiter

	mux       *http.ServeMux
	intercept []func(*http.Request) Handler
	handler   http.Handler
	paths     map[string]bool
	endpoints []string // "METHOD path" as registered, for tests that walk them
}

// Option configures a Server.
type Option func(*Server)

// WithConfig sets limits and page sizes; zero fields take defaults.
func WithConfig(c Config) Option { return func(s *Server) { s.cfg = c } }

// WithDecisionLogger logs every management decision, allowed or refused,
// beside the checks' decisions: ops see who was refused what, which the
// audit trail (changes made) does not hold.
func WithDecisionLogger(l sidecar.DecisionLogger) Option {
	return func(s *Server) { s.decisions = l }
}

// WithVerifier sets how bearer tokens are verified.
func WithVerifier(v sidecar.IdentityVerifier) Option { return func(s *Server) { s.verifier = v } }

// WithEngine authorizes actions with the policy engine.
func WithEngine(e *policy.Engine) Option {
	return func(s *Server) { s.eval = engineEvaluator{e} }
}

// WithEvaluator authorizes actions with any Evaluator.
func WithEvaluator(e Evaluator) Option { return func(s *Server) { s.eval = e } }

// WithQuery overrides the manage query (default data.deputy.manage.decision).
func WithQuery(q string) Option { return func(s *Server) { s.query = q } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.logger = l } }

// WithClock sets the clock.
func WithClock(c sidecar.Clock) Option { return func(s *Server) { s.clock = c } }

// WithMiddleware wraps the whole API (metrics, access logs). The first
// middleware is the outermost.
func WithMiddleware(m ...func(http.Handler) http.Handler) Option {
	return func(s *Server) { s.middleware = append(s.middleware, m...) }
}

// WithStaffRecorder is told the subject of every action policy allowed
// with a staff permission (the decision's "staff": true), so Deputy knows
// staff without data entry. It must be cheap after the first call for a
// subject (delegation.Impersonation.RecordStaff is).
func WithStaffRecorder(f func(ctx context.Context, subject string)) Option {
	return func(s *Server) { s.staff = f }
}

// WithRoutes adds resource areas.
func WithRoutes(r ...Routes) Option { return func(s *Server) { s.routes = append(s.routes, r...) } }

// New builds the API. Without a verifier every authenticated call is 401;
// without an evaluator every action is 503.
func New(opts ...Option) *Server {
	s := &Server{
		query:  policy.DefaultManageQuery,
		logger: slog.Default(),
		clock:  time.Now,
		mux:    http.NewServeMux(),
		paths:  map[string]bool{},
	}
	for _, o := range opts {
		o(s)
	}
	s.cfg.SetDefaults()
	s.writes = newWriteLimiter(s.cfg)
	r := &Router{s: s}
	for _, rs := range s.routes {
		rs.Register(r)
	}
	s.mux.HandleFunc(Prefix, func(w http.ResponseWriter, req *http.Request) {
		writeError(w, s.logger, sidecar.Errorf(sidecar.ENOTFOUND, "no such resource: %s", req.URL.Path))
	})
	var h http.Handler = http.HandlerFunc(s.route)
	for i := len(s.middleware) - 1; i >= 0; i-- {
		h = s.middleware[i](h)
	}
	s.handler = h
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// route offers the request to the interceptors, then to the routes.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	for _, f := range s.intercept {
		if h := f(r); h != nil {
			s.serve(w, r, h, anyCredential, false)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// Router registers endpoints under Prefix.
type Router struct{ s *Server }

// Handle registers an authenticated endpoint. path is relative to Prefix
// and may use http.ServeMux wildcards, e.g. "impersonation/sessions/{id}".
func (rt *Router) Handle(method, path string, h Handler) { rt.handle(method, path, h, signedIn, false) }

// HandleNarrowing registers an authenticated write that narrows access
// (ends a session, withdraws consent, revokes, rejects, removes): it is
// never refused for the caller's write budget, since a refusal would leave
// in force what the caller asked to end. The lifecycle takes from the
// budget (delegation.WithWriteBudget) for what the write does that
// narrows nothing: finding it done already (it records again and
// publishes its eviction to every replica, and a caller could repeat it
// without end), or widening access (consent given on the same route).
// An endpoint whose no-op is dearer than a read must do so.
func (rt *Router) HandleNarrowing(method, path string, h Handler) {
	rt.handle(method, path, h, signedIn, true)
}

// HandlePublic registers an endpoint that authenticates by other means
// (e.g. a single-use code); the caller's identity is still read when a
// bearer token is present, and a credential that is refused refuses the
// request, as on every other endpoint.
func (rt *Router) HandlePublic(method, path string, h Handler) {
	rt.handle(method, path, h, noneOrVerified, false)
}

// credential is what an endpoint asks of the caller's credential.
type credential int

const (
	// signedIn: a bearer token that verifies.
	signedIn credential = iota
	// noneOrVerified: none, or one that verifies. A credential that is
	// refused (expired, another issuer's, malformed) is not read as
	// none: the caller meant to be someone, and a public endpoint that
	// judges who opens it (a redeem link opened by anyone but its staff
	// member is used up, and the audit names the opener) would let that
	// person pass as anonymous.
	noneOrVerified
	// anyCredential: read when it verifies, else ignored; for what must
	// happen whoever asks (an interceptor using up an exposed code).
	anyCredential
)

// Intercept offers every request, whatever its method and path, to f
// before it is routed: a Handler f returns serves it as a public
// endpoint's does, except that a refused credential is ignored, not
// refused: what it does must happen whoever asks. It is for a request the
// routes would answer 404 (or the mux with a redirect to a cleaned path)
// that must be acted on, such as a redeem link whose "?" arrived
// percent-encoded.
func (rt *Router) Intercept(f func(*http.Request) Handler) {
	rt.s.intercept = append(rt.s.intercept, f)
}

func (rt *Router) handle(method, path string, h Handler, cred credential, narrows bool) {
	s := rt.s
	full := Prefix + strings.TrimPrefix(path, "/")
	s.endpoints = append(s.endpoints, method+" "+path)
	s.mux.HandleFunc(method+" "+full, func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, h, cred, narrows)
	})
	if !s.paths[full] {
		s.paths[full] = true
		// A known path with another method: 405 in the API's error shape.
		s.mux.HandleFunc(full, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, s.logger, &sidecar.Error{Code: codeMethodNotAllowed, Message: "method " + r.Method + " not allowed"})
		})
	}
}

// codeMethodNotAllowed is local to the API: no other surface needs it.
const codeMethodNotAllowed = "method_not_allowed"

func (s *Server) serve(w http.ResponseWriter, r *http.Request, h Handler, cred credential, narrows bool) {
	if s.decisions != nil {
		var flush func()
		w, r, flush = s.recordCall(w, r)
		defer flush()
	}
	c := &Call{Request: r, w: w, s: s}
	id, err := s.authenticate(r)
	if err != nil && cred != anyCredential {
		writeError(w, s.logger, err)
		return
	}
	c.Identity = id
	if cred == signedIn && id == nil {
		writeError(w, s.logger, sidecar.Errorf(sidecar.EUNAUTHORIZED, "missing bearer token"))
		return
	}
	// Before the body is read or the store asked: a caller over budget
	// costs nothing more. A narrowing write is counted by its lifecycle
	// only if it narrows nothing (see HandleNarrowing).
	if id != nil && mutating(r.Method) {
		if narrows {
			c.Request = r.WithContext(delegation.WithWriteBudget(r.Context(), c.takeWrite))
		} else if err := c.takeWrite(); err != nil {
			writeError(w, s.logger, err)
			return
		}
		if err := unconditional(r.Header); err != nil {
			writeError(w, s.logger, err)
			return
		}
	}
	if err := h(c); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = &sidecar.Error{Code: sidecar.ETOOLARGE, Field: "body", Message: "request body too large", Err: err}
		}
		if c.wrote {
			s.logger.Error("api handler failed after writing", "path", r.URL.Path, "error", err)
			return
		}
		writeError(w, s.logger, err)
	}
}

// preconditions are the request headers that make a write conditional
// (RFC 9110 §13.1; If-Modified-Since applies to reads only).
var preconditions = []string{"If-Match", "If-None-Match", "If-Unmodified-Since"}

// unconditional refuses a write that carries a precondition. No
// management resource has an entity tag or a modification time, so no
// precondition on one can be shown true, and RFC 9110 §13.1.1 has the
// server evaluate it before performing the method: a caller that sends
// If-Match relies on the write not happening over a change it has not
// seen (a sync job putting back a profile an administrator just
// protected), and applying it as if unconditional would be the lost
// update it guards against. Reads keep ignoring them: a full answer is
// always a correct one.
func unconditional(h http.Header) error {
	for _, name := range preconditions {
		if len(h.Values(name)) > 0 {
			return sidecar.Errorf(sidecar.EPRECONDITION, "%s is not supported: management resources carry no entity tags, so the write was not made", name)
		}
	}
	return nil
}

// authenticate reads the caller's token as the check path reads it: the
// verifier is handed every header, so it reads the one identity.header
// names, under every spelling, refusing a token sent more than once.
func (s *Server) authenticate(r *http.Request) (*sidecar.Identity, error) {
	if s.verifier == nil {
		if r.Header.Get("Authorization") != "" {
			return nil, sidecar.Errorf(sidecar.EUNAUTHORIZED, "bearer tokens are not accepted: no verifier configured")
		}
		return nil, nil
	}
	req := &sidecar.Request{
		Method:  r.Method,
		Host:    r.Host,
		Path:    r.URL.Path,
		Headers: sidecar.HTTPHeaders(r.Header, 0),
	}
	id, err := s.verifier.Verify(r.Context(), req)
	if err != nil {
		if sidecar.ErrorCode(err) == sidecar.EINTERNAL {
			return nil, &sidecar.Error{Code: sidecar.EUNAUTHORIZED, Message: "invalid bearer token", Err: err}
		}
		return nil, err
	}
	return id, nil
}

// Authorization is the manage policy's answer for one action.
type Authorization struct {
	Allowed bool
	Reason  string
	// Result is the whole decision object, for policies that return more
	// than allowed/reason (e.g. computed limits).
	Result map[string]any
}

// Authorize asks data.deputy.manage.decision whether identity may perform
// action on target. extra adds top-level input fields. A denial is an
// EFORBIDDEN error whose message is the policy's reason.
func (s *Server) Authorize(ctx context.Context, id *sidecar.Identity, action string, target map[string]any, extra map[string]any) (*Authorization, error) {
	if s.eval == nil {
		return nil, sidecar.Errorf(sidecar.EUNAVAILABLE, "no policy engine")
	}
	in := make(map[string]any, len(extra)+3)
	for k, v := range extra {
		in[k] = v
	}
	in["action"] = action
	if target == nil {
		target = map[string]any{}
	}
	in["target"] = target
	if id != nil {
		in["identity"] = identityInput(id)
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		return nil, &sidecar.Error{Code: sidecar.EINTERNAL, Message: "build policy input", Err: err}
	}
	start := s.clock()
	var res policy.Result
	var act *policy.Activation
	if ee, ok := s.eval.(engineEvaluator); ok {
		res, act, err = ee.evalOn(ctx, s.query, v)
	} else {
		res, err = s.eval.Eval(ctx, s.query, v)
	}
	rec := manageRecord{start: start, id: id, input: in, revision: res.Revision, policy: act}
	if err != nil {
		s.logDecision(ctx, rec, nil, err)
		return nil, err
	}
	a := &Authorization{Reason: "no_rule"}
	if res.Value != nil {
		switch x := res.Value.Value.(type) {
		case ast.Boolean:
			a.Allowed = bool(x)
			a.Reason = ""
		case ast.Object:
			var m map[string]any
			if err := ast.As(x, &m); err == nil {
				a.Result = m
				a.Allowed, _ = m["allowed"].(bool)
				a.Reason, _ = m["reason"].(string)
			}
		}
	}
	if !a.Allowed {
		if a.Reason == "" {
			a.Reason = "denied"
		}
		err := denial(a)
		s.logDecision(ctx, rec, a, err)
		return a, err
	}
	s.logDecision(ctx, rec, a, nil)
	if staff, _ := a.Result["staff"].(bool); staff && s.staff != nil && id != nil && id.Subject != "" {
		s.staff(ctx, id.Subject)
	}
	return a, nil
}

// denial turns a refusal into an error. Policy may name a status and a
// field (reason_info in deputy.manage) so that, for example, a missing
// reason reads as 400 on "reason" rather than a bare 403.
func denial(a *Authorization) error {
	code := sidecar.EFORBIDDEN
	switch fmt.Sprint(a.Result["http_status"]) {
	case "400":
		code = sidecar.EINVALID
	case "401":
		code = sidecar.EUNAUTHORIZED
	case "404":
		code = sidecar.ENOTFOUND
	case "409":
		code = sidecar.ECONFLICT
	}
	field, _ := a.Result["field"].(string)
	return &sidecar.Error{Code: code, Message: a.Reason, Field: field}
}

// identityInput is the identity as policy sees it: the JSON names of
// sidecar.Identity, exp as seconds since the epoch.
func identityInput(id *sidecar.Identity) map[string]any {
	m := map[string]any{"sub": id.Subject}
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	put("name", id.Name)
	put("email", id.Email)
	put("org", id.Org)
	put("domain", id.Domain)
	put("iss", id.Issuer)
	m["roles"] = strs(id.Roles)
	m["privileges"] = strs(id.Privileges)
	if !id.ExpiresAt.IsZero() {
		m["exp"] = id.ExpiresAt.Unix()
	}
	if id.Claims != nil {
		m["claims"] = id.Claims
	}
	return m
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// Call is one API request as a handler sees it.
type Call struct {
	Request  *http.Request
	Identity *sidecar.Identity // nil only on public endpoints without a token
	w        http.ResponseWriter
	s        *Server
	wrote    bool
	counted  bool // a write taken from the caller's budget (takeWrite)
}

// takeWrite takes one write from the caller's budget, once per call: a
// lifecycle may find more than one reason to count the same write.
func (c *Call) takeWrite() error {
	if c.counted || c.Identity == nil {
		return nil
	}
	if wait, ok := c.s.writes.allow(c.Identity, c.s.clock()); !ok {
		return rateLimited(wait)
	}
	c.counted = true
	return nil
}

// Context returns the request's context.
func (c *Call) Context() context.Context { return c.Request.Context() }

// Now returns the server clock's time.
func (c *Call) Now() time.Time { return c.s.clock() }

// ResponseWriter gives direct access for handlers that redirect or set
// cookies; writing through it marks the call as answered.
func (c *Call) ResponseWriter() http.ResponseWriter { c.wrote = true; return c.w }

// Authorize authorizes the caller for action on target (see Server.Authorize).
func (c *Call) Authorize(action string, target map[string]any, extra map[string]any) (*Authorization, error) {
	return c.s.Authorize(c.Context(), c.Identity, action, target, extra)
}

// authorizer is how a lifecycle asks the manage policy about the caller:
// the lifecycle, not the handler, decides when and on which stored facts,
// so a handler cannot forget to ask.
func authorizer(c *Call) delegation.Authorize {
	return func(action string, target map[string]any) error {
		_, err := c.Authorize(action, target, nil)
		return err
	}
}

// Decode reads the request body strictly into v (see Decode).
func (c *Call) Decode(v any) error { return Decode(c.w, c.Request, c.s.cfg.MaxBodyBytes, v) }

// Page reads ?limit=&cursor= with the server's page sizes.
func (c *Call) Page() (Page, error) {
	return ParsePage(c.Request.URL.Query(), c.s.cfg.PageSize, c.s.cfg.MaxPageSize)
}

// JSON writes v with the status.
func (c *Call) JSON(status int, v any) error {
	c.wrote = true
	writeJSON(c.w, status, v)
	return nil
}

// NoContent answers 204.
func (c *Call) NoContent() error {
	c.wrote = true
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names what went wrong; Field is set for invalid input.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func writeError(w http.ResponseWriter, logger *slog.Logger, err error) {
	status := sidecar.HTTPStatus(err)
	code := sidecar.ErrorCode(err)
	var e *sidecar.Error
	msg := "internal error"
	field := ""
	if errors.As(err, &e) {
		msg, field = e.Message, e.Field
		if e.Code == codeMethodNotAllowed {
			status = http.StatusMethodNotAllowed
		}
	}
	if status >= 500 {
		logger.Error("api error", "code", code, "error", err)
	}
	if code == sidecar.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="deputy"`)
	}
	var ra *sidecar.RetryAfter
	if code == sidecar.ERATELIMIT && errors.As(err, &ra) {
		w.Header().Set("Retry-After", strconv.FormatInt(retryAfterSeconds(ra.Wait), 10))
	}
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg, Field: field}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}
