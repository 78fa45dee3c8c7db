package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/identity"
)

// Text that ends up in the impersonation.started event, which the host's
// mailer turns into the email telling a customer someone acts as them,
// carries no control characters: a reason, ticket or customer name with
// CR/LF (mail header injection) or ESC is refused naming the field, and a
// staff token's name claim, which Deputy cannot refuse, reaches the event
// and the session log without them.
func TestEventTextHasNoControlCharacters(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.handler = api.New(api.WithVerifier(e.idv), api.WithEngine(e.engine), api.WithClock(e.clock.Now),
			api.WithRoutes(api.NewImpersonation(e.svc), api.NewStreams(e.store)))
		e.seed()
		mailer := e.as("mail", "mailer")

		for _, tc := range []struct {
			name, field string
			body        map[string]any
		}{
			{"reason CRLF", "reason", map[string]any{"customer_id": "c42", "reason": "help\r\nBcc: victim@evil.example\r\n\r\n<a href=x>Click</a>"}},
			{"reason ESC", "reason", map[string]any{"customer_id": "c42", "reason": "help\x1b[2J"}},
			{"reason C1 CSI", "reason", map[string]any{"customer_id": "c42", "reason": "help\u009b2J"}},
			{"reason DEL", "reason", map[string]any{"customer_id": "c42", "reason": "help\x7f"}},
			// Trojan Source: "\u202e" makes the rest of the line read
			// right to left in the mail and the session log.
			{"reason bidi override", "reason", map[string]any{"customer_id": "c42", "reason": "refund approved \u202edesrever ton"}},
			{"reason bidi isolate", "reason", map[string]any{"customer_id": "c42", "reason": "help \u2067x\u2069"}},
			{"ticket bidi embedding", "ticket", map[string]any{"customer_id": "c42", "ticket": "T-1\u202b"}},
			{"ticket CRLF", "ticket", map[string]any{"customer_id": "c42", "ticket": "T-1\r\nX-Injected: 1"}},
			{"ticket space", "ticket", map[string]any{"customer_id": "c42", "ticket": "T-1 X"}},
			{"ticket tab", "ticket", map[string]any{"customer_id": "c42", "ticket": "T-1\tX"}},
			// A filler prints as nothing, as a space does.
			{"ticket hangul filler", "ticket", map[string]any{"customer_id": "c42", "ticket": "\u3164"}},
			{"ticket with a filler", "ticket", map[string]any{"customer_id": "c42", "ticket": "T-1\u3164"}},
			{"customer_id ESC", "customer_id", map[string]any{"customer_id": "c42\x1b"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.must(e.start(e.agent(), tc.body), 400)
				if r.errField() != tc.field {
					t.Fatalf("field = %q, want %q: %s", r.errField(), tc.field, r.Raw)
				}
			})
		}
		for _, tc := range []struct {
			name, field string
			body        map[string]any
		}{
			{"name CRLF", "name", map[string]any{"name": "Cy\r\nBcc: all@evil.example"}},
			{"name ESC", "name", map[string]any{"name": "Cy\x1b]0;t\a"}},
			{"name bidi override", "name", map[string]any{"name": "Cy \u202enimdA"}},
			{"org bidi isolate", "org", map[string]any{"name": "Cy", "org": "o\u20661"}},
			{"org LF", "org", map[string]any{"name": "Cy", "org": "o\n1"}},
			{"default_store_view CR", "default_store_view", map[string]any{"name": "Cy", "default_store_view": "d\r"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.must(e.do("PUT", "/deputy/v1/customers/c43", e.admin(), tc.body), 400)
				if r.errField() != tc.field {
					t.Fatalf("field = %q, want %q: %s", r.errField(), tc.field, r.Raw)
				}
			})
		}
		evs := e.must(e.do("GET", "/deputy/v1/events?customer=c42&type=impersonation.started", mailer, nil), 200)
		if items := evs.Body["items"].([]any); len(items) != 0 {
			t.Fatalf("refused starts left events: %s", evs.Raw)
		}

		// Ticket references as support tools write them, and a tab in a
		// reason, pass; a hostile name claim is stripped, not refused.
		tok, err := e.dev.Mint(identity.DevClaims{Subject: "sam", Roles: []string{"support_agent"}, TTL: time.Hour, IssuedAt: e.clock.Now(),
			Name: "Sam\r\nBcc: all@evil.example\r\n<img src=x onerror=alert(1)>\x1b[2J\u009b\u202e\u2066"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ticket := range []string{"JIRA-123", "#4521", "https://support.example/t/4521?x=1"} {
			e.must(e.start(tok, map[string]any{"customer_id": "c42", "reason": "order\tlookup", "ticket": ticket}), 201)
		}
		evs = e.must(e.do("GET", "/deputy/v1/events?customer=c42&type=impersonation.started", mailer, nil), 200)
		items := evs.Body["items"].([]any)
		if len(items) != 3 {
			t.Fatalf("events = %s", evs.Raw)
		}
		const wantName = "SamBcc: all@evil.example<img src=x onerror=alert(1)>[2J"
		for _, it := range items {
			data := it.(map[string]any)["data"].(map[string]any)
			if data["actor_name"] != wantName || data["reason"] != "order\tlookup" {
				t.Fatalf("event data = %v", data)
			}
		}
		log := e.must(e.do("GET", "/deputy/v1/impersonation/log?customer_id=c42", e.lead(), nil), 200)
		sessions := log.Body["items"].([]any)
		if len(sessions) != 3 {
			t.Fatalf("session log = %s", log.Raw)
		}
		for _, s := range sessions {
			if s := s.(map[string]any); s["actor_name"] != wantName || !strings.HasPrefix(s["reason"].(string), "order\t") {
				t.Fatalf("session = %v", s)
			}
		}
	})
}

// A reason or customer name made only of characters that print as
// nothing (white space, format characters, fillers) is stored as none,
// so the session log, the audit trail and the event the mailer reads
// never show a reason, or a name, that reads as empty but is not.
func TestInvisibleTextIsNone(t *testing.T) {
	eachStore(t, func(t *testing.T, mk storeFactory) {
		e := newEnv(t, mk)
		e.handler = api.New(api.WithVerifier(e.idv), api.WithEngine(e.engine), api.WithClock(e.clock.Now),
			api.WithRoutes(api.NewImpersonation(e.svc), api.NewStreams(e.store)))
		e.seed()
		e.must(e.do("PUT", "/deputy/v1/customers/c43", e.admin(), map[string]any{"name": "\u3164\u200b", "default_store_view": "default"}), 200)
		cs, err := e.store.GetCustomerState(context.Background(), "c43")
		if err != nil || cs.Customer == nil || cs.Customer.Name != "" {
			t.Fatalf("stored profile = %+v, %v; want no name", cs.Customer, err)
		}
		e.must(e.start(e.agent(), map[string]any{"customer_id": "c42", "reason": "\u200b\u200c\u200d\u00ad", "ticket": "SR-1"}), 201)
		mailer := e.as("mail", "mailer")
		evs := e.must(e.do("GET", "/deputy/v1/events?customer=c42&type=impersonation.started", mailer, nil), 200)
		items := evs.Body["items"].([]any)
		if len(items) != 1 {
			t.Fatalf("events = %s", evs.Raw)
		}
		if data := items[0].(map[string]any)["data"].(map[string]any); data["reason"] != nil || data["ticket"] != "SR-1" {
			t.Fatalf("event data = %v", data)
		}
		log := e.must(e.do("GET", "/deputy/v1/impersonation/log?customer_id=c42", e.lead(), nil), 200)
		sessions := log.Body["items"].([]any)
		if len(sessions) != 1 || sessions[0].(map[string]any)["reason"] != nil {
			t.Fatalf("session log = %s", log.Raw)
		}
	})
}
