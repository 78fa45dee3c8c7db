package api_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// identityHeaderAPI is the management API with identity.header set to
// header, and a reseller super admin's token.
func identityHeaderAPI(t *testing.T, header string) (http.Handler, string) {
	t.Helper()
	ck := &clock{now: time.Now().Truncate(time.Second)}
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := engine.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := identity.New(identity.Config{Header: header, Dev: identity.DevConfig{Enabled: true}},
		identity.WithDevIssuer(dev), identity.WithClock(ck.Now))
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	t.Cleanup(func() { store.Close() })
	h := api.New(api.WithVerifier(verifier), api.WithEngine(engine), api.WithClock(ck.Now),
		api.WithRoutes(api.NewReseller(delegation.NewResellers(store, delegation.ResellerConfig{}))))
	tok, err := dev.Mint(identity.DevClaims{Subject: "sal", Org: "resellerco", Domain: "shop-a.example",
		Roles: []string{"reseller_super_admin"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return h, tok
}

// With identity.header set (a documented setting the chart forwards), the
// check path reads the token from that header: the management API must
// too, or every caller is anonymous whichever header carries the token.
func TestManagementAPIReadsIdentityHeader(t *testing.T) {
	h, tok := identityHeaderAPI(t, "X-Auth-Token")
	// The check path accepts this token in X-Auth-Token.
	for _, hdr := range []string{"X-Auth-Token", "Authorization"} {
		req := httptest.NewRequest(http.MethodGet, "/deputy/v1/reseller/assignments", nil)
		req.Header.Set(hdr, "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		t.Logf("token in %s: %d %s", hdr, w.Code, w.Body.String())
		if w.Code == http.StatusOK {
			return
		}
	}
	t.Fatal("a reseller super admin with a valid token is refused by the management API in every header: identity.header is ignored there")
}

// The management API reads the token under every spelling the check path
// reads it (CGI, PHP and WSGI upstreams read "_" as "-"), and refuses it
// sent more than once, as the check path does: both read one header.
func TestManagementAPIReadsIdentityHeaderAsCheckPathDoes(t *testing.T) {
	for _, configured := range []string{"x-auth-token", "x_auth_token"} {
		t.Run(configured, func(t *testing.T) {
			h, tok := identityHeaderAPI(t, configured)
			cases := []struct {
				name    string
				headers [][2]string
				want    int
			}{
				{name: "configured header", headers: [][2]string{{"X-Auth-Token", "Bearer " + tok}}, want: http.StatusOK},
				{name: "underscore spelling", headers: [][2]string{{"x_auth_token", "Bearer " + tok}}, want: http.StatusOK},
				{name: "authorization is not the token header", headers: [][2]string{{"Authorization", "Bearer " + tok}}, want: http.StatusUnauthorized},
				{name: "sent twice", headers: [][2]string{{"X-Auth-Token", "Bearer " + tok}, {"X-Auth-Token", "Bearer " + tok}}, want: http.StatusUnauthorized},
				{name: "under two spellings", headers: [][2]string{{"X-Auth-Token", "Bearer " + tok}, {"x_auth_token", "Bearer " + tok}}, want: http.StatusUnauthorized},
				{name: "no token", want: http.StatusUnauthorized},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					req := httptest.NewRequest(http.MethodGet, "/deputy/v1/reseller/assignments", nil)
					for _, kv := range tc.headers {
						// As sent: net/http keeps an underscore name apart.
						req.Header[kv[0]] = append(req.Header[kv[0]], kv[1])
					}
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != tc.want {
						t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body.String())
					}
				})
			}
		})
	}
}

// Two Authorization headers are refused as the check path refuses them
// (it reads them joined, a token no issuer signed), not read as the first.
func TestManagementAPIRefusesAuthorizationSentTwice(t *testing.T) {
	h, tok := identityHeaderAPI(t, "")
	for _, n := range []int{1, 2} {
		req := httptest.NewRequest(http.MethodGet, "/deputy/v1/reseller/assignments", nil)
		for range n {
			req.Header.Add("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if want := map[int]int{1: http.StatusOK, 2: http.StatusUnauthorized}[n]; w.Code != want {
			t.Fatalf("%d Authorization headers: status %d, want %d: %s", n, w.Code, want, w.Body.String())
		}
	}
}
