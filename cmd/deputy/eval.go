package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/policy"
)

type evalFlags struct {
	input, identity, identityError   string
	delegation, delegationError      string
	policies, data                   []string
	bundle, publicKey, query, config string
	methodOverrides                  []string
	explain, dryRun, asJSON, manage  bool
	fail, failDefined                bool
	stdin                            io.Reader
}

// newEvalCmd decides one request offline through the same pipeline the
// server runs, so a security team can reproduce a decision from a
// decision-log record and see why it came out that way.
func newEvalCmd() *cobra.Command {
	var f evalFlags
	cmd := &cobra.Command{
		Use:   "eval --input examples/eval/request.json",
		Short: "Decide one request offline, exactly as deputy serve would",
		Long: `Decide one request offline through Deputy's check pipeline: the same
input building, the same policy query and the same result mapping as
deputy serve. The input is either a CheckRequest in protobuf JSON (as in
OPA-Envoy decision logs: {"attributes": {...}}) or a plain HTTP request
description: {"method", "path", "host", "headers", "body"}, or a
decision-log record, whose recorded input is decided again as it stands.
A plain HTTP request is decided as deputy serve's HTTP check decides it
coming from Envoy's http_service: under http.path_prefix, its body read
up to http.max_body_bytes, an allow setting a header outside
http.envoy_upstream_headers refused.

Tokens are not verified offline: give the verified identity (the
input.identity of a decision-log record) with --identity, or, when the
request presented a credential serve refused, the refusal with
--identity-error (input.identity_error); and the delegation that applied
with --delegation (or, when the request named one that was refused, the
refusal with --delegation-error). As in serve, no delegation is resolved
for a request whose credential was refused, and a token in the request's
query or form body (access_token, bearer_token) is refused as serve
refuses it, with no --identity-error needed.

The check is shaped by the same configuration as deputy serve (--config,
or DEPUTY_CONFIG and DEPUTY_* variables): decision query, owned header
prefix, error status, body parsing, method overrides, dry run and the
switches policies read in input.deputy. Policies come from --policies or
--bundle and activate as in deputy serve: the same revision, the same
refusal of rule data Deputy cannot read.

With --manage the input is a management action as the API builds it
({"action", "identity", "target", ...}), decided by
data.deputy.manage.decision.

--input, --identity and --delegation take inline JSON ('{"path": "/"}'),
@file, a file name, or - (or @-) for stdin. With --fail the command exits
1 when the decision is undefined, with --fail-defined when it is defined;
an evaluation error fails either way, as with opa eval.

A decision-log record decided again otherwise than recorded is not
reproducible when the log's mask removed or replaced input the policy
reads (the default mask erases input.parsed_body, which GraphQL rules
read): the difference may be the mask's, not the policy's. eval then says
which input was masked, instead of a decision, and exits 3. Other errors
exit 1.`,
		Example: `  deputy eval --input examples/eval/request.json --explain
  deputy eval --input '{"method": "GET", "path": "/customer/account"}' --identity '{"sub": "alice", "roles": ["customer"]}'
  deputy eval --input @examples/eval/record.json          # replay a decision-log record
  deputy eval --input @examples/eval/request.json --query envoy/authz/allow --fail`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.stdin = cmd.InOrStdin()
			return runEval(cmd.Context(), f, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.input, "input", "i", "", "request or decision-log record to decide: inline JSON, @file, a file, or - for stdin")
	fl.StringSliceVarP(&f.policies, "policies", "p", []string{policy.DefaultPolicyPath}, "policy directories or files")
	fl.StringSliceVarP(&f.data, "data", "d", nil, "extra data or policy files loaded with the policies")
	fl.StringVarP(&f.bundle, "bundle", "b", "", "decide with this bundle file instead of --policies")
	fl.StringVar(&f.publicKey, "public-key", "", "verify --bundle against this public key (PEM file)")
	fl.StringVar(&f.identity, "identity", "", "verified identity (input.identity): inline JSON, @file or a file")
	fl.StringVar(&f.identityError, "identity-error", "", "reason the request's credential was refused (input.identity_error)")
	fl.StringVar(&f.delegation, "delegation", "", "delegation that applies (input.delegation): inline JSON, @file or a file")
	fl.StringVar(&f.delegationError, "delegation-error", "", "reason a delegation the request named was refused (input.delegation_error)")
	fl.StringVar(&f.query, "query", "", "decision query: data.a.b.c, or OPA-Envoy's a/b/c (default: the config's, "+policy.DefaultDecisionQuery+")")
	fl.StringVarP(&f.config, "config", "c", "", "deputy serve's YAML configuration (env DEPUTY_CONFIG)")
	fl.BoolVar(&f.manage, "manage", false, "decide a management action (input: {action, identity, target, ...})")
	fl.BoolVar(&f.fail, "fail", false, "exit 1 when the decision is undefined (or evaluation fails)")
	fl.BoolVar(&f.failDefined, "fail-defined", false, "exit 1 when the decision is defined (or evaluation fails)")
	fl.StringSliceVar(&f.methodOverrides, "method-overrides", nil, "where a request may name another method (default: the config's check.method_overrides)")
	fl.BoolVar(&f.explain, "explain", false, "print the rule trace of the evaluation")
	fl.BoolVar(&f.dryRun, "dry-run", false, "decide as a server with dry run on")
	fl.BoolVar(&f.asJSON, "json", false, "print the decision as JSON")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func runEval(ctx context.Context, f evalFlags, out io.Writer) error {
	cfg, err := evalConfig(f)
	if err != nil {
		return err
	}
	raw, err := jsonArg("input", f.input, f.stdin)
	if err != nil {
		return err
	}
	engine, err := evalEngine(ctx, cfg)
	if err != nil {
		return err
	}
	if f.manage {
		return evalManage(ctx, engine, raw, out)
	}
	rec, err := parseRecord(raw)
	if err != nil {
		return err
	}
	var req *authv3.CheckRequest
	var httpReq *http.Request
	if rec == nil {
		if req, httpReq, err = parseEvalInput(raw); err != nil {
			return err
		}
	}

	tracer := topdown.NewBufferTracer()
	opts := checkOptions(cfg)
	if f.identity != "" && f.identityError != "" {
		return sidecar.Invalid("identity-error", "a request has a verified identity or a refused credential, not both: give --identity or --identity-error")
	}
	if f.identityError != "" {
		if rec != nil {
			rec.input.Insert(ast.StringTerm("identity_error"), ast.StringTerm(f.identityError))
		}
		opts = append(opts, authz.WithVerifier(refusedIdentity{sidecar.Refused(sidecar.EUNAUTHORIZED, f.identityError, nil)}))
	}
	if f.identity != "" {
		id, err := decodeIdentity(f.identity, f.stdin)
		if err != nil {
			return err
		}
		opts = append(opts, authz.WithVerifier(staticIdentity{id}))
		if rec != nil {
			rec.input.Insert(ast.StringTerm("identity"), ast.NewTerm(identityValue(id)))
		}
	}
	if f.delegation != "" {
		var d sidecar.Delegation
		if err := decodeArg("delegation", f.delegation, f.stdin, &d); err != nil {
			return err
		}
		if rec != nil {
			v, err := ast.InterfaceToValue(d)
			if err != nil {
				return sidecar.Invalid("delegation", "%v", err)
			}
			rec.input.Insert(ast.StringTerm("delegation"), ast.NewTerm(v))
		}
		opts = append(opts, authz.WithResolvers(sidecar.DelegationResolverFunc(
			func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
				return &d, nil
			})))
	} else if f.delegationError != "" {
		if rec != nil {
			rec.input.Insert(ast.StringTerm("delegation_error"), ast.StringTerm(f.delegationError))
		}
		refusal := sidecar.Refused(sidecar.EFORBIDDEN, f.delegationError, nil)
		opts = append(opts, authz.WithResolvers(sidecar.DelegationResolverFunc(
			func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
				return nil, refusal
			})))
	}
	if f.explain {
		opts = append(opts, authz.WithEvalOptions(rego.EvalQueryTracer(tracer)))
	}
	var logged sidecar.Decision
	opts = append(opts, authz.WithDecisionLogger(decisionCapture{&logged}))
	pipeline := authz.New(engine, opts...)

	var resp *authz.Response
	if rec != nil {
		resp = pipeline.Replay(ctx, rec.input)
	} else if httpReq != nil {
		// Through serve's handler of Envoy's http_service, built from the
		// same config, so the request is decided as serve's HTTP check
		// decides it: Envoy sends the path under http.path_prefix.
		capture := &responseCapture{next: pipeline}
		check, _ := httpChecks(cfg, capture)
		httpReq.RequestURI = cfg.HTTP.PathPrefix + httpReq.RequestURI
		check.ServeHTTP(httptest.NewRecorder(), httpReq.WithContext(ctx))
		resp = capture.resp
	} else {
		resp = pipeline.Check(ctx, req)
	}

	if rec != nil && rec.differs(resp) {
		if err := rec.reproducible(engine, cfg.Policy.DecisionQuery, f); err != nil {
			return err
		}
	}
	if f.asJSON {
		err = printEvalJSON(out, resp, &logged, rec)
	} else {
		printEval(out, resp, &logged, rec)
	}
	if err == nil && f.explain {
		fmt.Fprintln(out, "\ntrace:")
		topdown.PrettyTrace(out, *tracer)
	}
	if err != nil {
		return err
	}
	return failOn(f, resp.Reason)
}

// evalConfig is deputy serve's configuration (file and DEPUTY_*
// variables), with eval's policy source, query, dry run and method
// override flags on top.
func evalConfig(f evalFlags) (*Config, error) {
	fs := pflag.NewFlagSet("eval", pflag.ContinueOnError)
	l := newConfigLoader(fs)
	l.file = f.config
	// Tokens are never verified offline (--identity gives the verified
	// identity), so eval needs no identity issuer.
	if err := fs.Set("identity-anonymous-only", "true"); err != nil {
		return nil, err
	}
	cfg, err := l.load()
	if err != nil {
		return nil, err
	}
	if f.query != "" {
		cfg.Policy.DecisionQuery = f.query
	}
	if cfg.Policy.DecisionQuery, err = policy.DecisionRef(cfg.Policy.DecisionQuery); err != nil {
		return nil, sidecar.Invalid("query", "%s", sidecar.ErrorMessage(err))
	}
	if f.dryRun {
		cfg.Policy.DryRun = true
	}
	if f.methodOverrides != nil {
		if _, err := authz.ParseMethodOverrides(f.methodOverrides); err != nil {
			return nil, err
		}
		cfg.Check.MethodOverrides = f.methodOverrides
	}
	cfg.Policy.Watch, cfg.Policy.BundleURL = false, ""
	cfg.Policy.Paths, cfg.Policy.BundleFile = nil, ""
	if f.bundle != "" {
		cfg.Policy.BundleFile = f.bundle
		cfg.Policy.PublicKey = f.publicKey
	} else {
		cfg.Policy.Paths = append(append([]string(nil), f.policies...), f.data...)
	}
	return cfg, nil
}

// evalEngine activates the policies as deputy serve's policy source does.
func evalEngine(ctx context.Context, cfg *Config) (*policy.Engine, error) {
	quiet := slog.New(slog.DiscardHandler)
	engine := newEngine(cfg.Policy, quiet)
	src, err := policy.NewSource(cfg.Policy, engine, policy.WithSourceLogger(quiet))
	if err != nil {
		return nil, err
	}
	if err := src.Start(ctx); err != nil {
		return nil, err
	}
	return engine, src.Stop(ctx)
}

// evalManage decides one management action on the manage query.
func evalManage(ctx context.Context, engine *policy.Engine, raw []byte, out io.Writer) error {
	var in map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil {
		return sidecar.Invalid("input", "not a JSON object: %v", err)
	}
	if _, ok := in["action"].(string); !ok {
		return sidecar.Invalid("input.action", "a management action needs its name")
	}
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		return sidecar.Invalid("input", "%v", err)
	}
	res, err := engine.Eval(ctx, policy.DefaultManageQuery, v)
	if err != nil {
		return err
	}
	result := map[string]any{"allowed": false, "reason": "no_rule", "revision": res.Revision}
	if res.Value != nil {
		var decided any
		if err := ast.As(res.Value.Value, &decided); err != nil {
			return err
		}
		switch d := decided.(type) {
		case bool:
			result["allowed"], result["reason"] = d, ""
		case map[string]any:
			for k, x := range d {
				result[k] = x
			}
		}
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(result)
}

// errFail is the exit status of --fail and --fail-defined, not a fault.
var errFail = errors.New("eval failed")

// failOn applies --fail and --fail-defined as opa eval does: an undefined
// decision fails the first, a defined one the second, an error both.
func failOn(f evalFlags, reason string) error {
	switch reason {
	case authz.ReasonEvalError, authz.ReasonInvalidDecision, authz.ReasonNoPolicy, authz.ReasonMalformedRequest, authz.ReasonTokenError:
		if f.fail || f.failDefined {
			return fmt.Errorf("%w: the decision could not be made (%s)", errFail, reason)
		}
	case authz.ReasonUndefined:
		if f.fail {
			return fmt.Errorf("%w: --fail: the decision is undefined", errFail)
		}
	default:
		if f.failDefined {
			return fmt.Errorf("%w: --fail-defined: the decision is defined (%s)", errFail, reason)
		}
	}
	return nil
}

// jsonArg reads a JSON argument: inline JSON, @file, - or @- for stdin, or
// a file name.
func jsonArg(flag, v string, stdin io.Reader) ([]byte, error) {
	t := strings.TrimSpace(v)
	name := v
	switch {
	case t == "-" || t == "@-":
		if stdin == nil {
			stdin = os.Stdin
		}
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, sidecar.Invalid(flag, "stdin: %v", err)
		}
		return b, nil
	case strings.HasPrefix(t, "{") || strings.HasPrefix(t, "["):
		return []byte(t), nil
	case strings.HasPrefix(t, "@"):
		name = t[1:]
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, sidecar.Invalid(flag, "%v", err)
	}
	return b, nil
}

// replay is a decision-log record to decide again.
type replay struct {
	record decisionlog.Record
	input  ast.Object
}

// parseRecord returns the record raw holds, or nil when raw is not a
// decision-log record (it has no decision_id).
func parseRecord(raw []byte) (*replay, error) {
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &probe) != nil {
		return nil, nil // parseEvalInput names the error
	}
	if _, ok := probe["decision_id"]; !ok {
		return nil, nil
	}
	var r replay
	if err := json.Unmarshal(raw, &r.record); err != nil {
		return nil, sidecar.Invalid("input", "decision-log record: %v", err)
	}
	if r.record.Input == nil && r.record.InputDropped != decisionlog.InputKept {
		return nil, sidecar.Invalid("input", "decision-log record %s has no input: it was dropped as %s (past decision_log.max_record_bytes)", r.record.DecisionID, r.record.InputDropped)
	}
	if r.record.Input == nil && r.record.MaskError != "" {
		return nil, &exitStatus{code: exitNotReproducible, err: sidecar.Invalid("input", "decision-log record %s is not reproducible: its input was erased whole, as masking it failed (%s)", r.record.DecisionID, r.record.MaskError)}
	}
	if r.record.Input == nil {
		return nil, sidecar.Invalid("input", "decision-log record %s has no input: it was logged with decision_log.include_input off", r.record.DecisionID)
	}
	v, err := ast.InterfaceToValue(r.record.Input)
	if err != nil {
		return nil, sidecar.Invalid("input", "decision-log record input: %v", err)
	}
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, sidecar.Invalid("input", "decision-log record input is not an object")
	}
	r.input = obj
	return &r, nil
}

// exitNotReproducible is eval's exit status for a record it cannot
// replay as it was decided; see reproducible.
const exitNotReproducible = 3

// exitStatus is an error that sets the process's exit status.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string { return e.err.Error() }
func (e *exitStatus) Unwrap() error { return e.err }

// differs reports whether resp decides otherwise than the record.
func (r *replay) differs(resp *authz.Response) bool {
	verdict := "deny"
	if resp.Allowed {
		verdict = "allow"
	}
	return r.record.Result != verdict || r.record.Reason != resp.Reason
}

// reproducible refuses a replay that differs from its record when the
// decision-log mask removed or replaced input the policy reads: decided
// on what is left, the difference may be the mask's, and reporting it as
// the policy's would send whoever reads it after a change that was never
// made. A masked part the policy does not read, or one eval's flags give
// anew (--identity, --delegation), leaves the record reproducible.
func (r *replay) reproducible(engine *policy.Engine, query string, f evalFlags) error {
	act := engine.Current()
	if act == nil {
		return nil // decided as no_policy, as serve would
	}
	given := map[string]bool{"identity": f.identity != "", "identity_error": f.identityError != "", "delegation": f.delegation != "", "delegation_error": f.delegationError != ""}
	needs := act.InputNeeds(query)
	var lost []string
	for _, p := range append(slices.Clone(r.record.Erased), r.record.Masked...) {
		keys := strings.Split(strings.TrimPrefix(p, "/"), "/")
		if keys[0] != "input" {
			continue
		}
		keys = keys[1:]
		for i, k := range keys {
			keys[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(k)
		}
		if (len(keys) == 0 || !given[keys[0]]) && reads(needs, keys) {
			lost = append(lost, p)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	return &exitStatus{code: exitNotReproducible, err: fmt.Errorf("decision-log record %s (recorded %s, %s) is not reproducible: the decision log's mask removed or replaced input the policy reads, at %s, and decided without it the request comes out otherwise",
		r.record.DecisionID, r.record.Result, r.record.Reason, strings.Join(lost, ", "))}
}

// reads reports whether a query with needs can read input at path.
func reads(needs *policy.InputNeeds, path []string) bool {
	n := needs
	for _, k := range path {
		if n == nil || n.All {
			break
		}
		n = n.Child(k)
	}
	return n != nil
}

// httpDescription is the plain form of a request to decide.
type httpDescription struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
}

// parseEvalInput tells the two input forms apart and decodes them strictly:
// a typo in a field name must not silently change the decision.
func parseEvalInput(raw []byte) (*authv3.CheckRequest, *http.Request, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, nil, sidecar.Invalid("input", "not a JSON object: %v", err)
	}
	if _, ok := probe["attributes"]; ok {
		var req authv3.CheckRequest
		if err := protojson.Unmarshal(raw, &req); err != nil {
			return nil, nil, sidecar.Invalid("input", "not a CheckRequest: %v", err)
		}
		return &req, nil, nil
	}
	if _, ok := probe["path"]; !ok {
		return nil, nil, sidecar.Invalid("input", `want a CheckRequest ({"attributes": ...}) or an HTTP request ({"method", "path", ...})`)
	}
	var d httpDescription
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, nil, sidecar.Invalid("input", "HTTP request: %v", err)
	}
	if !strings.HasPrefix(d.Path, "/") {
		return nil, nil, sidecar.Invalid("input.path", "must start with /, got %q", d.Path)
	}
	if d.Method == "" {
		d.Method = http.MethodGet
	}
	if d.Host == "" {
		d.Host = "localhost"
	}
	var body []byte
	if len(d.Body) > 0 && string(d.Body) != "null" {
		var s string
		if json.Unmarshal(d.Body, &s) == nil {
			body = []byte(s)
		} else {
			body = d.Body // a JSON body given inline
		}
	}
	r, err := http.NewRequest(d.Method, "http://"+d.Host+d.Path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, sidecar.Invalid("input", "HTTP request: %v", err)
	}
	for k, v := range d.Headers {
		r.Header.Set(k, v)
	}
	// As a server receives it: the request line as sent, and the body's
	// length, which Go's client would send (for a POST, PUT or PATCH even
	// when empty) and by which a check tells a cut body from a whole one.
	// A length the description states stays, as Envoy sends the client's
	// when it forwards no body (no with_request_body).
	r.RequestURI = d.Path
	switch {
	case r.Header.Get("Transfer-Encoding") != "":
		r.ContentLength = -1
	case r.Header.Get("Content-Length") != "":
		if n := r.Header.Get("Content-Length"); len(body) > 0 && n != strconv.Itoa(len(body)) {
			return nil, nil, sidecar.Invalid("input.headers.content-length", "%q, but the body holds %d bytes: state the body's length, or no body when its length alone is sent", n, len(body))
		}
	case len(body) > 0 || d.Method == http.MethodPost || d.Method == http.MethodPut || d.Method == http.MethodPatch:
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	r.Host = d.Host
	r.RemoteAddr = "127.0.0.1:1"
	return nil, r, nil
}

// decodeArg decodes a JSON argument strictly: a misspelt field must not
// silently change the decision.
func decodeArg(flag, v string, stdin io.Reader, out any) error {
	b, err := jsonArg(flag, v, stdin)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return sidecar.Invalid(flag, "%v", err)
	}
	return nil
}

// decodeIdentity reads --identity. It takes input.identity as a record
// holds it (exp in Unix seconds) as well as an RFC 3339 exp.
func decodeIdentity(v string, stdin io.Reader) (*sidecar.Identity, error) {
	var in struct {
		sidecar.Identity
		Exp json.RawMessage `json:"exp"`
	}
	if err := decodeArg("identity", v, stdin, &in); err != nil {
		return nil, err
	}
	id := in.Identity
	if len(in.Exp) > 0 && string(in.Exp) != "null" {
		var secs int64
		if err := json.Unmarshal(in.Exp, &id.ExpiresAt); err != nil {
			if err := json.Unmarshal(in.Exp, &secs); err != nil {
				return nil, sidecar.Invalid("identity.exp", "want Unix seconds or an RFC 3339 time, got %s", in.Exp)
			}
			id.ExpiresAt = time.Unix(secs, 0).UTC()
		}
	}
	return &id, nil
}

// identityValue is input.identity as the pipeline builds it.
func identityValue(id *sidecar.Identity) ast.Value {
	m := map[string]any{"sub": id.Subject, "roles": nonNil(id.Roles), "privileges": nonNil(id.Privileges)}
	for k, v := range map[string]string{"name": id.Name, "email": id.Email, "org": id.Org, "domain": id.Domain, "iss": id.Issuer} {
		if v != "" {
			m[k] = v
		}
	}
	if !id.ExpiresAt.IsZero() {
		m["exp"] = id.ExpiresAt.Unix()
	}
	if len(id.Claims) > 0 {
		m["claims"] = id.Claims
	}
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		return ast.NewObject()
	}
	return v
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

type staticIdentity struct{ id *sidecar.Identity }

func (s staticIdentity) Verify(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
	return s.id, nil
}

// refusedIdentity refuses every request's credential as serve refused it.
type refusedIdentity struct{ err error }

func (r refusedIdentity) Verify(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
	return nil, r.err
}

type decisionCapture struct{ d *sidecar.Decision }

func (c decisionCapture) Log(d *sidecar.Decision) { *c.d = *d }

type responseCapture struct {
	next *authz.Pipeline
	resp *authz.Response
}

func (c *responseCapture) Check(ctx context.Context, req *authv3.CheckRequest) *authz.Response {
	c.resp = c.next.Check(ctx, req)
	return c.resp
}

// CheckEnforced decides as serve's Envoy http_service endpoint does: an
// allow Envoy would not carry out (a header outside
// http.envoy_upstream_headers) is refused, as there (see docs/deploy.md).
func (c *responseCapture) CheckEnforced(ctx context.Context, req *authv3.CheckRequest, enforce func(*authz.Response) error) *authz.Response {
	c.resp = c.next.CheckEnforced(ctx, req, enforce)
	return c.resp
}

func (c *responseCapture) Owned(name string) bool { return c.next.Owned(name) }

func (c *responseCapture) Refuse(ctx context.Context, req *authv3.CheckRequest, refusal error) *authz.Response {
	c.resp = c.next.Refuse(ctx, req, refusal)
	return c.resp
}

func printEval(w io.Writer, r *authz.Response, d *sidecar.Decision, rec *replay) {
	verdict, status := "deny", r.HTTPStatus
	if r.Allowed {
		verdict, status = "allow", http.StatusOK
	}
	if rec != nil {
		same := "same as recorded"
		if rec.differs(r) {
			same = "DIFFERS from the record"
		}
		fmt.Fprintf(w, "replayed: %s of %s, recorded %s (%s) with revision %s: %s\n", rec.record.DecisionID,
			rec.record.Time.Format(time.RFC3339), rec.record.Result, rec.record.Reason, rec.record.BundleRevision, same)
	}
	fmt.Fprintf(w, "decision: %s\nstatus:   %d\nreason:   %s\nrevision: %s\n", verdict, status, r.Reason, d.Revision)
	if d.DryRun {
		fmt.Fprintln(w, "dry run:  on (the client is let through whatever the policy said)")
	}
	if d.Error != "" {
		fmt.Fprintf(w, "error:    %s\n", d.Error)
	}
	section := func(title string, hs []authz.Header) {
		if len(hs) == 0 {
			return
		}
		fmt.Fprintf(w, "%s:\n", title)
		for _, h := range hs {
			fmt.Fprintf(w, "  %s: %s\n", h.Key, h.Value)
		}
	}
	if r.Allowed {
		section("injected identity headers", r.Injected)
		section("upstream headers to add", r.Headers)
		section("response headers to add", r.ResponseHeadersToAdd)
		section("query parameters to set", r.QueryParamsToSet)
		if len(r.HeadersToRemove) > 0 {
			fmt.Fprintf(w, "upstream headers to remove: %s\n", strings.Join(r.HeadersToRemove, ", "))
		}
		return
	}
	section("headers to the client", r.Headers)
	if r.Body != "" {
		fmt.Fprintf(w, "body: %s\n", r.Body)
	}
}

func printEvalJSON(w io.Writer, r *authz.Response, d *sidecar.Decision, rec *replay) error {
	headers := func(hs []authz.Header) map[string]string {
		m := map[string]string{}
		for _, h := range hs {
			m[h.Key] = h.Value
		}
		return m
	}
	status := r.HTTPStatus
	if r.Allowed {
		status = http.StatusOK
	}
	remove := append([]string(nil), r.HeadersToRemove...)
	sort.Strings(remove)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	var recorded any
	if rec != nil {
		recorded = map[string]any{"decision_id": rec.record.DecisionID, "result": rec.record.Result,
			"reason": rec.record.Reason, "bundle_revision": rec.record.BundleRevision}
	}
	return enc.Encode(map[string]any{
		"recorded":                recorded,
		"allowed":                 r.Allowed,
		"http_status":             status,
		"reason":                  r.Reason,
		"revision":                d.Revision,
		"dry_run":                 d.DryRun,
		"error":                   d.Error,
		"injected":                headers(r.Injected),
		"headers":                 headers(r.Headers),
		"response_headers_to_add": headers(r.ResponseHeadersToAdd),
		"headers_to_remove":       remove,
		"body":                    r.Body,
	})
}
