package policy_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/deputyhq/deputy/sidecar/policy"
)

// hitCounter is a loopback HTTP server counting the requests it gets.
func hitCounter(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	hits := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"type": "string"}`)
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

// policyWith writes a formatted policy whose decision's reason, on line 5
// of deputy/authz/authz.rego, is expr.
func policyWith(t *testing.T, expr string) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "deputy", "authz", "authz.rego")
	writeStamped(t, file, "package deputy.authz\n\n# METADATA\n# entrypoint: true\ndecision := {\"allowed\": false, \"reason\": "+expr+"}\n")
	return dir, file
}

// Built-ins that reach the network or the host are refused wherever
// policies compile: deputy serve and deputy eval (a Source feeding an
// Engine), deputy policy check, deputy policy test and deputy bundle
// build. On the check path http.send could send a client's headers
// (session cookies) to any host on every check, and deputy eval replaying
// a decision record would send them again. The error names the built-in
// and where the policy calls it.
func TestNetworkAndHostBuiltinsRefused(t *testing.T) {
	srv, hits := hitCounter(t)
	cases := []struct{ builtin, expr string }{
		{"http.send", `http.send({"method": "GET", "url": concat("", ["` + srv.URL + `/leak?h=", object.get(input, "h", "")])}).status_code`},
		{"net.lookup_ip_addr", `net.lookup_ip_addr("localhost")`},
		{"opa.runtime", `opa.runtime()`},
		// A file:// $ref is opened whatever allow_net says: the schema
		// built-ins could test for and read parts of any file Deputy
		// can read.
		{"json.match_schema", `json.match_schema({"a": 1}, {"type": "object", "properties": {"a": {"$ref": "file:///etc/hostname"}}})`},
		{"json.verify_schema", `json.verify_schema({"$ref": "file:///etc/hostname"})`},
	}
	for _, tc := range cases {
		t.Run(tc.builtin, func(t *testing.T) {
			dir, file := policyWith(t, tc.expr)
			want := []string{tc.builtin, file + ":5", "refused"}
			refused := func(t *testing.T, what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: no error, want %s refused", what, tc.builtin)
				}
				for _, w := range want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: err = %v, want it to mention %q", what, err, w)
					}
				}
			}

			e := policy.New(policy.WithLogger(quiet()))
			src, err := policy.NewSource(policy.Config{Paths: []string{dir}}, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			refused(t, "serve and eval", src.Start(context.Background()))
			if e.Ready() {
				_, _ = e.Eval(context.Background(), policy.DefaultDecisionQuery, input("GET"))
				t.Error("the policy serves")
			}
			_, err = policy.Check([]string{dir}, policy.CheckOptions{})
			refused(t, "policy check", err)
			_, err = policy.RunTests(context.Background(), []string{dir}, policy.TestOptions{})
			refused(t, "policy test", err)
			_, err = policy.BuildBundle([]string{dir}, policy.BuildOptions{Revision: "r"})
			refused(t, "bundle build", err)
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback server got %d requests from policies", n)
	}
}

// JSON schema built-ins allowed by name (policy.allow_builtins) still
// fetch no remote $ref: that would reach the network from the check path
// as http.send does.
func TestSchemaBuiltinsFetchNothing(t *testing.T) {
	srv, hits := hitCounter(t)
	dir, _ := policyWith(t, `json.match_schema({"a": 1}, {"type": "object", "properties": {"a": {"$ref": "`+srv.URL+`/schema.json"}}})`)
	e := policy.New(policy.WithLogger(quiet()), policy.WithAllowedBuiltins("json.match_schema"))
	src, err := policy.NewSource(policy.Config{Paths: []string{dir}}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatalf("a policy with json.match_schema refused: %v", err)
	}
	_, _ = e.Eval(context.Background(), policy.DefaultDecisionQuery, input("GET"))
	if n := hits.Load(); n != 0 {
		t.Errorf("evaluating json.match_schema fetched its remote $ref (%d requests)", n)
	}
}

// The clock and randomness stay available: a policy may compare a claim
// with time.now_ns. Such a decision is not one deputy eval can replay
// exactly; the documentation says so.
func TestClockBuiltinsServe(t *testing.T) {
	for _, expr := range []string{`format_int(time.now_ns(), 10)`, `format_int(rand.intn("r", 10), 10)`, `uuid.rfc4122("r")`} {
		t.Run(expr, func(t *testing.T) {
			dir, _ := policyWith(t, expr)
			if _, err := policy.Check([]string{dir}, policy.CheckOptions{}); err != nil {
				t.Fatal(err)
			}
			e := policy.New(policy.WithLogger(quiet()))
			src, err := policy.NewSource(policy.Config{Paths: []string{dir}}, e, policy.WithSourceLogger(quiet()))
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, l := decide(t, e); l == "" {
				t.Error("no reason decided")
			}
		})
	}
}

// policy.allow_builtins allows a refused built-in by name, for the
// operator who needs it; it takes only names Deputy refuses.
func TestAllowBuiltinsAllowsByName(t *testing.T) {
	srv, hits := hitCounter(t)
	dir, _ := policyWith(t, `format_int(http.send({"method": "GET", "url": "`+srv.URL+`"}).status_code, 10)`)
	if _, err := policy.Check([]string{dir}, policy.CheckOptions{AllowBuiltins: []string{"http.send"}}); err != nil {
		t.Fatalf("policy check with http.send allowed: %v", err)
	}
	e := policy.New(policy.WithLogger(quiet()), policy.WithAllowedBuiltins("http.send"))
	src, err := policy.NewSource(policy.Config{Paths: []string{dir}, AllowBuiltins: []string{"http.send"}}, e, policy.WithSourceLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatalf("serving with http.send allowed: %v", err)
	}
	if _, l := decide(t, e); l != "200" || hits.Load() != 1 {
		t.Errorf("reason %q after %d requests, want 200 after 1", l, hits.Load())
	}

	for _, name := range []string{"time.now_ns", "http.sen", ""} {
		cfg := policy.Config{AllowBuiltins: []string{name}}
		cfg.SetDefaults()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "policy.allow_builtins") {
			t.Errorf("allow_builtins [%q]: err = %v, want it refused naming policy.allow_builtins", name, err)
		}
	}
}
