package policy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/deputyhq/deputy/sidecar"
)

// refusedBuiltins are the OPA built-in functions Deputy's policies may not
// call, with what each would do: they reach past the request and the
// policy's data, to the network or the host. On the check path http.send
// could send a client's headers (a session cookie) to any host on every
// check, and `deputy eval` replaying a decision record would send them
// again. What a decision needs from elsewhere comes in through input or
// data, which Deputy fills. The list is the same for every compile:
// deputy serve and eval (compileModules), policy check and bundle build
// (strictCompile) and policy test (RunTests), all through capabilities.
//
// The clock and randomness (time.now_ns, rand.intn, uuid.rfc4122,
// io.jwt.encode_sign) stay: they reach nothing, and a policy may compare a
// token's claims with the time. A decision that reads them is not one
// deputy eval replays exactly.
var refusedBuiltins = map[string]string{
	ast.HTTPSend.Name:        "sends HTTP requests",
	ast.NetLookupIPAddr.Name: "resolves names over DNS",
	ast.OPARuntime.Name:      "reads the host's runtime (environment, configuration)",
	// A schema's $ref may name a file:// URL, which OPA's schema loader
	// opens whatever allow_net says: a policy could test for, and read
	// parts of, any file Deputy can read (its keys among them).
	ast.JSONMatchSchema.Name:  "reads the files (file://) and hosts a schema's $ref names",
	ast.JSONSchemaVerify.Name: "reads the files (file://) and hosts a schema's $ref names",
}

// capabilities returns what every compile of Deputy's policies may use:
// OPA's built-ins for this version without refusedBuiltins, and no host
// to reach (allow_net empty), so json.match_schema and json.verify_schema,
// when allowed, fetch no remote $ref (a file:// one they still read). The
// evaluator reads allow_net from the compiler.
// The refused built-ins allow names (policy.allow_builtins) stay; when one
// of them reaches the network, so may every built-in, to any host, as in
// OPA.
func capabilities(allow []string) *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		_, refused := refusedBuiltins[b.Name]
		return refused && !slices.Contains(allow, b.Name)
	})
	c.AllowNet = []string{}
	if slices.Contains(allow, ast.HTTPSend.Name) || slices.Contains(allow, ast.NetLookupIPAddr.Name) {
		c.AllowNet = nil
	}
	return c
}

// CheckAllowedBuiltins refuses, naming field, a name that is not one of
// the built-ins Deputy refuses by default.
func CheckAllowedBuiltins(field string, names []string) error {
	for _, n := range names {
		if _, ok := refusedBuiltins[n]; !ok {
			return sidecar.Invalid(field, "%q is not a built-in Deputy refuses: want one of %s", n, strings.Join(RefusedBuiltins(), ", "))
		}
	}
	return nil
}

// RefusedBuiltins returns the names of the built-ins Deputy refuses unless
// policy.allow_builtins names them, sorted.
func RefusedBuiltins() []string {
	return slices.Sorted(maps.Keys(refusedBuiltins))
}

// refusedBuiltinErr turns the compiler's "undefined function" errors for
// refused built-ins into one error naming each built-in, where it is
// called and why it is refused; nil when errs hold none.
func refusedBuiltinErr(errs ast.Errors) error {
	var found []string
	for _, e := range errs {
		name, ok := strings.CutPrefix(e.Message, "undefined function ")
		why, refused := refusedBuiltins[name]
		if !ok || !refused {
			continue
		}
		where := "?"
		if e.Location != nil {
			where = fmt.Sprintf("%s:%d", e.Location.File, e.Location.Row)
		}
		found = append(found, fmt.Sprintf("%s: %s is refused: it %s", where, name, why))
	}
	if len(found) == 0 {
		return nil
	}
	return sidecar.Invalid("policies", "%s; Deputy's policies may not reach the network or the host: pass what a decision needs in input or data (policy.allow_builtins, or --allow-builtins, allows one anyway)", strings.Join(found, "; "))
}

// compileErr is refusedBuiltinErr of err's compile errors, or nil.
func compileErr(err error) error {
	var errs ast.Errors
	if errors.As(err, &errs) {
		return refusedBuiltinErr(errs)
	}
	return nil
}
