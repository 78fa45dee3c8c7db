// Package authz is the check pipeline: strip owned headers, verify the
// caller's identity, resolve the delegation the request asks for, evaluate
// the prepared policy, and turn the result into a transport-neutral
// Response with the delegated identity injected.
package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// Defaults.
const (
	DefaultOwnedPrefix = "x-deputy-"
	DefaultErrorStatus = http.StatusForbidden
	// DefaultMaxPathSegments is far more segments than any storefront
	// route has (Magento's deepest, with store code and key/value
	// parameters, have about a dozen).
	DefaultMaxPathSegments = 128
	// DefaultMaxRouteDirsBytes bounds what route_dirs, the path from each
	// segment on, holds in all. Long storefront paths hold a few KB: a
	// 255-byte product URL key under three categories 1.1 KB, an admin
	// grid URL with a base64 filter and its secret key 4 KB, a 1 KB
	// encoded search term 3.7 KB; the longest, a Magento URL carrying its
	// 2,000-byte page URL as uenc after nine segments of key/value
	// parameters, 27 KB. DefaultMaxPathSegments one- and two-letter
	// segments (16.6 KB, 24.9 KB) pass too.
	DefaultMaxRouteDirsBytes = 32 << 10
)

// Reasons the pipeline itself gives (policies give their own).
const (
	ReasonMalformedRequest = "malformed_request"
	ReasonUndefined        = "undefined_decision"
	ReasonEvalError        = "evaluation_error"
	ReasonInvalidDecision  = "invalid_decision"
	ReasonStateUnavailable = "state_unavailable"
	ReasonNoPolicy         = "no_policy"
	ReasonTokenError       = "actor_token_error"
	// ReasonNotEnforceable: the policy allowed on a condition the proxy in
	// front cannot carry out (see CheckEnforced).
	ReasonNotEnforceable = "result_not_enforceable"
	ReasonAllowed        = "allowed"
	ReasonDenied         = "denied"
)

// Evaluator hands out the serving policy activation; *policy.Engine is one.
// A check builds its input for, and evaluates on, one activation, so a
// policy swap mid-check cannot mix the two.
type Evaluator interface {
	Current() *policy.Activation
}

// Observer sees every decision (metrics).
type Observer interface {
	ObserveDecision(d *sidecar.Decision)
}

// Pipeline decides checks. It is safe for concurrent use.
type Pipeline struct {
	eval        Evaluator
	query       string
	verifier    sidecar.IdentityVerifier
	resolvers   []sidecar.DelegationResolver
	signer      sidecar.ActorTokenSigner
	log         sidecar.DecisionLogger
	observer    Observer
	inputOpts   InputOptions
	prefix      string
	tokenHeader string
	errorStatus int
	dryRun      bool
	keepInput   bool
	clock       sidecar.Clock
	facts       map[string]any
	factsTerm   atomic.Pointer[activationFacts] // input.deputy when no owned header was stripped
	resultTerms atomic.Pointer[resultTerms]     // the activation's results parsed once
	names       headerNames
	evalOpts    []rego.EvalOption
	overrides   []string
	// carrierList and identityHeader: see WithCredentialCarriers and
	// WithIdentityHeader; carriers is carrierList parsed.
	carrierList    []string
	carriers       CredentialCarriers
	identityHeader string
	identities     identityTerms
	delegations    delegationTerms
	requests       requestTerms
	// apiPrefix and burn: see WithRedeemBurner.
	apiPrefix string
	burn      func(ctx context.Context, codes []string) error
}

// activationFacts is input.deputy built once for the activation it names
// (its revision is part of it).
type activationFacts struct {
	act  *policy.Activation
	term *ast.Term
	// read are the facts a rule can read, for the checks that add the
	// request to them.
	read [][2]*ast.Term
}

// Option configures a Pipeline.
type Option func(*Pipeline)

// WithQuery sets the decision query (default data.deputy.authz.decision).
func WithQuery(q string) Option { return func(p *Pipeline) { p.query = q } }

// WithVerifier sets the identity verifier.
func WithVerifier(v sidecar.IdentityVerifier) Option { return func(p *Pipeline) { p.verifier = v } }

// WithResolvers sets the delegation resolvers, tried in order; the first
// that finds a delegation, or refuses the one the request asks for, wins.
func WithResolvers(r ...sidecar.DelegationResolver) Option {
	return func(p *Pipeline) { p.resolvers = append(p.resolvers, r...) }
}

// WithActorTokenSigner sets the signer of the x-deputy-token header.
func WithActorTokenSigner(s sidecar.ActorTokenSigner) Option {
	return func(p *Pipeline) { p.signer = s }
}

// WithDecisionLogger sets where decisions are logged.
func WithDecisionLogger(l sidecar.DecisionLogger) Option { return func(p *Pipeline) { p.log = l } }

// WithObserver sets the metrics observer.
func WithObserver(o Observer) Option { return func(p *Pipeline) { p.observer = o } }

// WithOwnedPrefix sets the owned header prefix (default x-deputy-).
func WithOwnedPrefix(prefix string) Option {
	return func(p *Pipeline) { p.prefix = ownedName(prefix) }
}

// WithActorTokenHeader names the actor token header (default <prefix>token).
func WithActorTokenHeader(h string) Option {
	return func(p *Pipeline) { p.tokenHeader = ownedName(h) }
}

// WithErrorStatus sets the status of denials caused by evaluation errors
// and undefined decisions (default 403).
func WithErrorStatus(code int) Option { return func(p *Pipeline) { p.errorStatus = code } }

// WithBodyParsing switches parsing of request bodies (default on).
func WithBodyParsing(on bool) Option { return func(p *Pipeline) { p.inputOpts.SkipBodyParsing = !on } }

// WithBareQuery lets a query whose first field has no "=" (?preview)
// through, for upstreams that never route on the query; by default it is
// refused, as CodeIgniter's QUERY_STRING protocol runs it as a route.
func WithBareQuery(allow bool) Option {
	return func(p *Pipeline) { p.inputOpts.AllowBareQuery = allow }
}

// WithQueryRouteParams names query parameters the upstream routes on
// instead of the path (CodeIgniter's c, m and d; Yii's r; Drupal 7's q):
// a request naming one is refused, since Deputy decides on the path.
func WithQueryRouteParams(params []string) Option {
	return func(p *Pipeline) {
		p.inputOpts.QueryRouteParams = nil
		for _, name := range params {
			p.inputOpts.QueryRouteParams = append(p.inputOpts.QueryRouteParams, fieldKey(name))
		}
	}
}

// WithMaxPathSegments sets how many segments a path may have (default
// DefaultMaxPathSegments); a path with more is refused as malformed.
// input.deputy.request.route_dirs holds the route from each segment on,
// so what a check builds grows with segments times the path's length.
func WithMaxPathSegments(n int) Option {
	return func(p *Pipeline) { p.inputOpts.MaxPathSegments = n }
}

// WithMaxRouteDirsBytes sets how many bytes the path from each segment
// on may hold in all (default DefaultMaxRouteDirsBytes), which is what
// input.deputy.request.route_dirs holds; a path past it is refused as
// malformed. Under WithMaxPathSegments long segments still weigh
// segments times length.
func WithMaxRouteDirsBytes(n int) Option {
	return func(p *Pipeline) { p.inputOpts.MaxRouteDirsBytes = n }
}

// WithMethodOverrides sets where a request may name another method for
// the upstream to run (default DefaultMethodOverrides); each carrier was
// checked with ParseMethodOverrides. An empty list reads none.
func WithMethodOverrides(carriers []string) Option {
	return func(p *Pipeline) { p.overrides = append([]string{}, carriers...) }
}

// WithCredentialCarriers sets where besides the identity header a request
// may carry a token the upstream reads (default
// DefaultCredentialCarriers); each carrier was checked with
// ParseCredentialCarriers. An empty list reads none.
func WithCredentialCarriers(carriers []string) Option {
	return func(p *Pipeline) { p.carrierList = append([]string{}, carriers...) }
}

// WithIdentityHeader names the header the verifier reads the bearer token
// from (default identity.DefaultHeader): a carrier holding that very
// token is the same credential.
func WithIdentityHeader(name string) Option {
	return func(p *Pipeline) { p.identityHeader = sidecar.HeaderName(name) }
}

// WithOnBehalfOfHeader names the header a client names the customer it
// acts for in (default delegation.DefaultOnBehalfOfHeader).
func WithOnBehalfOfHeader(name string) Option {
	return func(p *Pipeline) { p.inputOpts.OnBehalfOf = ownedName(name) }
}

// WithDryRun makes every check allowed while still evaluating and logging
// what the policy decided, for rolling out new policies.
func WithDryRun(on bool) Option { return func(p *Pipeline) { p.dryRun = on } }

// WithDecisionInput keeps the policy input on logged decisions (masked by
// the decision log).
func WithDecisionInput(on bool) Option { return func(p *Pipeline) { p.keepInput = on } }

// WithEvalOptions passes options to every evaluation (e.g. a tracer for
// `deputy eval --explain`).
func WithEvalOptions(o ...rego.EvalOption) Option {
	return func(p *Pipeline) { p.evalOpts = append(p.evalOpts, o...) }
}

// WithRedeemBurner has a check for a redeem link under the management
// API at apiPrefix whose "?" came percent-encoded (a spelling proxies'
// access logs write whole, code included; delegation.ExposedRedeemCodes)
// burn the codes it carries and refuse with burn's answer, before policy
// is asked: such a link reaches a check when the proxy asks Deputy about
// Deputy's own paths too, and a denial would leave the logged code valid.
// delegation.Impersonation.BurnExposed is the burner.
func WithRedeemBurner(apiPrefix string, burn func(ctx context.Context, codes []string) error) Option {
	return func(p *Pipeline) { p.apiPrefix, p.burn = apiPrefix, burn }
}

// WithClock sets the clock.
func WithClock(c sidecar.Clock) Option { return func(p *Pipeline) { p.clock = c } }

// WithFacts adds static sidecar facts to input.deputy (config switches).
// The pipeline adds revision (the serving policy's), dry_run and, when
// owned headers were stripped, stripped_headers; facts cannot replace them.
func WithFacts(f map[string]any) Option { return func(p *Pipeline) { p.facts = f } }

// New returns a pipeline evaluating with eval.
func New(eval Evaluator, opts ...Option) *Pipeline {
	p := &Pipeline{
		eval:        eval,
		query:       policy.DefaultDecisionQuery,
		prefix:      DefaultOwnedPrefix,
		errorStatus: DefaultErrorStatus,
		clock:       time.Now,
		identities:  newIdentityTerms(),
		requests:    newRequestTerms(),
	}
	for _, o := range opts {
		o(p)
	}
	if p.tokenHeader == "" {
		p.tokenHeader = p.prefix + "token"
	}
	if p.inputOpts.OnBehalfOf == "" {
		p.inputOpts.OnBehalfOf = delegation.DefaultOnBehalfOfHeader
	}
	if p.inputOpts.MaxPathSegments <= 0 {
		p.inputOpts.MaxPathSegments = DefaultMaxPathSegments
	}
	if p.inputOpts.MaxRouteDirsBytes <= 0 {
		p.inputOpts.MaxRouteDirsBytes = DefaultMaxRouteDirsBytes
	}
	p.inputOpts.OwnedPrefix = p.prefix
	p.inputOpts.ActorTokenHeader = p.tokenHeader
	if p.overrides == nil {
		p.overrides = DefaultMethodOverrides()
	}
	p.inputOpts.Methods, _ = ParseMethodOverrides(p.overrides) // checked by the caller
	if p.carrierList == nil {
		p.carrierList = DefaultCredentialCarriers()
	}
	p.carriers, _ = ParseCredentialCarriers(p.carrierList) // checked by the caller
	if p.identityHeader == "" {
		p.identityHeader = identity.DefaultHeader
	}
	p.names = newHeaderNames(p.prefix)
	p.delegations = newDelegationTerms(p.names, p.inputOpts.OnBehalfOf)
	return p
}

// Owned reports whether a request header name is Deputy's own (the
// owned prefix or the actor-token header), compared case-insensitively
// with "_" read as "-", as CGI upstreams merge the two.
func (p *Pipeline) Owned(name string) bool { return p.inputOpts.owned(name) }

// Check decides one request. It never returns an allow on an error path.
func (p *Pipeline) Check(ctx context.Context, req *authv3.CheckRequest) *Response {
	return p.CheckEnforced(ctx, req, nil)
}

// CheckEnforced decides req as Check does, for a proxy that carries out
// only part of what a result may ask: enforce reports what of an allow it
// cannot (nil when it can do all of it), with the policy's own header
// removals in HeadersToRemove, before Deputy adds its owned ones. Such an
// allow is a denial (ReasonNotEnforceable, check.error_status), logged
// and counted as one: the policy allowed on a condition the upstream would
// never see.
func (p *Pipeline) CheckEnforced(ctx context.Context, req *authv3.CheckRequest, enforce func(*Response) error) *Response {
	var names [4]string
	req, owned, carried, forms := stripOwned(req, &p.inputOpts, &names)
	// The on-behalf-of header goes upstream only as set by the delegation
	// decided on (delegationHeaders): removed otherwise, as owned ones are.
	return p.finish(owned, carried, func(d *sidecar.Decision) *Response {
		resp := p.decide(ctx, req, owned, carried, forms, d)
		if enforce != nil && resp.Allowed {
			if err := enforce(resp); err != nil {
				return denial(p.errorStatus, ReasonNotEnforceable, err)
			}
		}
		return resp
	})
}

// Refuse records the refusal of a request an adapter cannot hand over as
// sent (refusal says why: an EINVALID naming the offending header); req is
// what could be read of it. It takes the one exit every check takes, so it
// is logged and counted with its reason, and its status comes from the
// error table. Dry run does not let it through: it is not a policy verdict
// but a request the proxy in front cannot make safe.
func (p *Pipeline) Refuse(ctx context.Context, req *authv3.CheckRequest, refusal error) *Response {
	var names [4]string
	req, owned, _, _ := stripOwned(req, &p.inputOpts, &names)
	return p.finish(owned, nil, func(d *sidecar.Decision) *Response {
		requestFacts(req, d)
		if act := p.eval.Current(); act != nil {
			d.Revision, d.Policy = act.Revision, act
		}
		resp := errorDenial(refusal)
		resp.Body = sidecar.ErrorMessage(refusal)
		resp.refused = true
		return resp
	})
}

// Replay decides a recorded policy input as it stands, the input of a
// decision-log record: no identity is verified, no delegation resolved and
// nothing is derived from a request, so the policy sees what it saw then
// (less what the log masked). No identity headers are injected.
func (p *Pipeline) Replay(ctx context.Context, input ast.Object) *Response {
	return p.finish(nil, nil, func(d *sidecar.Decision) *Response {
		act := p.eval.Current()
		if act == nil {
			return denial(p.errorStatus, ReasonNoPolicy, policy.ErrNoPolicy)
		}
		d.Revision, d.Policy = act.Revision, act
		if p.keepInput {
			d.Input = input
		}
		return p.evaluate(ctx, act, input, nil, nil, d)
	})
}

// finish is the one exit of every decision, whatever branch of decide
// gave the verdict: it lists the owned and on-behalf-of headers the
// client sent for removal, derives the decision record from the response,
// lets a dry run through, and observes and logs.
func (p *Pipeline) finish(owned, carried []string, decide func(*sidecar.Decision) *Response) *Response {
	start := p.clock()
	d := &sidecar.Decision{ID: newDecisionID(), Time: start, DryRun: p.dryRun}
	resp := decide(d)
	resp.HeadersToRemove = ownedRemovals(resp.HeadersToRemove, owned, resp.Injected)
	resp.HeadersToRemove = ownedRemovals(resp.HeadersToRemove, carried, resp.Injected)
	resp.DecisionID = d.ID
	d.Allowed, d.HTTPStatus, d.Reason = resp.Allowed, resp.HTTPStatus, resp.Reason
	if resp.Allowed {
		d.HTTPStatus = http.StatusOK
	}
	if resp.cause != nil {
		d.Error = resp.cause.Error()
	}
	if resp.refused {
		d.DryRun = false // the client was refused, dry run or not
	}
	if p.dryRun && !resp.Allowed && !resp.refused {
		// The policy's verdict is logged; the client is let through.
		resp = &Response{Allowed: true, Reason: resp.Reason, DecisionID: d.ID, HeadersToRemove: resp.HeadersToRemove}
	}
	d.Latency = p.clock().Sub(start)
	if p.observer != nil {
		p.observer.ObserveDecision(d)
	}
	if p.log != nil {
		p.log.Log(d)
	}
	return resp
}

// decide returns the verdict of one branch; finish does the rest.
func (p *Pipeline) decide(ctx context.Context, req *authv3.CheckRequest, owned, carried []string, forms headerForms, d *sidecar.Decision) *Response {
	requestFacts(req, d)
	if resp := p.burnExposed(ctx, req); resp != nil {
		return resp
	}
	act := p.eval.Current()
	if act == nil {
		return denial(p.errorStatus, ReasonNoPolicy, policy.ErrNoPolicy)
	}
	d.Revision, d.Policy = act.Revision, act
	need := act.InputNeeds(p.query)
	err := foldedSpelling(carried)
	if err == nil {
		err = forms.oddHeaderName()
	}
	var r *request
	if err == nil {
		r, err = buildInput(req, &p.inputOpts, need, forms)
	}
	if err != nil {
		// Not a policy verdict: Deputy cannot tell what the upstream would
		// act on, so dry run refuses it too.
		resp := errorDenial(err)
		resp.Body = sidecar.ErrorMessage(err)
		resp.refused = true
		return resp
	}
	d.TraceID = r.traceID
	if r.canonical.host.Name != "" {
		// The host decided on, as every comparison reads it; a refused
		// request keeps the host as sent, for the operator.
		d.Host = r.canonical.host.String()
	}
	input := r.input
	// Resolvers read their rules from the activation deciding, not the
	// one serving by the time they run.
	r.view.PolicyData = act.Data()

	// Identity.
	t := p.clock()
	var id *sidecar.Identity
	resolvers := p.resolvers
	if p.verifier != nil {
		id, err = p.verifier.Verify(ctx, &r.view)
		if err != nil {
			input.Insert(keyTerm("identity_error"), ast.StringTerm(sidecar.ErrorReason(err)))
			id, resolvers = nil, nil
		}
	}
	if h := req.GetAttributes().GetRequest().GetHttp(); err == nil && p.carriers.refused(&r.view, h, func() string {
		if id == nil {
			return ""
		}
		return verifiedToken(&r.view, p.identityHeader)
	}) {
		// A token in a credential carrier (the query, a body, a cookie,
		// a header: see DefaultCredentialCarriers), other than the one
		// verified, is a credential Deputy does not verify, while the
		// upstream may sign the request in as its holder: refused like a
		// malformed one.
		input.Insert(keyTerm("identity_error"), ast.StringTerm(identity.ReasonMalformed))
		id, resolvers = nil, nil
	}
	if n := need.Child("identity"); id != nil && n != nil {
		input.Insert(keyTerm("identity"), p.identities.term(id, n))
	}
	d.Identity = id
	t2 := p.clock()
	d.Stages.Identity = t2.Sub(t)

	// Delegation. Not for a request presenting a credential Deputy
	// refused (resolvers is nil then): a session binds to its actor only
	// against an identity verified, and the upstream may still read the
	// refused credential's holder from the header or a carrier (a lenient
	// parser, a token it accepts), so no delegation is resolved, and no resolver
	// acts on the request.
	var del *sidecar.Delegation
	var delErr error
	for _, res := range resolvers {
		dd, err := res.Resolve(ctx, &r.view, id)
		if err != nil {
			if sidecar.ErrorCode(err) == sidecar.EUNAVAILABLE {
				d.Stages.State = p.clock().Sub(t2)
				return errorDenial(err)
			}
			// The first carrier present decides: a refused session cookie
			// is reported (and a dead one cleared), never mixed with a
			// delegation another carrier names.
			delErr = err
			break
		}
		if dd != nil {
			del = dd
			break
		}
	}
	var kept *delegationEntry
	if del != nil {
		var term *ast.Term
		if kept, term = p.delegations.lookup(del, need.Child("delegation")); term != nil {
			input.Insert(keyTerm("delegation"), term)
		}
	} else if delErr != nil {
		input.Insert(keyTerm("delegation_error"), ast.StringTerm(sidecar.ErrorReason(delErr)))
		// Whom it tried to act for goes to the record alone: not to
		// policy, which decides on the caller, nor to the upstream.
		var at *sidecar.Attempt
		if errors.As(delErr, &at) {
			d.Attempt = at
		}
	}
	d.Delegation = del
	d.Stages.State = p.clock().Sub(t2)

	if rn := need.Child("deputy").Child("request"); len(owned) == 0 && rn == nil {
		input.Insert(keyTerm("deputy"), p.activationFacts(act, need).term)
	} else if len(owned) == 0 {
		// The activation's facts, built once, that a rule can read, plus
		// the request: no conversion of config values on the check path.
		input.Insert(keyTerm("deputy"), p.deputyTerm(act, need, rn, &r.canonical))
	} else {
		facts := p.deputyFacts(act, owned)
		if rn != nil {
			facts.Insert(keyTerm("request"), r.canonical.requestTerm(rn))
		}
		input.Insert(keyTerm("deputy"), ast.NewTerm(facts))
	}
	if p.keepInput {
		d.Input = input
	}

	resp := p.evaluate(ctx, act, input, del, kept, d)
	// A denied request whose session cookie names nothing live is told to
	// drop it, so a dead cookie does not keep blocking its holder.
	if !resp.Allowed && delErr != nil {
		// Only here: errors.As takes clear's address, which puts it on
		// the heap, and this is every check.
		var clear *sidecar.ClearCookie
		if errors.As(delErr, &clear) {
			resp.Headers = append(resp.Headers, Header{Key: "set-cookie", Value: clear.SetCookie})
		}
	}
	return resp
}

// requestFacts records on d the request as sent: method, host, and path
// without its query.
func requestFacts(req *authv3.CheckRequest, d *sidecar.Decision) {
	if http := req.GetAttributes().GetRequest().GetHttp(); http != nil {
		d.Method, d.Host = http.GetMethod(), http.GetHost()
		d.Path, _, _ = strings.Cut(http.GetPath(), "?")
	}
}

// evaluate runs the policy on input and maps its result to a response;
// kept is what is kept of del (nil with del).
func (p *Pipeline) evaluate(ctx context.Context, act *policy.Activation, input ast.Object, del *sidecar.Delegation, kept *delegationEntry, d *sidecar.Decision) *Response {
	t3 := p.clock()
	res, err := act.Eval(ctx, p.query, input, p.evalOpts...)
	d.Stages.Policy = p.clock().Sub(t3)
	if err != nil {
		return denial(p.errorStatus, ReasonEvalError, err)
	}
	if !res.Defined() {
		return denial(p.errorStatus, ReasonUndefined, nil)
	}
	pr, err := p.result(act, res.Value)
	if err != nil {
		return denial(p.errorStatus, ReasonInvalidDecision, err)
	}

	resp := &Response{Allowed: pr.allowed, Reason: pr.reason, DynamicMetadata: pr.dynamicMetadata}
	if !pr.allowed {
		resp.HTTPStatus = http.StatusForbidden
		if pr.hasStatus {
			resp.HTTPStatus = pr.status
		}
		resp.Body = pr.body
		resp.Headers = pr.headers
		if resp.Reason == "" {
			resp.Reason = ReasonDenied
		}
		return resp
	}

	if resp.Reason == "" {
		resp.Reason = ReasonAllowed
	}
	resp.ResponseHeadersToAdd = pr.responseHeadersToAdd
	resp.QueryParamsToSet = pr.queryToSet
	resp.QueryParamsToRemove = pr.queryToRemove
	injected, err := p.delegationHeaders(del, kept)
	if err != nil {
		return denial(http.StatusInternalServerError, ReasonTokenError, err)
	}
	resp.Headers = pr.headers
	resp.Injected = injected
	resp.HeadersToRemove = pr.headersToRemove
	return resp
}

// burnExposed refuses a redeem link whose "?" came percent-encoded,
// having burned its codes (WithRedeemBurner); nil for any other request.
// Not a policy verdict: dry run refuses it too.
func (p *Pipeline) burnExposed(ctx context.Context, req *authv3.CheckRequest) *Response {
	if p.burn == nil {
		return nil
	}
	path, query, _ := strings.Cut(req.GetAttributes().GetRequest().GetHttp().GetPath(), "?")
	codes, ok := delegation.ExposedRedeemCodes(p.apiPrefix, path, query)
	if !ok {
		return nil
	}
	err := p.burn(ctx, codes)
	resp := errorDenial(err)
	resp.Body = sidecar.ErrorMessage(err)
	resp.refused = true
	return resp
}

// denial is a verdict the pipeline gives itself; cause goes to the
// decision log, never to the client.
func denial(status int, reason string, cause error) *Response {
	return &Response{Allowed: false, HTTPStatus: status, Reason: reason, cause: cause}
}

// errorDenial is the denial for an error, with status and reason from the
// error table.
func errorDenial(err error) *Response {
	r := denial(sidecar.HTTPStatus(err), sidecar.ErrorMetricReason(err), err)
	r.Code = sidecar.ErrorCode(err)
	return r
}

// delegationHeaders are the identity headers injected on an allowed
// delegated request: kept's, with the actor token signed for del now.
func (p *Pipeline) delegationHeaders(del *sidecar.Delegation, kept *delegationEntry) ([]Header, error) {
	if del == nil {
		return nil, nil
	}
	if p.signer == nil {
		return kept.headers, nil
	}
	tok, err := p.signer.Sign(del)
	if err != nil {
		return nil, err
	}
	return kept.withToken(p.tokenHeader, tok), nil
}

// headerNames are the injected header names under the owned prefix,
// built once.
type headerNames struct {
	subject, actor, mode, level, session, storeView, subjectName string
}

func newHeaderNames(prefix string) headerNames {
	return headerNames{
		subject: prefix + "subject", actor: prefix + "actor", mode: prefix + "mode", level: prefix + "level",
		session: prefix + "session", storeView: prefix + "store-view", subjectName: prefix + "subject-name",
	}
}

// ownedRemovals lists the upstream headers to remove: what the policy asked,
// plus every owned header the client sent that Deputy does not overwrite
// (overwritten ones are replaced, not removed, so the order in which a
// proxy applies removals and additions cannot drop the injected value).
// A client chooses how many owned headers it sends: past a few, the names
// listed are looked up in a set rather than the list, so that n of them
// cost n lookups, not n²/2 comparisons (a gRPC check of 20,000 took
// seconds); the few of the common case allocate nothing.
func ownedRemovals(policyRemovals, owned []string, set []Header) []string {
	out := policyRemovals
	var listed map[string]struct{}
	if len(owned) > shortList {
		listed = make(map[string]struct{}, len(out)+len(owned))
		for _, s := range out {
			listed[s] = struct{}{}
		}
	}
	for _, o := range owned {
		lo := strings.ToLower(o)
		replaced := false
		for _, h := range set {
			if strings.EqualFold(h.Key, lo) {
				replaced = true
				break
			}
		}
		if replaced {
			continue
		}
		if listed == nil {
			if !slices.Contains(out, lo) {
				out = append(out, lo)
			}
		} else if _, ok := listed[lo]; !ok {
			listed[lo] = struct{}{}
			out = append(out, lo)
		}
	}
	return out
}

// shortList is how many names a list may hold and still be searched
// rather than indexed.
const shortList = 16

// activationFacts returns input.deputy for checks that stripped nothing,
// and the facts of it a rule can read (need is the activation's), built
// once per activation rather than per check.
func (p *Pipeline) activationFacts(act *policy.Activation, need *policy.InputNeeds) *activationFacts {
	if f := p.factsTerm.Load(); f != nil && f.act == act {
		return f
	}
	obj := p.deputyFacts(act, nil)
	f := &activationFacts{act: act, term: ast.NewTerm(obj)}
	dn := need.Child("deputy")
	obj.Foreach(func(k, v *ast.Term) {
		if key, ok := k.Value.(ast.String); ok && dn.Child(string(key)) != nil {
			f.read = append(f.read, [2]*ast.Term{k, v})
		}
	})
	p.factsTerm.Store(f)
	return f
}

func (p *Pipeline) deputyFacts(act *policy.Activation, stripped []string) ast.Object {
	obj := ast.NewObjectWithCapacity(len(p.facts) + 4)
	for k, v := range p.facts {
		if val, err := ast.InterfaceToValue(v); err == nil {
			obj.Insert(ast.StringTerm(k), ast.NewTerm(val))
		}
	}
	obj.Insert(keyTerm("revision"), ast.StringTerm(act.Revision))
	obj.Insert(keyTerm("dry_run"), ast.InternedTerm(p.dryRun))
	if len(stripped) > 0 {
		terms := make([]*ast.Term, len(stripped))
		for i, s := range stripped {
			terms[i] = ast.StringTerm(strings.ToLower(s))
		}
		obj.Insert(keyTerm("stripped_headers"), ast.ArrayTerm(terms...))
	}
	return obj
}

// putString sets obj[k] = v when the policy can read k, leaving empty
// values out as JSON omitempty would.
func putString(obj ast.Object, need *policy.InputNeeds, k, v string) {
	if v != "" && need.Child(k) != nil {
		obj.Insert(keyTerm(k), ast.StringTerm(v))
	}
}

// identityToAST builds input.identity with the fields need names.
func identityToAST(id *sidecar.Identity, need *policy.InputNeeds) ast.Value {
	obj := ast.NewObjectWithCapacity(8)
	str := func(k, v string) { putString(obj, need, k, v) }
	str("sub", id.Subject)
	str("name", id.Name)
	str("email", id.Email)
	str("org", id.Org)
	str("domain", id.Domain)
	str("iss", id.Issuer)
	if need.Child("roles") != nil {
		obj.Insert(keyTerm("roles"), stringsTerm(id.Roles))
	}
	if need.Child("privileges") != nil {
		obj.Insert(keyTerm("privileges"), stringsTerm(id.Privileges))
	}
	if !id.ExpiresAt.IsZero() && need.Child("exp") != nil {
		obj.Insert(keyTerm("exp"), ast.IntNumberTerm(int(id.ExpiresAt.Unix())))
	}
	if len(id.Claims) > 0 && need.Child("claims") != nil {
		if v, err := ast.InterfaceToValue(id.Claims); err == nil {
			obj.Insert(keyTerm("claims"), ast.NewTerm(v))
		}
	}
	return obj
}

// delegationToAST builds input.delegation with the fields need names.
func delegationToAST(d *sidecar.Delegation, need *policy.InputNeeds) ast.Value {
	obj := ast.NewObjectWithCapacity(8)
	str := func(k, v string) { putString(obj, need, k, v) }
	if d.Mode != "" && need.Child("mode") != nil {
		obj.Insert(keyTerm("mode"), keyTerm(d.Mode)) // modes are interned
	}
	str("id", d.ID)
	str("actor", d.Actor)
	str("actor_name", d.ActorName)
	str("actor_org", d.ActorOrg)
	str("subject", d.Subject)
	str("subject_name", d.SubjectName)
	str("level", d.Level)
	str("scope", d.Scope)
	str("store_view", d.StoreView)
	str("domain", d.Domain)
	str("reason", d.Reason)
	str("ticket", d.Ticket)
	if !d.ExpiresAt.IsZero() && need.Child("expires_at") != nil {
		obj.Insert(keyTerm("expires_at"), ast.StringTerm(d.ExpiresAt.UTC().Format(time.RFC3339)))
	}
	if d.SubjectProtected && need.Child("subject_protected") != nil {
		obj.Insert(keyTerm("subject_protected"), ast.InternedTerm(true))
	}
	if len(d.ActorRoles) > 0 && need.Child("actor_roles") != nil {
		obj.Insert(keyTerm("actor_roles"), stringsTerm(d.ActorRoles))
	}
	if len(d.SubjectRoles) > 0 && need.Child("subject_roles") != nil {
		obj.Insert(keyTerm("subject_roles"), stringsTerm(d.SubjectRoles))
	}
	if n := need.Child("attributes"); len(d.Attributes) > 0 && n != nil {
		if attrs := attributesToAST(d.Attributes, n); attrs != nil {
			obj.Insert(keyTerm("attributes"), ast.NewTerm(attrs))
		}
	}
	return obj
}

// attributesToAST converts the delegation attributes policy can read, nil
// when it can read none of them.
func attributesToAST(attrs map[string]any, need *policy.InputNeeds) ast.Object {
	var obj ast.Object
	for k, v := range attrs {
		if need.Child(k) == nil {
			continue
		}
		if val, err := ast.InterfaceToValue(v); err == nil {
			if obj == nil {
				obj = ast.NewObjectWithCapacity(len(attrs))
			}
			obj.Insert(keyTerm(k), ast.NewTerm(val))
		}
	}
	return obj
}

// emptyArray is every empty list of input (policy never changes input).
var emptyArray = ast.ArrayTerm()

func stringsTerm(ss []string) *ast.Term {
	if len(ss) == 0 {
		return emptyArray
	}
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = keyTerm(s)
	}
	return ast.ArrayTerm(terms...)
}

func newDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
