package api_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/policy"
)

// A management decision record keeps what ops need to read a refusal,
// not the caller's whole token: no raw claims (an ssn claim here), no
// email, no display name, no free-text reason. The deployment's
// data.system.log.mask applies to it as to a check's record, it names the
// bundle revision that decided, and its http_status is what the caller
// got: an allowed redeem with a bad code answered 401.
func TestManageDecisionRecordHoldsNoClaims(t *testing.T) {
	e := newEnv(t, memoryStore)
	dir := shippedPolicies(t)
	mask := `package system.log

mask contains "/input/target/ticket" if input.input.action == "impersonation.start"
`
	if err := os.MkdirAll(filepath.Join(dir, "system", "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "system", "log", "mask.rego"), []byte(mask), 0o644); err != nil {
		t.Fatal(err)
	}
	activate(t, e, dir, "rev-42")

	var out logtest.Lines
	logger := startDecisionLog(t, &out, decisionlog.WithMaskPolicy())
	e.handler = api.New(api.WithVerifier(e.idv), api.WithEngine(e.engine), api.WithClock(e.clock.Now),
		api.WithRoutes(api.NewImpersonation(e.svc)), api.WithDecisionLogger(logger))

	ctx := context.Background()
	if _, err := e.store.PutCustomer(ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	if r := e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true}); r.Status != 200 {
		t.Fatalf("consent: %d %s", r.Status, r.Raw)
	}
	alice, err := e.dev.Mint(identity.DevClaims{Subject: "alice", Name: "Alice Smith", Email: "alice@shop.example", Org: "shopco",
		Roles: []string{"support_agent"}, TTL: time.Hour, IssuedAt: e.clock.Now(), Extra: map[string]any{"ssn": "078-05-1120"}})
	if err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/deputy/v1/impersonation/sessions", alice,
		map[string]any{"customer_id": "c42", "reason": "called about order 7 of Jane Roe", "ticket": "SUP-1"})
	if r.Status != 201 {
		t.Fatalf("start: %d %s", r.Status, r.Raw)
	}
	if r := e.do("GET", "/deputy/v1/impersonation/redeem?code=BAD", "", nil); r.Status != 401 {
		t.Fatalf("redeem with a bad code: %d %s", r.Status, r.Raw)
	}
	if err := logger.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	type rec struct {
		Path     string
		Result   string
		Status   int    `json:"http_status"`
		Revision string `json:"bundle_revision"`
		Input    struct {
			Action   string
			Identity map[string]any
			Target   map[string]any
		}
		raw string
	}
	found := map[string]rec{}
	for _, line := range recordLines(&out) {
		var r rec
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("record %s: %v", line, err)
		}
		r.raw = string(line)
		found[r.Input.Action] = r
	}
	start, ok := found["impersonation.start"]
	if !ok {
		t.Fatalf("no record of the start among %v", found)
	}
	for _, secret := range []string{"078-05-1120", "ssn", "alice@shop.example", "Alice Smith", "Jane Roe", "SUP-1"} {
		if strings.Contains(start.raw, secret) {
			t.Errorf("the start's record holds %q: %s", secret, start.raw)
		}
	}
	if start.Input.Identity["sub"] != "alice" || start.Input.Identity["org"] != "shopco" || start.Input.Identity["roles"] == nil {
		t.Errorf("the start's record names the caller as %v, want sub, org and roles", start.Input.Identity)
	}
	if start.Input.Target["customer_id"] != "c42" {
		t.Errorf("the start's record has target %v, want the customer", start.Input.Target)
	}
	if start.Revision != "rev-42" || start.Status != 201 || start.Result != "allow" {
		t.Errorf("the start's record: revision %q, status %d, result %s; want rev-42, 201, allow", start.Revision, start.Status, start.Result)
	}
	redeem, ok := found["impersonation.redeem"]
	if !ok {
		t.Fatalf("no record of the redeem among %v", found)
	}
	if redeem.Status != 401 || redeem.Path != "/deputy/v1/impersonation/redeem" {
		t.Errorf("the bad redeem's record: status %d on %s, want 401", redeem.Status, redeem.Path)
	}
}

// activate serves the policies in dir, at revision rev, on e's engine.
func activate(t *testing.T, e *env, dir, rev string) {
	t.Helper()
	set, err := policy.LoadPaths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	set.Revision = rev
	if err := e.engine.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
}
