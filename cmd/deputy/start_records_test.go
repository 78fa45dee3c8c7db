package main

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/redis/redistest"
)

// TestStartRecordsSurviveARestartWithRedisGone: staff start a session,
// answered 201, and Redis goes away between the transaction that stored
// the session and the append of its impersonation.started event. Deputy
// is stopped before Redis is back: the start's event and audit entry are
// still queued and are dropped. Started again on the same Redis, Deputy's
// sweep records them, once: the customer is told, and the session log
// holds the session. A start whose records got through is not recorded
// twice, by the sweeps of that process or of the next.
func TestStartRecordsSurviveARestartWithRedisGone(t *testing.T) {
	rs := redistest.Start(t)
	proxy := redistest.StartProxy(t, rs.Addr)
	cfg := testConfig(t, "../../policies", func(c *Config) {
		c.ShutdownTimeout = time.Second
		c.DecisionLog.FlushTimeout = time.Second
		c.Redis.Addrs = []string{proxy.Addr}
		c.Impersonation.SweepInterval = 100 * time.Millisecond
		none := time.Duration(0)
		c.Metrics.FinalScrapeWait = &none // no one scrapes
	})
	token := devToken(t, &cfg)
	base := "http://" + cfg.HTTP.Addr
	sync := token(identity.DevClaims{Subject: "shop", Roles: []string{"customer_sync"}})
	staff := token(identity.DevClaims{Subject: "staff-1", Name: "Sam Staff", Roles: []string{"support_lead"}})
	other := token(identity.DevClaims{Subject: "staff-2", Roles: []string{"support_lead"}})
	mailer := token(identity.DevClaims{Subject: "mailer", Roles: []string{"mailer"}})
	auditor := token(identity.DevClaims{Subject: "aud", Roles: []string{"auditor"}})
	// serve runs Deputy until stop returns.
	serve := func() (stop func()) {
		t.Helper()
		cancel, done := startRun(t, &cfg)
		stopped := false
		stop = func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("server did not stop")
			}
		}
		t.Cleanup(stop)
		waitListening(t, cfg.HTTP.Addr)
		return stop
	}
	// counts reads how often each session appears in the events stream
	// as started and ended, in the audit trail as started, and in the
	// session log of staff-1 and staff-2.
	type seen struct{ started, ended, audited, logged int }
	counts := func() map[string]*seen {
		t.Helper()
		out := map[string]*seen{}
		at := func(id string) *seen {
			if out[id] == nil {
				out[id] = &seen{}
			}
			return out[id]
		}
		for _, c := range []string{"cust-9", "cust-7"} {
			for _, e := range apiCall(t, base, "GET", "/deputy/v1/events?limit=500&customer="+c, mailer, "", 200)["items"].([]any) {
				e := e.(map[string]any)
				data, _ := e["data"].(map[string]any)
				id, _ := data["session"].(string)
				switch e["type"] {
				case "impersonation.started":
					at(id).started++
				case "impersonation.ended":
					at(id).ended++
				}
			}
			for _, a := range apiCall(t, base, "GET", "/deputy/v1/audit?limit=500&customer="+c, auditor, "", 200)["items"].([]any) {
				if a := a.(map[string]any); a["action"] == "impersonation.start" {
					at(a["target"].(string)).audited++
				}
			}
		}
		for _, actor := range []string{"staff-1", "staff-2"} {
			for _, s := range apiCall(t, base, "GET", "/deputy/v1/impersonation/log?actor="+actor, staff, "", 200)["items"].([]any) {
				at(s.(map[string]any)["id"].(string)).logged++
			}
		}
		return out
	}
	events := func(customer, typ string) int {
		t.Helper()
		n := 0
		for _, e := range apiCall(t, base, "GET", "/deputy/v1/events?limit=500&customer="+customer, mailer, "", 200)["items"].([]any) {
			if e.(map[string]any)["type"] == typ {
				n++
			}
		}
		return n
	}

	stop := serve()
	apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9", sync, `{"name":"Zoe","default_store_view":"en"}`, 200)
	apiCall(t, base, "PUT", "/deputy/v1/customers/cust-9/consent", token(identity.DevClaims{Subject: "cust-9", Roles: []string{"customer"}}), `{"allowed":true}`, 200)
	proxy.CutOn("impersonation.started")
	lost := apiCall(t, base, "POST", "/deputy/v1/impersonation/sessions", staff, `{"customer_id":"cust-9","reason":"help with the cart"}`, 201)
	lostID := lost["session"].(map[string]any)["id"].(string)
	if !proxy.WasCut() {
		t.Fatal("the start's event reached Redis: nothing was cut")
	}
	stop() // SIGTERM while Redis is gone: the start's records are dropped
	proxy.Reset()
	if n, err := rs.Client().Exists(context.Background(), "deputy:{imp}:sess:"+lostID).Result(); err != nil || n != 1 {
		t.Fatalf("session %s in Redis: %d, %v; want it stored", lostID, n, err)
	}

	stop = serve() // restarted, on the same Redis
	eventually(t, "the lost start recorded", func() bool {
		c := counts()[lostID]
		return c != nil && c.started > 0 && c.audited > 0 && c.logged > 0
	})
	kept := apiCall(t, base, "POST", "/deputy/v1/impersonation/sessions", other, `{"customer_id":"cust-9","reason":"second look"}`, 201)
	keptID := kept["session"].(map[string]any)["id"].(string)
	apiCall(t, base, "DELETE", "/deputy/v1/impersonation/sessions/"+url.PathEscape(lostID), staff, "", 200)
	// A consent that lapses: its consent.expired event tells that the
	// next process swept, reading back every start kept, before it.
	apiCall(t, base, "PUT", "/deputy/v1/customers/cust-7", sync, `{"name":"Ann","default_store_view":"en"}`, 200)
	until := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339)
	apiCall(t, base, "PUT", "/deputy/v1/customers/cust-7/consent", token(identity.DevClaims{Subject: "cust-7", Roles: []string{"customer"}}),
		fmt.Sprintf(`{"allowed":true,"expires_at":%q}`, until), 200)
	stop()
	if n := streamTypes(t, rs, "deputy:events")["consent.expired"]; n != 0 {
		t.Fatal("the consent lapsed before the process stopped: it tells nothing of the next one")
	}
	serve()
	eventually(t, "the next process to sweep", func() bool { return events("cust-7", "consent.expired") > 0 })

	got := counts()
	if c := got[lostID]; c == nil || *c != (seen{started: 1, ended: 1, audited: 1, logged: 1}) {
		t.Errorf("session whose start records were dropped: %+v; want one started and one ended event, one audit entry, one session log entry", c)
	}
	if c := got[keptID]; c == nil || *c != (seen{started: 1, audited: 1, logged: 1}) {
		t.Errorf("session whose start records got through: %+v; want one started event, one audit entry, one session log entry", c)
	}
}

// streamTypes counts the entries of a Redis stream of events or audit
// entries by type.
func streamTypes(t *testing.T, rs *redistest.Server, stream string) map[string]int {
	t.Helper()
	entries, err := rs.Client().XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range entries {
		typ, _ := e.Values["type"].(string)
		out[typ]++
	}
	return out
}
