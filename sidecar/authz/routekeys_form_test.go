package authz

import (
	"strings"
	"testing"
)

// A route key is compared with a segment that has more path after it: a
// forbidden prefix ends in "/", and a partner section is followed by its
// item. The route form cuts only a request's last segment at its dot, so
// a key holding a dot matches requests as written and must be accepted:
// refusing it, with a dotless form to write instead, would have the
// author trade a working rule for one that misses those requests (for a
// forbidden route, open the page it names).
func TestRouteKeyWithDotMatchingRequestsIsAccepted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]any
		request string
		// matches reports whether the key matches the request's route
		// segments, as the shipped policies compare them.
		matches func(route []string) bool
	}{
		{
			name: "forbidden prefix with a dot in its last segment",
			data: map[string]any{"deputy": map[string]any{"impersonation": map[string]any{"forbidden_routes": map[string]any{
				"customer": []any{map[string]any{"prefix": "/customer/account.v2/", "reason": "password_change_forbidden"}},
			}}}},
			request: "/customer/account.v2/password",
			matches: func(route []string) bool {
				// route_dirs[0], matched by prefix as _forbidden_routes does.
				return strings.HasPrefix("/"+strings.Join(route, "/")+"/", "/customer/account.v2/")
			},
		},
		{
			name: "partner section holding a dot",
			data: map[string]any{"deputy": map[string]any{"partner": map[string]any{"sections": map[string]any{
				"reports.v2": map[string]any{},
			}}}},
			request: "/customers/acme/reports.v2/r1",
			matches: func(route []string) bool { return len(route) > 3 && route[2] == "reports.v2" },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp, err := parsePath(tc.request, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if route := routeSegments(cp.segments); !tc.matches(route) {
				t.Fatalf("the key does not match %s (route %q): the case shows nothing", tc.request, route)
			}
			if err := checkRouteKeys(tc.data); err != nil {
				t.Fatalf("checkRouteKeys refuses a key that matches %s: %v", tc.request, err)
			}
		})
	}
}
