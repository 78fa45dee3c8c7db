package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/api"
)

// Every signed-in caller has a budget of management writes: a burst, then
// the rate. Over it, 429 rate_limited with Retry-After, before the body is
// read; reads and other callers are not held back. Time is the test clock.
func TestWriteRateLimit(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.seed()
	rogue := e.as("rogue")
	write := func(token string) response {
		return e.do("POST", "/deputy/v1/impersonation/sessions", token, map[string]any{"customer_id": "c42"})
	}
	for i := range api.DefaultWriteBurst {
		if r := write(rogue); r.Status == 429 {
			t.Fatalf("write %d of the burst refused: %s", i+1, r.Raw)
		}
	}
	t.Run("over the burst", func(t *testing.T) {
		// A body that does not parse: refused for the rate, not the body.
		r := e.do("POST", "/deputy/v1/impersonation/sessions", rogue, `{"customer_id":`)
		if r.Status != 429 || r.errCode() != "rate_limited" || !strings.Contains(r.errMsg(), "retry in 1 s") {
			t.Fatalf("got %d %s", r.Status, r.Raw)
		}
		if got := r.Header.Get("Retry-After"); got != "1" {
			t.Fatalf("Retry-After = %q", got)
		}
		if r := e.do("PUT", "/deputy/v1/customers/c42", rogue, map[string]any{"name": "X"}); r.Status != 429 {
			t.Fatalf("PUT: %d %s", r.Status, r.Raw)
		}
		// A write that narrows access is left to policy, which refuses
		// this caller (see TestNarrowingWritesPastTheWriteBudget).
		if r := e.do("DELETE", "/deputy/v1/customers/c42", rogue, nil); r.Status != 403 {
			t.Fatalf("DELETE: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("reads go on", func(t *testing.T) {
		if r := e.do("GET", "/deputy/v1/impersonation/sessions", rogue, nil); r.Status == 429 {
			t.Fatalf("read refused: %s", r.Raw)
		}
	})
	t.Run("other callers go on", func(t *testing.T) {
		if r := write(e.agent()); r.Status != 201 {
			t.Fatalf("agent's start: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("the rate refills", func(t *testing.T) {
		e.clock.Advance(time.Second)
		for i := range int(api.DefaultWriteRate) {
			if r := write(rogue); r.Status == 429 {
				t.Fatalf("write %d after a second refused: %s", i+1, r.Raw)
			}
		}
		if r := write(rogue); r.Status != 429 {
			t.Fatalf("write beyond the rate: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("unauthenticated callers are refused first", func(t *testing.T) {
		if r := write(""); r.Status != 401 {
			t.Fatalf("got %d %s", r.Status, r.Raw)
		}
	})
}
