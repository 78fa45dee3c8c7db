package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/logtest"
)

// recordLines are the records out holds, one a line.
func recordLines(out *logtest.Lines) [][]byte {
	return bytes.Split(bytes.TrimSpace([]byte(out.String())), []byte("\n"))
}

// startDecisionLog is a running decision logger writing records to out.
func startDecisionLog(t *testing.T, out *logtest.Lines, opts ...decisionlog.Option) *decisionlog.Logger {
	t.Helper()
	cfg := decisionlog.Defaults()
	cfg.Sink = decisionlog.SinkStdout
	logger, err := decisionlog.New(cfg, decisionlog.NewWriterSink(out), append(opts, decisionlog.WithLogger(slog.New(slog.DiscardHandler)))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := logger.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return logger
}

// Every management decision reaches the decision log, refusals above all:
// the audit trail holds the changes made, and without these records a
// refused call (a super admin probing another domain's customer, a
// customer trying staff actions) left no trace anywhere.
func TestManageDecisionsAreLogged(t *testing.T) {
	p := newPartnerAPI(t, partnerBackends(t)[0])
	seedDomains(t, p)
	var out logtest.Lines
	logger := startDecisionLog(t, &out)
	verifier, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}}, identity.WithDevIssuer(p.dev), identity.WithClock(p.clock))
	if err != nil {
		t.Fatal(err)
	}
	p.handler = api.New(api.WithVerifier(verifier), api.WithEngine(p.engine), api.WithClock(p.clock),
		api.WithRoutes(api.NewReseller(p.resellers)), api.WithDecisionLogger(logger))

	sam, customer := p.tok(samClaims), p.tok(identity.DevClaims{Subject: "carl", Roles: []string{"customer"}})
	if r := p.call("PUT", "reseller/assignments/globex", sam, map[string]any{"domain": "shop-a.example"}); r.status != 403 {
		t.Fatalf("claiming another domain's customer: %d %s", r.status, r.raw)
	}
	if r := p.call("DELETE", "reseller/assignments/acme", customer, nil); r.status != 403 {
		t.Fatalf("a customer deleting an assignment: %d %s", r.status, r.raw)
	}
	if r := p.call("GET", "reseller/assignments/acme", sam, nil); r.status != 200 {
		t.Fatalf("reading one's own domain's customer: %d %s", r.status, r.raw)
	}
	if err := logger.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}

	type rec struct {
		Method, Path, Result, Reason, Actor string
		Status                              int `json:"http_status"`
		Input                               struct {
			Action string
			Target map[string]any
		}
	}
	var got []rec
	for _, line := range recordLines(&out) {
		var r rec
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("record %s: %v", line, err)
		}
		got = append(got, r)
	}
	want := []rec{
		{Method: "PUT", Path: "/deputy/v1/reseller/assignments/globex", Result: "deny", Reason: "customer_not_in_domain", Actor: "sam", Status: 403},
		{Method: "DELETE", Path: "/deputy/v1/reseller/assignments/acme", Result: "deny", Reason: "not_permitted", Actor: "carl", Status: 403},
		{Method: "GET", Path: "/deputy/v1/reseller/assignments/acme", Result: "allow", Actor: "sam", Status: 200},
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			if g.Method == w.Method && g.Path == w.Path && g.Result == w.Result && g.Actor == w.Actor && g.Status == w.Status &&
				(w.Reason == "" || g.Reason == w.Reason) && g.Input.Action != "" && g.Input.Target["customer"] != nil {
				found = true
			}
		}
		if !found {
			t.Errorf("no record %+v with its action and target among %+v", w, got)
		}
	}
}
