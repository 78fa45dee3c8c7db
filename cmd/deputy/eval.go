package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/envoy"
	"github.com/deputyhq/deputy/sidecar/policy"
)

type evalFlags struct {
	input, identity, delegation string
	policies, data              []string
	bundle, publicKey, query    string
	methodOverrides             []string
	explain, dryRun, asJSON     bool
}

// newEvalCmd decides one request offline through the same pipeline the
// server runs, so a security team can reproduce a decision from a
// decision-log record and see why it came out that way.
func newEvalCmd() *cobra.Command {
	var f evalFlags
	cmd := &cobra.Command{
		Use:   "eval --input request.json",
		Short: "Decide one request offline, exactly as deputy serve would",
		Long: `Decide one request offline through Deputy's check pipeline: the same
input building, the same policy query and the same result mapping as
deputy serve. The input is either a CheckRequest in protobuf JSON (as in
OPA-Envoy decision logs: {"attributes": {...}}) or a plain HTTP request
description: {"method", "path", "host", "headers", "body"}.

Tokens are not verified offline: give the verified identity (the
input.identity of a decision-log record) with --identity, and the
delegation that applied with --delegation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEval(cmd.Context(), f, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.input, "input", "i", "", "request to decide (JSON file, - for stdin)")
	fl.StringSliceVarP(&f.policies, "policies", "p", []string{policy.DefaultPolicyPath}, "policy directories or files")
	fl.StringSliceVarP(&f.data, "data", "d", nil, "extra data or policy files loaded with the policies")
	fl.StringVarP(&f.bundle, "bundle", "b", "", "decide with this bundle file instead of --policies")
	fl.StringVar(&f.publicKey, "public-key", "", "verify --bundle against this public key (PEM file)")
	fl.StringVar(&f.identity, "identity", "", "verified identity (JSON of input.identity)")
	fl.StringVar(&f.delegation, "delegation", "", "delegation that applies (JSON of input.delegation)")
	fl.StringVar(&f.query, "query", policy.DefaultDecisionQuery, "decision query")
	fl.StringSliceVar(&f.methodOverrides, "method-overrides", authz.DefaultMethodOverrides(), "where a request may name another method, as check.method_overrides")
	fl.BoolVar(&f.explain, "explain", false, "print the rule trace of the evaluation")
	fl.BoolVar(&f.dryRun, "dry-run", false, "decide as a server with dry run on")
	fl.BoolVar(&f.asJSON, "json", false, "print the decision as JSON")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func runEval(ctx context.Context, f evalFlags, out io.Writer) error {
	raw, err := readInput(f.input)
	if err != nil {
		return err
	}
	req, httpReq, err := parseEvalInput(raw)
	if err != nil {
		return err
	}

	engine := policy.New(policy.WithQueries(f.query, policy.DefaultManageQuery),
		policy.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	var set *policy.Set
	if f.bundle != "" {
		b, err := policy.ReadBundleFile(f.bundle, policy.ReadOptions{PublicKey: f.publicKey})
		if err != nil {
			return err
		}
		set = policy.SetFromBundle(b, f.bundle)
	} else {
		set, err = policy.LoadPaths(append(append([]string(nil), f.policies...), f.data...))
		if err != nil {
			return err
		}
		set.Revision = "local"
	}
	if err := engine.Activate(ctx, set); err != nil {
		return err
	}

	if _, err := authz.ParseMethodOverrides(f.methodOverrides); err != nil {
		return err
	}
	tracer := topdown.NewBufferTracer()
	opts := []authz.Option{authz.WithQuery(f.query), authz.WithDryRun(f.dryRun), authz.WithMethodOverrides(f.methodOverrides)}
	if f.identity != "" {
		var id sidecar.Identity
		if err := decodeFile(f.identity, &id); err != nil {
			return err
		}
		opts = append(opts, authz.WithVerifier(staticIdentity{&id}))
	}
	if f.delegation != "" {
		var d sidecar.Delegation
		if err := decodeFile(f.delegation, &d); err != nil {
			return err
		}
		opts = append(opts, authz.WithResolvers(sidecar.DelegationResolverFunc(
			func(context.Context, *sidecar.Request, *sidecar.Identity) (*sidecar.Delegation, error) {
				return &d, nil
			})))
	}
	if f.explain {
		opts = append(opts, authz.WithEvalOptions(rego.EvalQueryTracer(tracer)))
	}
	var logged sidecar.Decision
	opts = append(opts, authz.WithDecisionLogger(decisionCapture{&logged}))
	pipeline := authz.New(engine, opts...)

	var resp *authz.Response
	if httpReq != nil {
		// Through the HTTP ext_authz adapter, so the CheckRequest is the one
		// the server would build from that HTTP request.
		capture := &responseCapture{next: pipeline}
		rec := httptest.NewRecorder()
		envoy.NewHTTPHandler(capture).ServeHTTP(rec, httpReq.WithContext(ctx))
		if capture.resp == nil {
			return fmt.Errorf("input: %s", strings.TrimSpace(rec.Body.String()))
		}
		resp = capture.resp
	} else {
		resp = pipeline.Check(ctx, req)
	}

	if f.asJSON {
		err = printEvalJSON(out, resp, &logged)
	} else {
		printEval(out, resp, &logged)
	}
	if err == nil && f.explain {
		fmt.Fprintln(out, "\ntrace:")
		topdown.PrettyTrace(out, *tracer)
	}
	return err
}

func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, sidecar.Invalid("input", "%v", err)
	}
	return b, nil
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
	r.Host = d.Host
	r.RemoteAddr = "127.0.0.1:1"
	return nil, r, nil
}

func decodeFile(name string, v any) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return sidecar.Invalid(name, "%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return sidecar.Invalid(name, "%v", err)
	}
	return nil
}

type staticIdentity struct{ id *sidecar.Identity }

func (s staticIdentity) Verify(context.Context, *sidecar.Request) (*sidecar.Identity, error) {
	return s.id, nil
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

func printEval(w io.Writer, r *authz.Response, d *sidecar.Decision) {
	verdict, status := "deny", r.HTTPStatus
	if r.Allowed {
		verdict, status = "allow", http.StatusOK
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

func printEvalJSON(w io.Writer, r *authz.Response, d *sidecar.Decision) error {
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
	return enc.Encode(map[string]any{
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
