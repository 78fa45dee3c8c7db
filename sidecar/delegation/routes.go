package delegation

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// routeMethodWant says what a route table's method key must be.
const routeMethodWant = `want an upper-case method name or "*" (requests' methods are upper-cased before route tables are read)`

// routeMethod reports whether s can key a route table: "*", or a method
// name (an RFC 9110 token) with no lower-case letter, as the canonical
// request's methods are. Any other key matches no request: the route its
// author meant to open stays closed, or the one meant closed stays open.
func routeMethod(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// checkAuthzRoutes refuses route tables of data.deputy.authz (the public
// and authenticated routes) that the authz policy would read otherwise
// than meant. The policy opens a method when its table's entry for it, or
// for "*", is defined and not false: a value other than true ("false", 0,
// null) would open the method it seems to close, and an explicit false
// beside "*" would be overruled by it. The tables are lists of what is
// open, so every value must be true; a method left out stays closed. The
// policy pays for no type test on every public page: the data is checked
// here, once per activation.
func checkAuthzRoutes(data map[string]any) error {
	v := lookup(data, "deputy", "authz")
	if v == nil {
		return nil
	}
	authz, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("data.deputy.authz: want an object, got %s", show(v))
	}
	for _, tier := range []string{"public", "authenticated"} {
		v, present := authz[tier]
		if !present {
			continue
		}
		at := "data.deputy.authz." + tier
		kinds, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object of paths and sections, got %s", at, show(v))
		}
		for _, kind := range []string{"paths", "sections"} {
			v, present := kinds[kind]
			if !present {
				continue
			}
			at := at + "." + kind
			routes, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s: want an object of route to methods, got %s", at, show(v))
			}
			for _, route := range slices.Sorted(maps.Keys(routes)) {
				at := at + "." + route
				methods, ok := routes[route].(map[string]any)
				if !ok {
					return fmt.Errorf("%s: want an object of method to true, got %s", at, show(routes[route]))
				}
				for _, method := range slices.Sorted(maps.Keys(methods)) {
					if !routeMethod(method) {
						return fmt.Errorf("%s.%s: %s", at, method, routeMethodWant)
					}
					if methods[method] != true {
						return fmt.Errorf("%s.%s: want true, got %s (a route lists the methods it opens; leave a method out to keep it closed)", at, method, show(methods[method]))
					}
				}
			}
		}
	}
	return nil
}
