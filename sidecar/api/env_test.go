package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/api"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/identity"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
)

// clock is a test clock every part shares, so expiry is exercised
// without waiting.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// testStart is where a test clock that advances starts: a year behind the
// real one. The Redis store judges what is over at the earlier of the
// writer's clock and Redis's own (sidecar/redis: cutLua, budgets), so a
// test clock advanced past the real one would see nothing come due there.
func testStart() time.Time { return time.Now().AddDate(-1, 0, 0).Truncate(time.Second) }

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// env is Deputy's management API over a real store, the shipped Login as
// Customer policies, a dev-mode identity verifier and a session resolver.
type env struct {
	idv      sidecar.IdentityVerifier
	t        *testing.T
	clock    *clock
	store    sidecar.Store
	engine   *policy.Engine
	svc      *delegation.Impersonation
	resolver *resolve.SessionResolver
	handler  http.Handler
	dev      *identity.DevIssuer
	tokens   map[string]string
	host     string // of the requests do sends; empty: httptest's example.com
}

type envOption func(switches map[string]any, cfg *delegation.ImpersonationConfig)

func withSwitch(key string, v any) envOption {
	return func(sw map[string]any, _ *delegation.ImpersonationConfig) { sw[key] = v }
}

func withStorefrontHosts(hosts ...string) envOption {
	return func(_ map[string]any, cfg *delegation.ImpersonationConfig) { cfg.StorefrontHosts = hosts }
}

// storeFactory makes a fresh store for one test on the test clock.
type storeFactory func(t *testing.T, now sidecar.Clock) sidecar.Store

func memoryStore(t *testing.T, now sidecar.Clock) sidecar.Store {
	s := memory.New(memory.WithClock(now))
	t.Cleanup(func() { s.Close() })
	return s
}

// shippedPolicies copies the Login as Customer policies of this repository
// into a directory laid out as Deputy loads policies, so data.json lands at
// data.deputy.impersonation.
func shippedPolicies(t *testing.T) string {
	return policyFiles(t, "impersonation/impersonation.rego", "impersonation/data.json", "lib/lib.rego", "manage/manage.rego", "manage/impersonation.rego", "manage/streams.rego")
}

// policyFiles copies the named files of policies/deputy into a new
// directory, under deputy/ as Deputy loads them, and returns it.
func policyFiles(t *testing.T, files ...string) string {
	t.Helper()
	root := filepath.Join("..", "..", "policies", "deputy")
	dir := t.TempDir()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, "deputy", f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newEnv(t *testing.T, mk storeFactory, opts ...envOption) *env {
	t.Helper()
	ck := &clock{now: testStart()}
	set, err := policy.LoadPaths([]string{shippedPolicies(t)})
	if err != nil {
		t.Fatal(err)
	}
	sw := set.Data["deputy"].(map[string]any)["impersonation"].(map[string]any)
	cfg := delegation.ImpersonationConfig{RedirectHosts: []string{"shop.example.com"}}
	for _, o := range opts {
		o(sw, &cfg)
	}
	engine := policy.New(policy.WithLogger(slog.New(slog.DiscardHandler)))
	if err := engine.Activate(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := identity.New(identity.Config{Dev: identity.DevConfig{Enabled: true}},
		identity.WithDevIssuer(dev), identity.WithClock(ck.Now))
	if err != nil {
		t.Fatal(err)
	}
	store := mk(t, ck.Now)
	data := func() map[string]any { return engine.Current().Data() }
	svc := delegation.NewImpersonation(store, data, delegation.WithImpersonationConfig(cfg), delegation.WithImpersonationClock(ck.Now))
	resolver := resolve.NewSessionResolver(store, cfg, resolve.WithSessionClock(ck.Now))
	t.Cleanup(func() { resolver.Close() })
	h := api.New(
		api.WithVerifier(verifier),
		api.WithEngine(engine),
		api.WithClock(ck.Now),
		api.WithConfig(api.Config{MaxBodyBytes: 4096}),
		api.WithStaffRecorder(svc.RecordStaff),
		api.WithRoutes(api.NewImpersonation(svc)),
	)
	return &env{t: t, clock: ck, store: store, engine: engine, svc: svc, resolver: resolver, handler: h, dev: dev, idv: verifier, tokens: map[string]string{}}
}

// token mints (once) a dev token for sub with roles, valid for ttl.
func (e *env) token(sub string, ttl time.Duration, roles ...string) string {
	e.t.Helper()
	tok, err := e.dev.Mint(identity.DevClaims{Subject: sub, Name: strings.ToUpper(sub[:1]) + sub[1:], Roles: roles, TTL: ttl, IssuedAt: e.clock.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// Callers used throughout.
func (e *env) agent() string    { return e.as("alice", "support_agent") }
func (e *env) lead() string     { return e.as("lee", "support_lead") }
func (e *env) admin() string    { return e.as("ada", "admin") }
func (e *env) customer() string { return e.as("c42", "customer") }

func (e *env) as(sub string, roles ...string) string {
	k := sub + "|" + strings.Join(roles, ",")
	if tok, ok := e.tokens[k]; ok {
		return tok
	}
	tok := e.token(sub, 24*time.Hour, roles...)
	e.tokens[k] = tok
	return tok
}

type response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

func (r response) errCode() string  { return r.str("error", "code") }
func (r response) errField() string { return r.str("error", "field") }
func (r response) errMsg() string   { return r.str("error", "message") }

func (r response) str(path ...string) string {
	var cur any = r.Body
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	s, _ := cur.(string)
	return s
}

func (e *env) do(method, path, token string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req := httptest.NewRequest(method, path, rd)
	if e.host != "" {
		req.Host = e.host
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, req)
	res := response{Status: w.Code, Header: w.Header(), Raw: w.Body.String()}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(w.Body.Bytes(), &res.Body); err != nil {
			e.t.Fatalf("%s %s: body is not JSON: %v: %s", method, path, err, w.Body.String())
		}
	}
	return res
}

func (e *env) must(r response, status int) response {
	e.t.Helper()
	if r.Status != status {
		e.t.Fatalf("status %d, want %d: %s", r.Status, status, r.Raw)
	}
	return r
}

// seed syncs customer c42 (and a protected staff account) and gives c42's consent.
func (e *env) seed() {
	e.t.Helper()
	e.must(e.do("PUT", "/deputy/v1/customers/c42", e.admin(), map[string]any{
		"name": "Chloé Martin", "default_store_view": "default", "store_views": []string{"default", "fr"},
	}), 200)
	e.must(e.do("PUT", "/deputy/v1/customers/s1", e.admin(), map[string]any{"name": "Staff", "protected": true}), 200)
	e.must(e.do("PUT", "/deputy/v1/customers/c42/consent", e.customer(), map[string]any{"allowed": true}), 200)
}

// start starts a session as the agent on c42 and returns the response.
func (e *env) start(token string, body map[string]any) response {
	e.t.Helper()
	if body == nil {
		body = map[string]any{"customer_id": "c42"}
	}
	return e.do("POST", "/deputy/v1/impersonation/sessions", token, body)
}

// redeem follows a redeem link and returns the session cookie value.
func (e *env) redeem(link string) (response, string) {
	e.t.Helper()
	r := e.do("GET", link, "", nil)
	for _, c := range (&http.Response{Header: r.Header}).Cookies() {
		if c.Name == delegation.DefaultSessionCookie {
			return r, c.Value
		}
	}
	return r, ""
}

// check resolves a storefront request carrying the cookie.
func (e *env) check(cookie string) (*sidecar.Delegation, error) {
	return e.resolver.Resolve(context.Background(), &sidecar.Request{
		// On httptest's host, where the link was redeemed: sessions are bound to it.
		Method: "GET", Path: "/", Host: "example.com",
		Headers: map[string]string{"cookie": "theme=dark; " + delegation.DefaultSessionCookie + "=" + cookie},
	}, nil)
}

// live starts and redeems a session, returning its id and cookie.
func (e *env) live(token string) (string, string) {
	e.t.Helper()
	st := e.must(e.start(token, nil), 201)
	_, cookie := e.redeem(st.str("redeem_url"))
	if cookie == "" {
		e.t.Fatal("redeem set no cookie")
	}
	return st.str("session", "id"), cookie
}

// denied waits (bounded) until the cookie is refused with reason: on Redis
// the eviction reaches this replica's cache through pub/sub.
func (e *env) denied(cookie, reason string) {
	e.t.Helper()
	var d *sidecar.Delegation
	var err error
	eventually(e.t, 2*time.Second, func() string {
		d, err = e.check(cookie)
		if d == nil && sidecar.ErrorCode(err) == sidecar.EUNAUTHORIZED && sidecar.ErrorMessage(err) == reason {
			return ""
		}
		return fmt.Sprintf("check = %+v, %v; want %s", d, err, reason)
	})
}

// eventually polls cond until it reports nothing wrong ("") and fails the
// test with cond's last report when within does not see that happen.
func eventually(t testing.TB, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		wrong := cond()
		if wrong == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(wrong)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
