package api_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// A write that carries a precondition is refused with 412, never applied
// as if it had none: Deputy's management resources carry no entity tags,
// so no precondition on them can be evaluated, and a caller who sends one
// (a sync job guarding a profile an administrator just protected) relies
// on it. RFC 9110 §13.1.1: a precondition the server cannot show true is
// false. The profile stays as the administrator left it, and the account
// stays out of an agent's reach. Reads ignore If-None-Match, as they may.
func TestConditionalWritesRefused(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.seed()
	e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{"default_store_view": "default", "protected": true}), 200)

	send := func(method, path, token, body string, headers map[string]string) (int, string) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		e.handler.ServeHTTP(w, req)
		var b struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(w.Body.Bytes(), &b)
		return w.Code, b.Error.Code
	}
	unprotect := `{"default_store_view":"default"}`
	for _, h := range []map[string]string{
		{"If-Match": `"stale-version"`},
		{"If-Match": `*`},
		{"if-match": `W/"1"`},
		{"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"},
		{"If-None-Match": `*`},
		{"If-None-Match": `"x"`},
	} {
		for _, method := range []string{"PUT", "DELETE"} {
			body := unprotect
			if method == "DELETE" {
				body = ""
			}
			if status, code := send(method, "/deputy/v1/customers/c42", e.admin(), body, h); status != 412 || code != "precondition_failed" {
				t.Fatalf("%s with %v: %d %q, want 412 precondition_failed", method, h, status, code)
			}
		}
	}
	// Nothing was applied: the account is still protected.
	if r := e.start(e.agent(), nil); r.Status != 403 || r.errMsg() != "customer_protected" {
		t.Fatalf("start after refused writes: %d %s", r.Status, r.Raw)
	}
	// Without a precondition the same write goes through.
	if status, _ := send("PUT", "/deputy/v1/customers/c42", e.admin(), unprotect, nil); status != 200 {
		t.Fatalf("unconditional PUT: %d", status)
	}
	// A read with a precondition is answered as without one.
	if status, _ := send("GET", "/deputy/v1/customers/c42/consent", e.admin(), "", map[string]string{"If-None-Match": `"x"`}); status == 412 {
		t.Fatalf("a read was refused for its If-None-Match")
	}
	// A caller without credentials learns nothing more than 401.
	req := httptest.NewRequest("PUT", "/deputy/v1/customers/c42", strings.NewReader(unprotect))
	req.Header.Set("If-Match", `"x"`)
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, req)
	if w.Code != 401 {
		t.Fatalf("anonymous conditional PUT: %d, want 401", w.Code)
	}
}
