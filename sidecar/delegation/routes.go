package delegation

import "strings"

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
