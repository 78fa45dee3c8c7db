package api_test

import (
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
)

// Management API bodies that are not what the endpoint takes are refused
// with 400 (413 when too large) and the field named.
func TestStrictBodies(t *testing.T) {
	e := newEnv(t, memoryStore)
	e.seed()
	cases := []struct {
		name   string
		body   any
		status int
		field  string
	}{
		{"unknown field", `{"customer_id":"c42","customer":"c42"}`, 400, "customer"},
		{"wrong type", `{"customer_id":42}`, 400, "customer_id"},
		{"array for a string", `{"customer_id":["c42"]}`, 400, "customer_id"},
		{"malformed", `{"customer_id":`, 400, "body"},
		{"not JSON", `customer_id=c42`, 400, "body"},
		{"empty", ``, 400, "body"},
		{"null", `null`, 400, "customer_id"},
		{"trailing object", `{"customer_id":"c42"}{"customer_id":"c7"}`, 400, "body"},
		{"trailing garbage", `{"customer_id":"c42"} x`, 400, "body"},
		{"array instead of object", `[{"customer_id":"c42"}]`, 400, "body"},
		{"oversized", `{"customer_id":"c42","reason":"` + strings.Repeat("x", 5000) + `"}`, 413, "body"},
		{"reason too long for policy", `{"customer_id":"c42","reason":"` + strings.Repeat("x", 1001) + `"}`, 400, "reason"},
		{"NUL in reason", `{"customer_id":"c42","reason":"a\u0000b"}`, 400, "reason"},
		// encoding/json would store a stray byte as U+FFFD, another text.
		{"invalid UTF-8 in reason", "{\"customer_id\":\"c42\",\"reason\":\"caf\xe9\"}", 400, "reason"},
		{"invalid UTF-8 in the id", "{\"customer_id\":\"c4\xff2\"}", 400, "customer_id"},
		// It reads an escaped lone UTF-16 surrogate as U+FFFD too.
		{"lone surrogate in reason", `{"customer_id":"c42","reason":"caf\udfff"}`, 400, "reason"},
		{"lone surrogate in the id", `{"customer_id":"c4\ud8002"}`, 400, "customer_id"},
		// encoding/json keeps the last of a repeated key and matches keys
		// to fields in any case: a body must say one thing, as spelled.
		{"repeated field", `{"customer_id":"c42","customer_id":"c7"}`, 400, "customer_id"},
		{"repeated field, same value", `{"customer_id":"c42","reason":"a","reason":"a"}`, 400, "reason"},
		{"repeated field, escaped", `{"customer_id":"c42","customer\u005fid":"c7"}`, 400, "customer_id"},
		{"field in another case", `{"Customer_ID":"c42"}`, 400, "Customer_ID"},
		{"field in upper case after the right one", `{"customer_id":"c42","REASON":"x"}`, 400, "REASON"},
		{"field folded by Unicode", `{"customer_id":"c42","rea\u017fon":"x"}`, 400, "rea\u017fon"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/deputy/v1/impersonation/sessions", e.agent(), tc.body)
			if r.Status != tc.status || r.errField() != tc.field {
				t.Fatalf("got %d %s, want %d field %q", r.Status, r.Raw, tc.status, tc.field)
			}
		})
	}
	t.Run("wrong type in consent", func(t *testing.T) {
		r := e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), `{"allowed":"yes"}`)
		if r.Status != 400 || r.errField() != "allowed" || !strings.Contains(r.errMsg(), "boolean") {
			t.Fatalf("got %d %s", r.Status, r.Raw)
		}
	})
	for body, field := range map[string]string{`{"allowed":true,"allowed":false}`: "allowed", `{"Allowed":true}`: "Allowed", `{"allowed":false,"ALLOWED":true}`: "ALLOWED"} {
		t.Run("consent "+body, func(t *testing.T) {
			r := e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), body)
			if r.Status != 400 || r.errField() != field {
				t.Fatalf("got %d %s, want 400 naming %q", r.Status, r.Raw, field)
			}
		})
	}
	t.Run("malformed time", func(t *testing.T) {
		r := e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), `{"allowed":true,"expires_at":"tomorrow"}`)
		if r.Status != 400 || r.errField() != "expires_at" {
			t.Fatalf("got %d %s", r.Status, r.Raw)
		}
	})
	t.Run("missing allowed", func(t *testing.T) {
		r := e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), `{}`)
		if r.Status != 400 || r.errField() != "allowed" {
			t.Fatalf("got %d %s", r.Status, r.Raw)
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		req := httptest.NewRequest("POST", "/deputy/v1/impersonation/sessions", strings.NewReader(`{"customer_id":"c42"}`))
		req.Header.Set("Authorization", "Bearer "+e.agent())
		req.Header.Set("Content-Type", "text/plain")
		w := httptest.NewRecorder()
		e.handler.ServeHTTP(w, req)
		if w.Code != 400 || !strings.Contains(w.Body.String(), `"field":"body"`) {
			t.Fatalf("got %d %s", w.Code, w.Body)
		}
	})
}

func TestRouting(t *testing.T) {
	e := newEnv(t, memoryStore)
	cases := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown resource", "GET", "/deputy/v1/rockets", 404, sidecar.ENOTFOUND},
		{"method not allowed", "PATCH", "/deputy/v1/impersonation/sessions", 405, "method_not_allowed"},
		{"bad limit", "GET", "/deputy/v1/impersonation/sessions?limit=0", 400, sidecar.EINVALID},
		{"limit too large", "GET", "/deputy/v1/impersonation/sessions?limit=100000", 400, sidecar.EINVALID},
		{"bad time filter", "GET", "/deputy/v1/impersonation/log?from=yesterday", 400, sidecar.EINVALID},
		{"bad all flag", "GET", "/deputy/v1/impersonation/sessions?all=maybe", 400, sidecar.EINVALID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, e.lead(), nil)
			if r.Status != tc.status || r.errCode() != tc.code {
				t.Fatalf("got %d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
		})
	}
	t.Run("401 names the scheme", func(t *testing.T) {
		r := e.do("GET", "/deputy/v1/impersonation/sessions", "", nil)
		if r.Status != 401 || r.Header.Get("WWW-Authenticate") == "" || r.errCode() != sidecar.EUNAUTHORIZED {
			t.Fatalf("got %d %v %s", r.Status, r.Header, r.Raw)
		}
	})
}

// Without a policy engine nothing is allowed: the API answers 503.
func TestNoPolicyEngine(t *testing.T) {
	e := newEnv(t, memoryStore)
	h := api.New(api.WithRoutes(api.RoutesFunc(func(r *api.Router) {
		r.HandlePublic("GET", "thing", func(c *api.Call) error {
			if _, err := c.Authorize("thing.read", nil, nil); err != nil {
				return err
			}
			return c.JSON(200, map[string]string{"ok": "yes"})
		})
	})))
	e.handler = h
	if r := e.do("GET", "/deputy/v1/thing", "", nil); r.Status != 503 {
		t.Fatalf("got %d %s", r.Status, r.Raw)
	}
}

// A middleware option sees every call, for metrics and access logs.
func TestMiddleware(t *testing.T) {
	var seen []string
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, r.Method+" "+r.URL.Path)
			next.ServeHTTP(w, r)
		})
	}
	h := api.New(api.WithMiddleware(mw))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/deputy/v1/nothing", nil))
	if w.Code != 404 || len(seen) != 1 || seen[0] != "GET /deputy/v1/nothing" {
		t.Fatalf("code %d, seen %v", w.Code, seen)
	}
}

func TestPaginate(t *testing.T) {
	items := []string{"a", "b", "c", "d", "e"}
	key := func(s string) string { return s }
	var got []string
	p := api.Page{Limit: 2}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		l, err := api.Paginate(items, key, p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l.Items...)
		if l.NextCursor == "" {
			break
		}
		p.Cursor = l.NextCursor
	}
	if strings.Join(got, "") != "abcde" {
		t.Fatalf("pages gave %v", got)
	}
	if _, err := api.Paginate(items, key, api.Page{Limit: 2, Cursor: "!!"}); sidecar.ErrorField(err) != "cursor" {
		t.Fatalf("malformed cursor: %v", err)
	}
	if l, _ := api.Paginate([]string(nil), key, api.Page{Limit: 2}); l.Items == nil {
		t.Fatal("an empty page must encode as [] not null")
	}
}

func TestParsePage(t *testing.T) {
	cases := []struct {
		query string
		limit int
		field string
	}{
		{"", 50, ""},
		{"limit=10", 10, ""},
		{"limit=-1", 0, "limit"},
		{"limit=ten", 0, "limit"},
		{"limit=501", 0, "limit"},
		{"cursor=" + strings.Repeat("x", 2000), 0, "cursor"},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			p, err := api.ParsePage(q, 50, 500)
			if sidecar.ErrorField(err) != tc.field || (err == nil && p.Limit != tc.limit) {
				t.Fatalf("got %+v, %v", p, err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name  string
		cfg   api.Config
		field string
	}{
		{"defaults", api.Defaults(), ""},
		{"huge bodies", api.Config{MaxBodyBytes: 1 << 30}, "api.max_body_bytes"},
		{"page above max", api.Config{PageSize: 100, MaxPageSize: 10}, "api.page_size"},
		{"negative write rate", api.Config{WriteRate: -1}, "api.write_rate"},
		{"write rate not a number", api.Config{WriteRate: math.NaN()}, "api.write_rate"},
		{"negative write burst", api.Config{WriteBurst: -1}, "api.write_burst"},
		{"negative write callers", api.Config{WriteCallers: -1}, "api.write_callers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sidecar.ErrorField(tc.cfg.Validate()); got != tc.field {
				t.Fatalf("field %q, want %q", got, tc.field)
			}
		})
	}
}
