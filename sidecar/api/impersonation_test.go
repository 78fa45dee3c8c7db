package api_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
)

// stores are the store implementations every lifecycle test runs on.
var stores = map[string]storeFactory{
	"memory": memoryStore,
	"redis":  redisStore,
}

func eachStore(t *testing.T, f func(t *testing.T, mk storeFactory)) {
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) { f(t, mk) })
	}
}

// The README's walk-through: consent, start, redeem, storefront requests as
// the customer, end.
func TestLoginAsCustomerLifecycle(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()

		st := e.must(e.start(e.agent(), map[string]any{"customer_id": "c42", "reason": "cart issue", "ticket": "SR-7", "redirect": "/checkout/cart"}), 201)
		id := st.str("session", "id")
		if st.str("session", "state") != "live" || st.str("session", "store_view") != "default" || st.str("session", "customer_name") != "Chloé Martin" {
			t.Fatalf("session = %s", st.Raw)
		}
		if strings.Contains(st.Raw, "token_hash") {
			t.Fatal("session view leaks the token hash")
		}
		link := st.str("redeem_url")
		if !strings.HasPrefix(link, "/deputy/v1/impersonation/redeem?") {
			t.Fatalf("redeem_url = %q", link)
		}

		r, cookie := e.redeem(link)
		if r.Status != http.StatusFound || r.Header.Get("Location") != "/checkout/cart" {
			t.Fatalf("redeem: %d Location=%q", r.Status, r.Header.Get("Location"))
		}
		set := r.Header.Get("Set-Cookie")
		for _, attr := range []string{"HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=3600"} {
			if !strings.Contains(set, attr) {
				t.Errorf("cookie %q lacks %s", set, attr)
			}
		}
		if len(cookie) < 43 {
			t.Fatalf("session token %q is shorter than 256 bits", cookie)
		}

		d, err := e.check(cookie)
		if err != nil {
			t.Fatal(err)
		}
		want := sidecar.Delegation{Mode: "impersonation", ID: id, Actor: "alice", ActorName: "Alice", Subject: "c42",
			SubjectName: "Chloé Martin", StoreView: "default", Reason: "cart issue", Ticket: "SR-7"}
		got := *d
		got.ExpiresAt = time.Time{}
		if got.Mode != want.Mode || got.ID != want.ID || got.Actor != want.Actor || got.Subject != want.Subject ||
			got.SubjectName != want.SubjectName || got.StoreView != want.StoreView || got.Reason != want.Reason || got.Ticket != want.Ticket || got.ActorName != want.ActorName {
			t.Fatalf("delegation = %+v, want %+v", got, want)
		}

		list := e.must(e.do("GET", "/deputy/v1/impersonation/sessions", e.agent(), nil), 200)
		if items := list.Body["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != id {
			t.Fatalf("own live sessions = %s", list.Raw)
		}

		e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.agent(), nil), 200)
		again := e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.agent(), nil), 200)
		if again.str("state") != "ended" || again.str("ended_by") != "alice" {
			t.Fatalf("second DELETE = %s", again.Raw)
		}
		e.denied(cookie, "session_ended")

		log := e.must(e.do("GET", "/deputy/v1/impersonation/log?actor=alice", e.lead(), nil), 200)
		items := log.Body["items"].([]any)
		if len(items) != 1 {
			t.Fatalf("log = %s", log.Raw)
		}
		entry := items[0].(map[string]any)
		if entry["state"] != "ended" || entry["reason"] != "cart issue" || entry["ticket"] != "SR-7" || entry["ended_by"] != "alice" {
			t.Fatalf("log entry = %v", entry)
		}

		evs, _, err := e.store.ReadEvents(context.Background(), sidecar.StreamFilter{Customer: "c42"})
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, ev := range evs {
			types = append(types, ev.Type)
		}
		if strings.Join(types, ",") != "consent.changed,impersonation.started,impersonation.ended" {
			t.Fatalf("events = %v", types)
		}
		audit, _, err := e.store.ReadAudit(context.Background(), sidecar.StreamFilter{Actor: "alice"})
		if err != nil || len(audit) == 0 {
			t.Fatalf("audit for alice: %v, %v", audit, err)
		}
	})
}

// Every way a session stops working, and the reason policy sees.
func TestSessionEnds(t *testing.T) {
	cases := []struct {
		name   string
		act    func(e *env, id string)
		reason string
	}{
		{"ended by staff", func(e *env, id string) {
			e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.agent(), nil), 200)
		}, "session_ended"},
		{"revoked by an admin", func(e *env, id string) {
			e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.admin(), nil), 200)
		}, "session_revoked"},
		{"ended by the customer", func(e *env, id string) {
			e.must(e.do("DELETE", "/deputy/v1/impersonation/sessions/"+id, e.customer(), nil), 204)
		}, "session_revoked"},
		{"replaced by a new session", func(e *env, _ string) {
			e.must(e.start(e.agent(), nil), 201)
		}, "session_replaced"},
		{"consent withdrawn", func(e *env, _ string) {
			r := e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": false}), 200)
			if r.Body["ended_sessions"] != float64(1) {
				t.Errorf("ended_sessions = %v", r.Body["ended_sessions"])
			}
		}, "session_consent_withdrawn"},
		{"consent withdrawn by staff", func(e *env, _ string) {
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.lead(), map[string]any{"allowed": false}), 200)
		}, "session_consent_withdrawn"},
		{"max session", func(e *env, _ string) { e.clock.Advance(time.Hour) }, "session_expired"},
		{"idle", func(e *env, _ string) { e.clock.Advance(15 * time.Minute) }, "session_idle"},
	}
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				id, cookie := e.live(e.agent())
				if _, err := e.check(cookie); err != nil { // now cached
					t.Fatal(err)
				}
				tc.act(e, id)
				e.denied(cookie, tc.reason)
			})
		}
	})
}

// Activity keeps a session alive past the idle timeout, up to max_session;
// the staff member's own token expiry bounds it from the start.
func TestSessionLifetime(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		t.Run("activity keeps it alive", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			_, cookie := e.live(e.agent())
			for range 5 { // 50 minutes of activity, every 10 minutes
				e.clock.Advance(10 * time.Minute)
				if _, err := e.check(cookie); err != nil {
					t.Fatal(err)
				}
			}
			e.clock.Advance(10 * time.Minute)
			if _, err := e.check(cookie); sidecar.ErrorMessage(err) != "session_expired" {
				t.Fatalf("after an hour: %v", err)
			}
		})
		t.Run("bounded by the staff token", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			short := e.token("bob", 10*time.Minute, "support_agent")
			st := e.must(e.start(short, nil), 201)
			exp, _ := time.Parse(time.RFC3339, st.str("session", "expires_at"))
			if d := exp.Sub(e.clock.Now()); d > 10*time.Minute+time.Second {
				t.Fatalf("session lasts %v, longer than the staff token", d)
			}
		})
		t.Run("bounded by the consent's expiry", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			until := e.clock.Now().Add(20 * time.Minute).UTC().Truncate(time.Second)
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(),
				map[string]any{"allowed": true, "expires_at": until.Format(time.RFC3339)}), 200)
			_, cookie := e.live(e.agent())
			for _, step := range []time.Duration{10 * time.Minute, 9 * time.Minute} { // inside the idle timeout
				e.clock.Advance(step)
				if _, err := e.check(cookie); err != nil {
					t.Fatalf("before the consent lapses: %v", err)
				}
			}
			e.clock.Advance(time.Minute)
			e.denied(cookie, "session_consent_expired")
		})
		t.Run("switches from policy data", func(t *testing.T) {
			e := newEnv(t, mk, withSwitch("max_session", "20m"), withSwitch("idle_timeout", "5m"))
			e.seed()
			st := e.must(e.start(e.agent(), nil), 201)
			if st.str("session", "idle_timeout") != "5m0s" {
				t.Fatalf("idle_timeout = %q", st.str("session", "idle_timeout"))
			}
			exp, _ := time.Parse(time.RFC3339, st.str("session", "expires_at"))
			if exp.Sub(e.clock.Now()) != 20*time.Minute {
				t.Fatalf("expires in %v", exp.Sub(e.clock.Now()))
			}
		})
		t.Run("several sessions when the switch allows", func(t *testing.T) {
			e := newEnv(t, mk, withSwitch("one_session_per_staff", false))
			e.seed()
			_, first := e.live(e.agent())
			e.live(e.agent())
			if _, err := e.check(first); err != nil {
				t.Fatalf("first session: %v", err)
			}
		})
	})
}

func TestRedeem(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		cases := []struct {
			name    string
			link    func(e *env, link string) string
			status  int
			field   string
			message string
		}{
			{"reused", func(e *env, link string) string { e.redeem(link); return link }, 401, "", "redeem code unknown, already used or expired"},
			{"late", func(e *env, link string) string { e.clock.Advance(31 * time.Second); return link }, 401, "", "redeem code unknown, already used or expired"},
			{"unknown", func(e *env, _ string) string { return "/deputy/v1/impersonation/redeem?code=AAAA" }, 401, "", "redeem code unknown, already used or expired"},
			{"missing code", func(e *env, _ string) string { return "/deputy/v1/impersonation/redeem" }, 400, "code", "required"},
			{"open redirect", func(e *env, link string) string { return link + "&redirect=" + url.QueryEscape("//evil.example") }, 400, "redirect", ""},
			{"foreign host", func(e *env, link string) string {
				return link + "&redirect=" + url.QueryEscape("https://evil.example/")
			}, 400, "redirect", ""},
			{"javascript", func(e *env, link string) string { return link + "&redirect=" + url.QueryEscape("javascript:alert(1)") }, 400, "redirect", ""},
			{"session ended before redeem", func(e *env, link string) string {
				e.must(e.start(e.agent(), nil), 201) // replaces it
				return link
			}, 401, "", "session_replaced"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk)
				e.seed()
				link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
				r, cookie := e.redeem(tc.link(e, link))
				if r.Status != tc.status || r.errField() != tc.field || cookie != "" {
					t.Fatalf("got %d %s cookie=%q, want %d field %q", r.Status, r.Raw, cookie, tc.status, tc.field)
				}
				if tc.message != "" && r.errMsg() != tc.message {
					t.Fatalf("message %q, want %q", r.errMsg(), tc.message)
				}
			})
		}
		// With storefront_hosts set, a link opened on another host is
		// refused before its code is spent: no cookie, and the link still
		// works on the storefront.
		t.Run("not a storefront host", func(t *testing.T) {
			e := newEnv(t, mk, withStorefrontHosts("shop.example"))
			e.seed()
			link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
			// A host no browser sends, which a reader cutting at its
			// last ":" reads as shop.example and Rails (the last
			// comma-separated value) as evil.example, is refused too.
			for _, host := range []string{"evil.example", "shop.example.evil.example", "evil.example:443",
				"shop.example:1,evil.example", "shop.example:,evil.example", "shop.example:80 evil.example", "shop.example:1;evil.example"} {
				e.host = host
				r, cookie := e.redeem(link)
				if r.Status != 400 || r.errField() != "host" || cookie != "" {
					t.Fatalf("redeem on %s: %d %s cookie=%q, want 400 field host", host, r.Status, r.Raw, cookie)
				}
			}
			e.host = "SHOP.example:8443"
			r, cookie := e.redeem(link)
			if r.Status != 302 || cookie == "" {
				t.Fatalf("redeem on the storefront after refusals: %d %s", r.Status, r.Raw)
			}
		})
		// Without storefront_hosts the session is bound to the host the
		// link is opened on: one in a form no browser sends is refused
		// before the code is spent, never bound as another host.
		t.Run("host in a form no browser sends", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
			for _, host := range []string{"example.com:1,evil.example", "example.com:", "example.com:80:81", "example.com.."} {
				e.host = host
				r, cookie := e.redeem(link)
				if r.Status != 400 || r.errField() != "host" || cookie != "" {
					t.Fatalf("redeem on %q: %d %s cookie=%q, want 400 field host", host, r.Status, r.Raw, cookie)
				}
			}
			e.host = "Example.COM.:8443"
			r, cookie := e.redeem(link)
			if r.Status != 302 || cookie == "" {
				t.Fatalf("redeem after refusals: %d %s", r.Status, r.Raw)
			}
			if d, err := e.check(cookie); err != nil || d == nil {
				t.Fatalf("the session redeemed on Example.COM.:8443 is not honoured on example.com: %v %v", d, err)
			}
		})
		t.Run("allowed host", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			link := e.must(e.start(e.agent(), nil), 201).str("redeem_url")
			r, cookie := e.redeem(link + "&redirect=" + url.QueryEscape("https://shop.example.com/account"))
			if r.Status != 302 || cookie == "" || r.Header.Get("Location") != "https://shop.example.com/account" {
				t.Fatalf("got %d %v", r.Status, r.Header)
			}
		})
	})
}

// Policy refusals when starting, each with its reason and status.
func TestStartRules(t *testing.T) {
	cases := []struct {
		name   string
		opts   []envOption
		token  func(e *env) string
		body   map[string]any
		status int
		reason string
		field  string
	}{
		{"no permission", nil, (*env).customer, map[string]any{"customer_id": "c42"}, 403, "missing_permission", ""},
		{"unknown customer", nil, (*env).agent, map[string]any{"customer_id": "nobody"}, 404, "customer_not_found", "customer_id"},
		{"protected account", nil, (*env).agent, map[string]any{"customer_id": "s1"}, 403, "customer_protected", ""},
		{"no consent", nil, (*env).agent, map[string]any{"customer_id": "c7"}, 403, "consent_required", ""},
		{"account holding a protected role", nil, (*env).agent, map[string]any{"customer_id": "c8"}, 403, "customer_protected", ""},
		{"reason required", []envOption{withSwitch("require_reason", true)}, (*env).agent, map[string]any{"customer_id": "c42"}, 400, "reason_required", "reason"},
		{"store view required", []envOption{withSwitch("store_view_selection", "manual")}, (*env).agent, map[string]any{"customer_id": "c42"}, 400, "store_view_required", "store_view"},
		{"store view not the customer's", []envOption{withSwitch("store_view_selection", "manual")}, (*env).agent, map[string]any{"customer_id": "c42", "store_view": "de"}, 400, "store_view_not_allowed", "store_view"},
		{"store view chosen without manual selection", nil, (*env).agent, map[string]any{"customer_id": "c42", "store_view": "fr"}, 400, "store_view_not_allowed", "store_view"},
		{"feature off", []envOption{withSwitch("enabled", false)}, (*env).agent, map[string]any{"customer_id": "c42"}, 403, "impersonation_disabled", ""},
		{"missing customer", nil, (*env).agent, map[string]any{"reason": "x"}, 400, "required", "customer_id"},
	}
	eachStore(t, func(t *testing.T, mk storeFactory) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := newEnv(t, mk, tc.opts...)
				e.seed()
				e.must(e.do("PUT", "/deputy/v1/customers/c7", e.admin(), map[string]any{"default_store_view": "default"}), 200)
				// c8 is an admin's own storefront account, synced with its roles.
				e.must(e.do("PUT", "/deputy/v1/customers/c8", e.admin(), map[string]any{"default_store_view": "default", "roles": []string{"customer", "admin"}}), 200)
				e.must(e.do("PUT", "/deputy/v1/customers/c8/consent", e.lead(), map[string]any{"allowed": true}), 200)
				r := e.start(tc.token(e), tc.body)
				if r.Status != tc.status || r.errMsg() != tc.reason || r.errField() != tc.field {
					t.Fatalf("got %d %s; want %d %s field %q", r.Status, r.Raw, tc.status, tc.reason, tc.field)
				}
				list, _, err := e.store.ListSessions(context.Background(), sidecar.SessionFilter{})
				if err != nil || len(list) != 0 {
					t.Fatalf("a refused start left sessions: %v %v", list, err)
				}
			})
		}
		t.Run("account of a known staff member", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			// alice's own storefront account, with consent and no staff role.
			e.must(e.do("PUT", "/deputy/v1/customers/alice", e.admin(), map[string]any{"default_store_view": "default"}), 200)
			e.must(e.do("PUT", "/deputy/v1/customers/alice/consent", e.lead(), map[string]any{"allowed": true}), 200)
			e.must(e.start(e.lead(), map[string]any{"customer_id": "alice"}), 201) // not yet known as staff
			// Once alice has started a session she is known as staff.
			e.must(e.start(e.agent(), map[string]any{"customer_id": "c42"}), 201)
			r := e.start(e.lead(), map[string]any{"customer_id": "alice"})
			if r.Status != 403 || r.errMsg() != "customer_protected" {
				t.Fatalf("start on a known staff member's account: %d %s", r.Status, r.Raw)
			}
		})
		// Another spelling of a protected account's id is that account to
		// an upstream that reads ids without regard to case: its own
		// profile, unprotected and with consent, does not open it.
		t.Run("another spelling of a protected account", func(t *testing.T) {
			e := newEnv(t, mk)
			e.seed()
			e.must(e.do("PUT", "/deputy/v1/customers/c8", e.admin(), map[string]any{"default_store_view": "default", "roles": []string{"customer", "admin"}}), 200)
			e.must(e.do("PUT", "/deputy/v1/customers/alice", e.admin(), map[string]any{"default_store_view": "default"}), 200)
			e.must(e.start(e.agent(), map[string]any{"customer_id": "c42"}), 201) // alice is now known as staff
			// s1: profile protected; c8: a protected role; alice: staff.
			for _, id := range []string{"S1", "C8", "Alice"} {
				e.must(e.do("PUT", "/deputy/v1/customers/"+id, e.admin(), map[string]any{"default_store_view": "default"}), 200)
				e.must(e.do("PUT", "/deputy/v1/customers/"+id+"/consent", e.lead(), map[string]any{"allowed": true}), 200)
				r := e.start(e.lead(), map[string]any{"customer_id": id})
				if r.Status != 403 || r.errMsg() != "customer_protected" {
					t.Fatalf("start on %s: %d %s", id, r.Status, r.Raw)
				}
			}
			e.must(e.do("PUT", "/deputy/v1/customers/C42", e.admin(), map[string]any{"default_store_view": "default"}), 200)
			e.must(e.do("PUT", "/deputy/v1/customers/C42/consent", e.lead(), map[string]any{"allowed": true}), 200)
			e.must(e.start(e.lead(), map[string]any{"customer_id": "C42"}), 201) // c42 is not protected
		})
		// A reason no reader can see is no reason: refused as an empty one.
		t.Run("reason of invisible characters", func(t *testing.T) {
			e := newEnv(t, mk, withSwitch("require_reason", true))
			e.seed()
			for _, reason := range []string{"", "   ", "\u00a0\u3000", "\u200b", "\u2060", "\ufeff", "\u00ad", "\u3164", "\u200b\u200c\u200d"} {
				r := e.start(e.agent(), map[string]any{"customer_id": "c42", "reason": reason})
				if r.Status != 400 || r.errMsg() != "reason_required" || r.errField() != "reason" {
					t.Fatalf("reason %q: got %d %s; want 400 reason_required", reason, r.Status, r.Raw)
				}
			}
			list, _, err := e.store.ListSessions(context.Background(), sidecar.SessionFilter{})
			if err != nil || len(list) != 0 {
				t.Fatalf("a refused start left sessions: %v %v", list, err)
			}
		})
		t.Run("manual store view", func(t *testing.T) {
			e := newEnv(t, mk, withSwitch("store_view_selection", "manual"), withSwitch("require_reason", true))
			e.seed()
			r := e.must(e.start(e.agent(), map[string]any{"customer_id": "c42", "store_view": "fr", "reason": "help with order"}), 201)
			if r.str("session", "store_view") != "fr" {
				t.Fatalf("store view = %q", r.str("session", "store_view"))
			}
		})
	})
}

// Who may read what.
func TestPermissions(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		id, _ := e.live(e.agent())
		cases := []struct {
			name, method, path string
			token              func(e *env) string
			body               any
			status             int
		}{
			{"agent reads the log", "GET", "/deputy/v1/impersonation/log", (*env).agent, nil, 403},
			{"lead reads the log", "GET", "/deputy/v1/impersonation/log?customer_id=c42&from=2000-01-01T00:00:00Z", (*env).lead, nil, 200},
			{"agent lists everyone's sessions", "GET", "/deputy/v1/impersonation/sessions?all=true", (*env).agent, nil, 403},
			{"lead lists everyone's sessions", "GET", "/deputy/v1/impersonation/sessions?all=true", (*env).lead, nil, 200},
			{"other agent reads the session", "GET", "/deputy/v1/impersonation/sessions/" + id, func(e *env) string { return e.as("bob", "support_agent") }, nil, 404},
			{"owner reads the session", "GET", "/deputy/v1/impersonation/sessions/" + id, (*env).agent, nil, 200},
			{"other agent ends the session", "DELETE", "/deputy/v1/impersonation/sessions/" + id, func(e *env) string { return e.as("bob", "support_agent") }, nil, 404},
			{"customer reads the session", "GET", "/deputy/v1/impersonation/sessions/" + id, (*env).customer, nil, 403},
			{"lead ends the session", "DELETE", "/deputy/v1/impersonation/sessions/" + id, (*env).lead, nil, 403},
			{"unknown session", "DELETE", "/deputy/v1/impersonation/sessions/imp_nope", (*env).agent, nil, 404},
			{"customer sets another's consent", "PUT", "/deputy/v1/customers/c7/consent", (*env).customer, map[string]any{"allowed": true}, 403},
			{"agent sets consent for a customer", "PUT", "/deputy/v1/customers/c7/consent", (*env).agent, map[string]any{"allowed": true}, 403},
			{"lead sets consent for a customer", "PUT", "/deputy/v1/customers/c7/consent", (*env).lead, map[string]any{"allowed": true}, 200},
			{"customer reads own consent", "GET", "/deputy/v1/customers/c42/consent", (*env).customer, nil, 200},
			{"customer reads consent history", "GET", "/deputy/v1/customers/c42/consent/history", (*env).customer, nil, 200},
			// Who set a customer's consent, and when, is the log's, not every
			// agent's: login_as_customer reads the consent in force only.
			{"agent reads consent history", "GET", "/deputy/v1/customers/c42/consent/history", (*env).agent, nil, 403},
			{"lead reads consent history", "GET", "/deputy/v1/customers/c42/consent/history", (*env).lead, nil, 200},
			{"auditor reads consent history", "GET", "/deputy/v1/customers/c42/consent/history", func(e *env) string { return e.as("aud", "auditor") }, nil, 200},
			{"customer reads another's consent history", "GET", "/deputy/v1/customers/c7/consent/history", (*env).customer, nil, 403},
			{"agent syncs a customer", "PUT", "/deputy/v1/customers/c9", (*env).agent, map[string]any{"name": "x"}, 403},
			{"no token", "GET", "/deputy/v1/impersonation/sessions", func(*env) string { return "" }, nil, 401},
			{"garbage token", "GET", "/deputy/v1/impersonation/sessions", func(*env) string { return "not.a.jwt" }, nil, 401},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(tc.method, tc.path, tc.token(e), tc.body)
				if r.Status != tc.status {
					t.Fatalf("got %d %s, want %d", r.Status, r.Raw, tc.status)
				}
				if r.Status >= 400 && r.errCode() == "" {
					t.Fatalf("error without a code: %s", r.Raw)
				}
			})
		}
	})
}

func TestConsent(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		t.Run("expiry", func(t *testing.T) {
			until := e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true, "expires_at": until}), 200)
			if r := e.must(e.do("GET", "/deputy/v1/customers/c42/consent", e.agent(), nil), 200); r.Body["allowed"] != true {
				t.Fatalf("consent = %s", r.Raw)
			}
			e.clock.Advance(time.Hour)
			if r := e.must(e.do("GET", "/deputy/v1/customers/c42/consent", e.agent(), nil), 200); r.Body["allowed"] != false {
				t.Fatalf("expired consent = %s", r.Raw)
			}
			if r := e.start(e.agent(), nil); r.errMsg() != "consent_required" {
				t.Fatalf("start on expired consent: %s", r.Raw)
			}
		})
		t.Run("expiry in the past", func(t *testing.T) {
			r := e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true, "expires_at": "2001-01-01T00:00:00Z"})
			if r.Status != 400 || r.errField() != "expires_at" {
				t.Fatalf("got %s", r.Raw)
			}
		})
		t.Run("history kept", func(t *testing.T) {
			r := e.must(e.do("GET", "/deputy/v1/customers/c42/consent/history?limit=1", e.customer(), nil), 200)
			if len(r.Body["items"].([]any)) != 1 || r.str("next_cursor") == "" {
				t.Fatalf("history page = %s", r.Raw)
			}
			r2 := e.must(e.do("GET", "/deputy/v1/customers/c42/consent/history?limit=10&cursor="+url.QueryEscape(r.str("next_cursor")), e.customer(), nil), 200)
			if len(r2.Body["items"].([]any)) == 0 {
				t.Fatalf("second page empty: %s", r2.Raw)
			}
		})
	})
}

// Who set a customer's consent, and when, is the consent history's
// (consent.history), which staff holding only login_as_customer may not
// read: the consent they read answers allowed and expires_at alone.
func TestConsentSetterOnlyWithHistory(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.lead(), map[string]any{"allowed": false}), 200)
		cases := []struct {
			name    string
			as      func(*env) string
			history bool
		}{
			{"agent", (*env).agent, false},
			{"lead", (*env).lead, true},
			{"customer", (*env).customer, true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r := e.must(e.do("GET", "/deputy/v1/customers/c42/consent", tc.as(e), nil), 200)
				if r.Body["allowed"] != false {
					t.Fatalf("consent = %s", r.Raw)
				}
				if h := e.do("GET", "/deputy/v1/customers/c42/consent/history", tc.as(e), nil); (h.Status == 200) != tc.history {
					t.Fatalf("history: %d %s", h.Status, h.Raw)
				}
				_, by := r.Body["set_by"]
				_, at := r.Body["set_at"]
				if by != tc.history || at != tc.history || (tc.history && r.str("set_by") != "lee") {
					t.Fatalf("history readable %v, consent read = %s", tc.history, r.Raw)
				}
			})
		}
	})
}

// A consent write that changes nothing (same allowed, same expiry) writes
// no event and no audit entry: repeating it cannot flood the streams and
// trim real entries away. It still answers with the current consent.
func TestConsentUnchangedRecordsNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.seed()
		ctx := context.Background()
		counts := func() (int, int) {
			t.Helper()
			evs, _, err := e.store.ReadEvents(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
			if err != nil {
				t.Fatal(err)
			}
			audit, _, err := e.store.ReadAudit(ctx, sidecar.StreamFilter{Page: sidecar.Page{Limit: 500}})
			if err != nil {
				t.Fatal(err)
			}
			return len(evs), len(audit)
		}
		until := e.clock.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		for _, tc := range []struct {
			name, customer string
			token          func(*env) string
			body           map[string]any
		}{
			{"consent given again", "c42", (*env).customer, map[string]any{"allowed": true}},
			{"never consented, withdrawn", "selfreg-2", func(e *env) string { return e.as("selfreg-2", "customer") }, map[string]any{"allowed": false}},
			{"same expiry again", "c42", (*env).customer, map[string]any{"allowed": true, "expires_at": until}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := "/deputy/v1/customers/" + tc.customer + "/consent"
				// The first write may change the consent; the repeats change nothing.
				first := e.must(e.do("PUT", path, tc.token(e), tc.body), 200)
				evs, audit := counts()
				for range 5 {
					r := e.must(e.do("PUT", path, tc.token(e), tc.body), 200)
					if r.Body["allowed"] != tc.body["allowed"] || r.str("set_at") != first.str("set_at") {
						t.Fatalf("repeat answered %s, first %s", r.Raw, first.Raw)
					}
				}
				if ev2, au2 := counts(); ev2 != evs || au2 != audit {
					t.Fatalf("repeats recorded %d events and %d audit entries", ev2-evs, au2-audit)
				}
			})
		}
		t.Run("a change still records", func(t *testing.T) {
			evs, audit := counts()
			e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": false}), 200)
			if ev2, au2 := counts(); ev2 != evs+1 || au2 != audit+1 {
				t.Fatalf("withdrawal recorded %d events and %d audit entries, want 1 and 1", ev2-evs, au2-audit)
			}
		})
	})
}
