package authz_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/authz"
	"github.com/deputyhq/deputy/sidecar/decisionlog"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/logtest"
	"github.com/deputyhq/deputy/sidecar/memory"
)

// attemptFields are the record fields that name a refused attempt to act
// for someone.
var attemptFields = []string{"attempted_on_behalf_of", "attempted_session", "attempted_session_actor"}

// A refused attempt to act for someone is recorded as what it was: the
// caller, acting as themselves, and beside that what they tried, in
// fields that name it attempted: the session a cookie named (its id and
// actor, never the cookie) or the customer the request named. It is
// recorded nowhere else: the upstream, even with dry run letting the
// request through, sees the caller alone.
func TestRefusedDelegationRecordsTheAttempt(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		name := "enforced"
		if dryRun {
			name = "dry_run"
		}
		t.Run(name, func(t *testing.T) { refusedDelegationRecords(t, dryRun) })
	}
}

func refusedDelegationRecords(t *testing.T, dryRun bool) {
	ctx := context.Background()
	now := time.Now()
	store := memory.New()
	live, ended := twoSessions(t, store, now)
	if err := store.PutGrant(ctx, &sidecar.Grant{ID: "g1", Customer: "acme", PartnerOrg: "helpco", Level: sidecar.Level("update"), ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	var buf logtest.Lines
	cfg := decisionlog.Defaults()
	cfg.FlushInterval = time.Millisecond
	logs, err := decisionlog.New(cfg, decisionlog.NewWriterSink(&buf), decisionlog.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := logs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p, mint := delegatedPipelineWith(t, store, []authz.Option{authz.WithDecisionLogger(logs), authz.WithDecisionInput(true), authz.WithDryRun(dryRun)})
	bearer := func(sub, org string) string {
		return "Bearer " + mint(identity.DevClaims{Subject: sub, Org: org, Roles: []string{"support_agent", "partner"}, TTL: time.Hour})
	}
	type want map[string]string // record field → value; "" for absent
	cases := []struct {
		name    string
		path    string
		host    string
		headers map[string]string
		want    want
	}{
		{
			name:    "someone else's session cookie",
			path:    "/customer/account",
			headers: map[string]string{"cookie": "deputy_session=" + live, "authorization": bearer("mallory", "")},
			want: want{"actor": "mallory", "subject": "mallory", "reason": "session_actor_mismatch", "mode": "", "session_id": "",
				"attempted_session": "imp_live", "attempted_session_actor": "staff-1", "attempted_on_behalf_of": "cust-imp_live"},
		},
		{
			name:    "session cookie on another host",
			path:    "/customer/account",
			host:    "evil.example.net",
			headers: map[string]string{"cookie": "deputy_session=" + live},
			want: want{"actor": "", "subject": "", "reason": "session_wrong_host", "session_id": "",
				"attempted_session": "imp_live", "attempted_session_actor": "staff-1", "attempted_on_behalf_of": "cust-imp_live"},
		},
		{
			name:    "ended session's cookie",
			path:    "/customer/account",
			headers: map[string]string{"cookie": "deputy_session=" + ended},
			want: want{"reason": "session_ended", "session_id": "",
				"attempted_session": "imp_ended", "attempted_session_actor": "staff-1", "attempted_on_behalf_of": "cust-imp_ended"},
		},
		{
			name:    "unknown cookie",
			path:    "/customer/account",
			headers: map[string]string{"cookie": "deputy_session=" + strings.Repeat("u", 43)},
			want:    want{"reason": "session_unknown", "attempted_session": "", "attempted_session_actor": "", "attempted_on_behalf_of": ""},
		},
		{
			name:    "customer named by header, no grant",
			path:    "/service-requests/1",
			headers: map[string]string{"x-on-behalf-of": "globex", "authorization": bearer("pat", "helpco")},
			want: want{"actor": "pat", "subject": "pat", "reason": "no_live_grant", "mode": "", "session_id": "",
				"attempted_on_behalf_of": "globex", "attempted_session": "", "attempted_session_actor": ""},
		},
		{
			name:    "customer named by path, no grant",
			path:    "/customers/globex/contacts/1",
			headers: map[string]string{"authorization": bearer("pat", "helpco")},
			want: want{"actor": "pat", "subject": "pat", "reason": "no_live_grant", "session_id": "",
				"attempted_on_behalf_of": "globex", "attempted_session": ""},
		},
		{
			name:    "customer named with no identity",
			path:    "/service-requests/1",
			headers: map[string]string{"x-on-behalf-of": "globex"},
			want:    want{"actor": "", "reason": "identity_required", "attempted_on_behalf_of": "globex"},
		},
		{
			// Granted: the delegation is recorded, and nothing as attempted.
			name:    "customer named with a grant",
			path:    "/service-requests/1",
			headers: map[string]string{"x-on-behalf-of": "acme", "authorization": bearer("pat", "helpco")},
			want:    want{"actor": "pat", "subject": "acme", "mode": "partner", "session_id": "g1", "attempted_on_behalf_of": ""},
		},
		{
			name:    "own session",
			path:    "/customer/account",
			headers: map[string]string{"cookie": "deputy_session=" + live},
			want:    want{"actor": "staff-1", "subject": "cust-imp_live", "mode": "impersonation", "session_id": "imp_live", "attempted_session": ""},
		},
	}
	var upstream []string
	for _, tc := range cases {
		host := tc.host
		if host == "" {
			host = "shop.example.com"
		}
		h := map[string]string{":authority": host}
		for k, v := range tc.headers {
			h[k] = v
		}
		req := withHeaders(t, tc.path, h)
		req.Attributes.Request.Http.Host = host
		resp := p.Check(ctx, req)
		if _, refused := tc.want["reason"]; refused && resp.Allowed && !dryRun {
			t.Fatalf("%s: allowed, want refused %s", tc.name, tc.want["reason"])
		}
		if _, granted := tc.want["reason"]; !granted && resp.Allowed {
			continue
		}
		for _, hd := range append(resp.Injected, resp.Headers...) {
			upstream = append(upstream, tc.name+": "+hd.Key+": "+hd.Value)
		}
	}
	stop, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := logs.Stop(stop); err != nil {
		t.Fatal(err)
	}
	recs := buf.Records(t)
	if len(recs) != len(cases) {
		t.Fatalf("%d records, want %d", len(recs), len(cases))
	}
	for i, tc := range cases {
		rec := recs[i]
		for field, w := range tc.want {
			got, _ := rec[field].(string)
			if got != w {
				t.Errorf("%s: record %s = %q, want %q", tc.name, field, got, w)
			}
		}
		enc := buf.String()
		if strings.Contains(enc, live) || strings.Contains(enc, ended) {
			t.Errorf("%s: a session cookie's token is in the records", tc.name)
		}
		if tc.want["attempted_on_behalf_of"] != "" && rec["subject"] == tc.want["attempted_on_behalf_of"] {
			t.Errorf("%s: the attempted customer is recorded as the subject", tc.name)
		}
	}
	// What a refused attempt named never reaches the upstream or the
	// client, dry run or not.
	for _, line := range upstream {
		for _, leak := range []string{"imp_live", "imp_ended", "staff-1", "globex"} {
			if strings.Contains(line, leak) {
				t.Errorf("refused attempt's %q in a header: %s", leak, line)
			}
		}
	}
}
