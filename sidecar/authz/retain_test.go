package authz_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/memtest"
)

// The kept input.deputy terms (requestterm.go) are keyed by the canonical
// path, which for a path needing no rewrite was a slice of the :path
// header, query included: each kept entry held the whole :path alive (a
// query of tens of KiB), 67 KB a check. The path is now cut loose from
// its query.
func TestKeptRequestTermsHoldThePathAlone(t *testing.T) {
	p := shippedPipeline(t)
	const n, pad = 2000, 60 << 10
	// warm up
	p.Check(context.Background(), checkRequest(t, httpRequest("GET", "/catalog/warm", nil, "")))
	before := memtest.Live()
	allowed := 0
	for i := 0; i < n; i++ {
		path := fmt.Sprintf("/catalog/shoes%d?q=", i) + strings.Repeat("a", pad)
		resp := p.Check(context.Background(), checkRequest(t, httpRequest("GET", path, nil, "")))
		if resp.Allowed {
			allowed++
		}
	}
	after := memtest.Live()
	runtime.KeepAlive(p)
	grown := int64(after) - int64(before)
	t.Logf("allowed %d/%d; heap grew %d bytes (%d per check)", allowed, n, grown, grown/n)
	if grown > int64(n)*4096 {
		t.Errorf("kept request terms retain %d bytes per check (path is ~20 bytes): %d MiB for %d checks", grown/n, grown>>20, n)
	}
}

// The on-behalf grant cache (resolve.CachedState) is keyed by the customer
// the path names, a slice of the canonical path: each customer looked up
// (a negative entry too) held the whole path alive. It keeps a copy of
// the customer alone. Paths longer than requestTermMaxPath keep the
// request-term cache out of the picture.
func TestGrantCacheHoldsTheCustomerAlone(t *testing.T) {
	const n, pad = 1000, 60 << 10
	for _, partnerToken := range []bool{false, true} {
		store := memory.New()
		p, mint := delegatedPipeline(t, store)
		hdr := map[string]string{}
		if partnerToken {
			hdr["authorization"] = "Bearer " + mint(identity.DevClaims{Subject: "pat", Org: "helpco", Roles: []string{"partner"}, TTL: time.Hour})
		}
		p.Check(context.Background(), checkRequest(t, httpRequest("GET", "/catalog/warm", hdr, "")))
		before := memtest.Live()
		for i := 0; i < n; i++ {
			path := fmt.Sprintf("/customers/c%d/service-requests/%s?q=", i, strings.Repeat("x", 300)) + strings.Repeat("a", pad)
			p.Check(context.Background(), checkRequest(t, httpRequest("GET", path, hdr, "")))
		}
		after := memtest.Live()
		runtime.KeepAlive(p)
		grown := int64(after) - int64(before)
		t.Logf("partner token %v: heap grew %d bytes (%d per check)", partnerToken, grown, grown/n)
		if grown > int64(n)*4096 {
			t.Errorf("partner token %v: %d bytes retained per check, %d MiB for %d checks", partnerToken, grown/n, grown>>20, n)
		}
	}
}
