package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// A reseller domain's bound and row budget, set in policy data, answer a
// PUT or an import past them: 409 naming max_domain_assignments, 429 with
// Retry-After naming max_assignment_rows_per_hour.
func TestResellerQuotasOverHTTP(t *testing.T) {
	ck := &clock{now: time.Now().Truncate(time.Second)}
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	reseller := set.Data["deputy"].(map[string]any)["reseller"].(map[string]any)
	reseller["max_domain_assignments"], reseller["max_assignment_rows_per_hour"] = json.Number("3"), json.Number("5")
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := engine.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}}, identity.WithDevIssuer(dev), identity.WithClock(ck.Now))
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New(memory.WithClock(ck.Now))
	t.Cleanup(func() { store.Close() })
	data := func() map[string]any { return engine.Current().Data() }
	h := api.New(api.WithVerifier(verifier), api.WithEngine(engine), api.WithClock(ck.Now),
		api.WithRoutes(api.NewReseller(delegation.NewResellers(store, delegation.ResellerConfig{},
			delegation.WithResellerClock(ck.Now), delegation.WithResellerPolicyData(data)))))
	tok, err := dev.Mint(identity.DevClaims{Subject: "sal", Org: "resellerco", Domain: "shop-a.example",
		Roles: []string{"reseller_super_admin"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body, ctype string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(method, "/deputy/v1/"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	if w := call("POST", "reseller/imports", "a1,shop-a.example\na2,shop-a.example\na3,shop-a.example\n", "text/csv"); w.Code != http.StatusOK {
		t.Fatalf("import of 3 into a bound of 3: %d %s", w.Code, w.Body)
	}
	w := call("PUT", "reseller/assignments/a4", `{"domain":"shop-a.example"}`, "application/json")
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "max_domain_assignments (3)") {
		t.Fatalf("a 4th customer: %d %s, want 409 naming max_domain_assignments (3)", w.Code, w.Body)
	}
	w = call("POST", "reseller/imports", "a5,shop-a.example\na6,shop-a.example\n", "text/csv")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "max_assignment_rows_per_hour (5)") {
		t.Fatalf("2 rows past 4 of 5: %d Retry-After %q %s, want 429 naming max_assignment_rows_per_hour (5)", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if list := call("GET", "reseller/assignments", "", ""); strings.Count(list.Body.String(), `"customer"`) != 3 {
		t.Fatalf("listed after two refusals: %s, want a1..a3", list.Body)
	}
}
