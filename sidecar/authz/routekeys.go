package authz

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
)

// CheckData refuses policy data the check would read otherwise than its
// author meant: what delegation.CheckRules refuses, and any key or prefix
// naming a route that is not written in the form requests are matched in
// (checkRouteKeys). `deputy serve`, `deputy eval`, `deputy policy check`
// and `deputy bundle build` all run it, so a set one accepts the others
// accept.
func CheckData(data map[string]any) error {
	if err := delegation.CheckRules(data); err != nil {
		return err
	}
	return checkRouteKeys(data)
}

// keyForm is the form of the request's path a route table's keys are
// compared with, as they are: the policies pay for no conversion of the
// data on every check. A key not written in that form equals no request's,
// so the rule it carries is dead: a forbidden route left open, or an
// allowed one that never opens. Rather than list the slips (a folding
// letter, a front controller, a format, ";params", an escape), a key must
// come back unchanged from the very functions that build the request's
// form, so the check cannot drift from the matcher.
type keyForm int

const (
	routeDir     keyForm = iota // a route prefix, matched on input.deputy.request.route_dirs
	routeSegment                // one segment of input.deputy.request.route_segments
	lowerPath                   // input.deputy.request.lower_path
	lowerSegment                // input.deputy.request.lower_segments[0]
)

// routeFormIs says what the route form is, for the refusals, of the
// segments a route key is compared with: never a request's last, the one
// segment cut at its first dot.
const routeFormIs = "lower case with Unicode compatibility forms (NFKC) and folding, slashes merged, ;params, trailing dots and spaces and index.php front controllers dropped, as a segment with more path after it (dots kept)"

// lowerFormIs says what the lower-cased canonical path is.
const lowerFormIs = "decoded once, slashes merged, ;params dropped, lower case"

func (f keyForm) String() string {
	switch f {
	case routeDir:
		return "input.deputy.request.route_dirs, the route form as a directory: " + routeFormIs
	case routeSegment:
		return "a segment of input.deputy.request.route_segments, the route form: " + routeFormIs
	case lowerPath:
		return "input.deputy.request.lower_path: " + lowerFormIs
	default:
		return "input.deputy.request.lower_segments[0]: " + lowerFormIs
	}
}

// of returns key in form f, built as the request's form is from a raw path.
// A route key is compared with segments that have more path after them (a
// prefix ends in "/", a partner section is followed by its item), never
// with a request's last segment, the one the route form cuts at its dot:
// its form is built with one more segment after it, then dropped, so
// "/customer/account.v2/" stays as written, as it appears in the route of
// /customer/account.v2/password, and in the route_dirs of
// /customer/account.v2 (which also hold the last segment uncut:
// formatForms).
func (f keyForm) of(key string) (string, error) {
	if strings.IndexByte(key, '?') >= 0 {
		// parsePath is given a path its query is cut from: it does not
		// refuse "?" itself.
		return "", errQuery
	}
	raw := key
	if f == routeSegment || f == lowerSegment {
		raw = "/" + key
	}
	if f == routeDir || f == routeSegment {
		raw += "/" + afterKey
	}
	cp, err := parsePath(raw, 0, 0)
	if err != nil {
		return "", err
	}
	segs := cp.segments
	switch f {
	case lowerPath:
		return lower(cp.path), nil
	case lowerSegment:
		if len(segs) != 1 {
			return "", errNotOneSegment
		}
		return lower(segs[0]), nil
	}
	route := routeSegments(segs)
	// The route form leaves afterKey as it is; were it ever to change it,
	// the key is refused rather than compared in a form no request has.
	if n := len(route); n == 0 || route[n-1] != afterKey {
		return "", fmt.Errorf("its route form with a segment after it is %q", route)
	}
	route = route[:len(route)-1]
	if f == routeSegment {
		if len(route) != 1 {
			return "", errNotOneSegment
		}
		return route[0], nil
	}
	if len(route) == 0 {
		return "/", nil
	}
	return "/" + strings.Join(route, "/") + "/", nil
}

// afterKey is the segment a route key is followed by to build its form:
// lower-case ASCII without a dot, its own route form.
const afterKey = "x"

var errQuery = errors.New(`a request's path ends at its first "?", where its query begins`)

var errNotOneSegment = errors.New("a section is one path segment, and requests are looked up by one")

// check refuses key, at data path at, unless it is in form f.
func (f keyForm) check(at, key string) error {
	form, err := f.of(key)
	if err != nil {
		var se *sidecar.Error
		if errors.As(err, &se) {
			// parsePath's refusal: a request spelling key is refused
			// before policy runs.
			return fmt.Errorf("%s: %+q can never match a request: requests spelling it are refused before policy (%s)", at, key, se.Message)
		}
		return fmt.Errorf("%s: %+q can never match a request: %v", at, key, err)
	}
	if form != key {
		return fmt.Errorf("%s: %+q can never match a request, compared with %s; write %+q", at, key, f, form)
	}
	return nil
}

// checkRouteKeys refuses keys and prefixes naming routes, in the tables
// the shipped policies read, that are not in the form each is matched in:
// impersonation forbidden_routes prefixes (a forbidden route's section
// is its prefix's first segment, which delegation.CheckRules checks),
// partner sections, and the public and signed-in paths and sections.
// (The partner customer_path_prefix is a word of letters, digits, "-" and
// "_", delegation.CheckRules requires: its own route form.) It reads data
// delegation.CheckRules accepted, and skips what is not of the shape that
// accepts.
func checkRouteKeys(data map[string]any) error {
	const fr = "data.deputy.impersonation.forbidden_routes"
	sections := dataObject(data, "deputy", "impersonation", "forbidden_routes")
	for _, section := range slices.Sorted(maps.Keys(sections)) {
		routes, _ := sections[section].([]any)
		for i, r := range routes {
			route, _ := r.(map[string]any)
			prefix, _ := route["prefix"].(string)
			if err := routeDir.check(fmt.Sprintf("%s.%s[%d].prefix", fr, section, i), prefix); err != nil {
				return err
			}
		}
	}
	for _, section := range slices.Sorted(maps.Keys(dataObject(data, "deputy", "partner", "sections"))) {
		if err := routeSegment.check("data.deputy.partner.sections."+section, section); err != nil {
			return err
		}
	}
	for _, tier := range []string{"public", "authenticated"} {
		for _, t := range []struct {
			kind string
			form keyForm
		}{{"paths", lowerPath}, {"sections", lowerSegment}} {
			for _, key := range slices.Sorted(maps.Keys(dataObject(data, "deputy", "authz", tier, t.kind))) {
				if err := t.form.check("data.deputy.authz."+tier+"."+t.kind+"."+key, key); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// dataObject is the object at path in data, nil when there is none.
func dataObject(data map[string]any, path ...string) map[string]any {
	cur := data
	for _, p := range path {
		cur, _ = cur[p].(map[string]any)
	}
	return cur
}
