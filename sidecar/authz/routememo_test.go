package authz_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// The shipped impersonation policy keeps its route matching across checks
// (sidecar/policy's memo): checks running at once on the same and on new
// routes, with methods that change the answer for the same route, each get
// their own request's decision. Run with -race.
func TestImpersonationRouteMatchingAcrossConcurrentChecks(t *testing.T) {
	p, token := impersonationPipeline(t, time.Now())
	cases := []struct {
		method, path string
		allowed      bool
		reason       string
	}{
		{"GET", "/customer/account", true, "impersonation"},
		{"GET", "/customer/account/edit", true, "impersonation"},
		{"POST", "/customer/account/edit", false, "account_change_forbidden"},
		{"GET", "/customer/account/password", false, "password_change_forbidden"},
		{"GET", "/fr/customer/account/password/x", false, "password_change_forbidden"},
		{"PATCH", "/Customer/Account/EditPost", false, "account_change_forbidden"},
		{"DELETE", "/customer/payment/list", false, "payment_method_change_forbidden"},
		{"GET", "/customer/payment/list", true, "impersonation"},
		{"GET", "/catalog/shoes", true, "impersonation"},
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				c := cases[(g+i)%len(cases)]
				path := c.path
				if i%3 == 0 {
					path = fmt.Sprintf("%s/%d-%d", c.path, g, i) // a route not matched before
				}
				req := withHeaders(t, path, map[string]string{"cookie": "deputy_session=" + token})
				req.Attributes.Request.Http.Method = c.method
				req.Attributes.Request.Http.Headers[":method"] = c.method
				resp := p.Check(context.Background(), req)
				if resp.Allowed != c.allowed || resp.Reason != c.reason {
					errs <- fmt.Errorf("%s %s: allowed %v (%s), want %v (%s)", c.method, path, resp.Allowed, resp.Reason, c.allowed, c.reason)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
