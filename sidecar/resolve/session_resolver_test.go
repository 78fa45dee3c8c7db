package resolve_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/delegation"
	"github.com/deputyhq/deputy/sidecar/memory"
	"github.com/deputyhq/deputy/sidecar/policy"
	"github.com/deputyhq/deputy/sidecar/resolve"
	"github.com/deputyhq/deputy/sidecar/storetest"
)

// countingState counts the store round trips the check path makes.
type countingState struct {
	*memory.Store
	reads, touches, customers atomic.Int64
}

func (c *countingState) GetCustomerState(ctx context.Context, customer string) (*sidecar.CustomerState, error) {
	c.customers.Add(1)
	return c.Store.GetCustomerState(ctx, customer)
}

func (c *countingState) SessionByToken(ctx context.Context, h string) (*sidecar.Session, error) {
	c.reads.Add(1)
	return c.Store.SessionByToken(ctx, h)
}

func (c *countingState) TouchSession(ctx context.Context, id string, at time.Time) error {
	c.touches.Add(1)
	return c.Store.TouchSession(ctx, id, at)
}

type resolverFixture struct {
	now    atomic.Int64
	state  *countingState
	r      *resolve.SessionResolver
	cookie string
}

func (f *resolverFixture) clock() time.Time        { return time.Unix(0, f.now.Load()) }
func (f *resolverFixture) advance(d time.Duration) { f.now.Add(int64(d)) }

// newResolverFixture stores one live, redeemed session for alice on c42.
func newResolverFixture(tb testing.TB) *resolverFixture {
	tb.Helper()
	f := &resolverFixture{}
	f.now.Store(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC).UnixNano())
	f.state = &countingState{Store: memory.New(memory.WithClock(f.clock))}
	ctx := context.Background()
	s := &sidecar.Session{ID: "imp_1", Actor: "alice", ActorName: "Alice", Customer: "c42", CustomerName: "Chloé",
		StoreView: "fr", Reason: "cart", Ticket: "SR-1", StartedAt: f.clock(), ExpiresAt: f.clock().Add(time.Hour), IdleTimeout: 15 * time.Minute, Host: "shop.example.com"}
	f.cookie = strings.Repeat("k", 43)
	if err := storetest.StartRedeemed(ctx, f.state, s, delegation.HashSecret(f.cookie)); err != nil {
		tb.Fatal(err)
	}
	f.r = resolve.NewSessionResolver(f.state, delegation.ImpersonationConfig{}, resolve.WithSessionClock(f.clock))
	tb.Cleanup(func() { f.r.Close() })
	return f
}

func (f *resolverFixture) resolve(cookieHeader string) (*sidecar.Delegation, error) {
	return f.r.Resolve(context.Background(), &sidecar.Request{Method: "GET", Host: "shop.example.com", Path: "/", Headers: map[string]string{"cookie": cookieHeader}}, nil)
}

func TestSessionResolver(t *testing.T) {
	f := newResolverFixture(t)
	cases := []struct {
		name    string
		header  string
		subject string
		reason  string
	}{
		{"no cookie header", "", "", ""},
		{"other cookies only", "theme=dark; lang=fr", "", ""},
		{"session cookie", "theme=dark; deputy_session=" + f.cookie, "c42", ""},
		{"quoted value", `deputy_session="` + f.cookie + `"`, "c42", ""},
		{"first of several", "deputy_session=" + f.cookie + "; other=1", "c42", ""},
		{"name is a suffix of another cookie", "xdeputy_session=" + f.cookie, "", ""},
		{"unknown token", "deputy_session=forged", "", "session_unknown"},
		{"oversized token", "deputy_session=" + strings.Repeat("a", 4096), "", "session_unknown"},
		{"empty value", "deputy_session=", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := f.resolve(tc.header)
			if tc.reason != "" {
				if d != nil || sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED || sidecar.ErrorReason(err) != tc.reason {
					t.Fatalf("got %v, %v; want %s", d, err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.subject == "" {
				if d != nil {
					t.Fatalf("delegation %+v for a request without a session", d)
				}
				return
			}
			if d == nil || d.Mode != sidecar.ModeImpersonation || d.Subject != tc.subject || d.Actor != "alice" || d.ID != "imp_1" ||
				d.StoreView != "fr" || d.SubjectName != "Chloé" || d.Reason != "cart" || d.Ticket != "SR-1" {
				t.Fatalf("delegation = %+v", d)
			}
		})
	}
}

// The returned delegation is the caller's: changing it does not change
// what the next check sees.
func TestSessionResolverCopies(t *testing.T) {
	f := newResolverFixture(t)
	d, _ := f.resolve("deputy_session=" + f.cookie)
	d.Subject = "someone else"
	d2, _ := f.resolve("deputy_session=" + f.cookie)
	if d2.Subject != "c42" {
		t.Fatalf("cached delegation was changed through a returned copy: %q", d2.Subject)
	}
}

// At steady state a check reaches the store at most once per hundred
// checks (one refresh per cache TTL and one last-seen write per touch
// interval), and the session stays alive while it is used.
func TestSessionResolverRoundTrips(t *testing.T) {
	f := newResolverFixture(t)
	const checks = 20_000
	for i := range checks {
		if _, err := f.resolve("deputy_session=" + f.cookie); err != nil {
			t.Fatalf("check %d at %v: %v", i, f.clock(), err)
		}
		f.advance(5 * time.Millisecond) // 200 checks a second for 100 s
	}
	trips := f.state.reads.Load() + f.state.touches.Load()
	if per := float64(trips) / checks; per > 0.01 {
		t.Fatalf("%d store round trips for %d checks (%.4f per check)", trips, checks, per)
	}
	if f.state.touches.Load() == 0 {
		t.Fatal("last-seen never written: other replicas would see the session idle")
	}
}

// Ending a session in the store evicts it from the cache at once.
func TestSessionResolverEviction(t *testing.T) {
	f := newResolverFixture(t)
	if _, err := f.resolve("deputy_session=" + f.cookie); err != nil {
		t.Fatal(err)
	}
	if _, err := f.state.EndSession(context.Background(), "imp_1", "lee", sidecar.EndRevoked, f.clock(), sidecar.SessionLimits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.resolve("deputy_session=" + f.cookie); sidecar.ErrorReason(err) != "session_revoked" {
		t.Fatalf("after revoke: %v", err)
	}
}

func FuzzSessionCookie(f *testing.F) {
	fx := newResolverFixture(f)
	for _, s := range []string{"", "deputy_session=x", "a=b; deputy_session", ";;;=", "deputy_session=\"", "deputy_session=" + fx.cookie} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		d, err := fx.resolve(header)
		if d != nil && (err != nil || d.Subject != "c42") {
			t.Fatalf("%q → %+v, %v", header, d, err)
		}
		if err != nil && sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED {
			t.Fatalf("%q → %v", header, err)
		}
	})
}

// BenchmarkResolve is the check path with the session in the local cache.
func BenchmarkResolve(b *testing.B) {
	f := newResolverFixture(b)
	req := &sidecar.Request{Method: "GET", Host: "shop.example.com", Path: "/", Headers: map[string]string{"cookie": "theme=dark; deputy_session=" + f.cookie}}
	ctx := context.Background()
	if _, err := f.r.Resolve(ctx, req, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.r.Resolve(ctx, req, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// After the invalidation bus reconnects, nothing cached is trusted.
func TestSessionResolverInvalidateAll(t *testing.T) {
	f := newResolverFixture(t)
	if _, err := f.resolve("deputy_session=" + f.cookie); err != nil {
		t.Fatal(err)
	}
	before := f.state.reads.Load()
	if err := f.state.Invalidate(context.Background(), sidecar.InvalidateAll); err != nil {
		t.Fatal(err)
	}
	if _, err := f.resolve("deputy_session=" + f.cookie); err != nil {
		t.Fatal(err)
	}
	if f.state.reads.Load() != before+1 {
		t.Fatalf("store reads %d → %d: the cache was not dropped", before, f.state.reads.Load())
	}
}

// A redeem link used without a host would bind the session to none: it is
// refused, and a session stored with no host is valid on no host (not on
// every one).
func TestSessionNeedsAHost(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock(storetest.Epoch)
	store := memory.New(memory.WithClock(clock.Now))
	set, err := policy.LoadPaths([]string{"../../policies"})
	if err != nil {
		t.Fatal(err)
	}
	lc := delegation.NewImpersonation(store, func() map[string]any { return set.Data }, delegation.WithImpersonationClock(clock.Now))
	if _, err := store.PutCustomer(ctx, &sidecar.Customer{ID: "c42", DefaultStoreView: "en"}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	allow := func(string, map[string]any) error { return nil }
	if _, _, err := lc.SetConsent(ctx, &sidecar.Identity{Subject: "c42"}, delegation.ConsentChange{Customer: "c42", Allowed: true}, allow); err != nil {
		t.Fatal(err)
	}
	st, err := lc.Start(ctx, &sidecar.Identity{Subject: "alice"}, delegation.StartRequest{Customer: "c42"}, allow)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"", ":8080", "."} {
		if _, err := lc.Redeem(ctx, nil, st.Code, "", host, allow); sidecar.ErrorCode(err) != sidecar.EINVALID || sidecar.ErrorField(err) != "host" {
			t.Errorf("redeem on host %q: %v, want EINVALID host", host, err)
		}
	}

	cookie := strings.Repeat("n", 43)
	s := &sidecar.Session{ID: "imp_2", Actor: "bob", Customer: "c42", StartedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	if err := storetest.StartRedeemed(ctx, store, s, delegation.HashSecret(cookie)); err != nil {
		t.Fatal(err)
	}
	r := resolve.NewSessionResolver(store, delegation.ImpersonationConfig{}, resolve.WithSessionClock(clock.Now))
	defer r.Close()
	for _, host := range []string{"", "shop.example.com", "evil.example"} {
		d, err := r.Resolve(ctx, &sidecar.Request{Host: host, Headers: map[string]string{"cookie": "deputy_session=" + cookie}}, nil)
		if d != nil || sidecar.ErrorReason(err) != "session_wrong_host" {
			t.Errorf("host %q: %+v, %v; want session_wrong_host", host, d, err)
		}
	}
}

// The delegation carries the customer's protection as of the request,
// read with the consent in one store round trip per cache miss and read
// again once the profile or the staff mark changes (the customer key
// evicts it), while the session itself stays cached.
func TestSessionCarriesCustomerProtection(t *testing.T) {
	ctx := context.Background()
	f := newResolverFixture(t)
	want := func(step string, protected bool, roles ...string) {
		t.Helper()
		d, err := f.resolve("deputy_session=" + f.cookie)
		if err != nil || d == nil || d.SubjectProtected != protected || strings.Join(d.SubjectRoles, ",") != strings.Join(roles, ",") {
			t.Fatalf("%s: %+v, %v; want protected %v roles %v", step, d, err, protected, roles)
		}
	}
	want("plain profile", false)
	want("cached", false)
	if n := f.state.customers.Load(); n != 1 {
		t.Fatalf("%d customer reads for two requests, want 1", n)
	}
	sessionReads := f.state.reads.Load()
	// Written straight to the store, with no protection data: the session
	// stays live, so only the per-request view can tell.
	if _, err := f.state.PutCustomer(ctx, &sidecar.Customer{ID: "c42", Roles: []string{"customer", "admin"}}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	want("roles synced", false, "customer", "admin")
	if _, err := f.state.PutCustomer(ctx, &sidecar.Customer{ID: "c42", Protected: true}, sidecar.Protection{}); err != nil {
		t.Fatal(err)
	}
	// The session ended with the protected profile; its eviction went
	// to the session cache, so this read is the store's answer.
	if _, err := f.resolve("deputy_session=" + f.cookie); sidecar.ErrorReason(err) != "session_customer_protected" {
		t.Fatalf("after the protected profile: %v", err)
	}
	if n := f.state.customers.Load(); n != 2 { // an ended session needs no customer read
		t.Fatalf("%d customer reads, want 2", n)
	}
	if f.state.reads.Load() != sessionReads+1 {
		t.Fatalf("session reads %d → %d: a profile change refetched the session more than once", sessionReads, f.state.reads.Load())
	}
}

// Envoy with encode_raw_headers sends the cookie in header_map only (and
// HTTP/2 clients split it into several cookie headers): the session there
// is the request's session, as it would be in headers.
func TestSessionCookieInHeaderMap(t *testing.T) {
	f := newResolverFixture(t)
	req := &sidecar.Request{Method: "GET", Host: "shop.example.com", Path: "/", HeaderMap: []sidecar.HeaderField{
		{Name: "accept", Value: "*/*"}, {Name: "Cookie", Value: "theme=dark"}, {Name: "cookie", Value: "deputy_session=" + f.cookie},
	}}
	d, err := f.r.Resolve(context.Background(), req, nil)
	if err != nil || d == nil || d.Subject != "c42" || d.Actor != "alice" {
		t.Fatalf("delegation %+v, err %v; want alice acting for c42", d, err)
	}
}

// A browser may send several cookies of the session's name: a host under
// the same registrable domain (or a script on one) can set
// deputy_session=junk; Domain=.example; Path=/customer, which the browser
// sends before the real one. The first must not decide alone: a junk
// value denied the request and its clearing answer deleted the real
// cookie. Exactly one live session among them is honoured; two different
// live sessions are refused as ambiguous, whichever came first.
func TestSessionResolverSeveralCookies(t *testing.T) {
	f := newResolverFixture(t)
	ctx := context.Background()
	other := strings.Repeat("m", 43)
	s2 := &sidecar.Session{ID: "imp_2", Actor: "alice", ActorName: "Alice", Customer: "c43", CustomerName: "Other",
		StoreView: "fr", StartedAt: f.clock(), ExpiresAt: f.clock().Add(time.Hour), IdleTimeout: 15 * time.Minute, Host: "shop.example.com"}
	if err := storetest.StartRedeemed(ctx, f.state, s2, delegation.HashSecret(other)); err != nil {
		t.Fatal(err)
	}
	ended := strings.Repeat("e", 43)
	s3 := &sidecar.Session{ID: "imp_3", Actor: "bob", Customer: "c44", StoreView: "fr", StartedAt: f.clock(),
		ExpiresAt: f.clock().Add(time.Hour), IdleTimeout: 15 * time.Minute, Host: "shop.example.com"}
	if err := storetest.StartRedeemed(ctx, f.state, s3, delegation.HashSecret(ended)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.state.EndSession(ctx, "imp_3", "bob", "ended", f.clock(), sidecar.SessionLimits{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, header, subject, reason string
	}{
		{"junk first", "deputy_session=junk; deputy_session=" + f.cookie, "c42", ""},
		{"junk last", "deputy_session=" + f.cookie + "; deputy_session=junk", "c42", ""},
		{"empty first", "deputy_session=; deputy_session=" + f.cookie, "c42", ""},
		{"the same session twice", "deputy_session=" + f.cookie + "; a=b; deputy_session=" + f.cookie, "c42", ""},
		{"only junk", "deputy_session=junk; deputy_session=forged", "", "session_unknown"},
		{"two live sessions", "deputy_session=" + other + "; deputy_session=" + f.cookie, "", "session_ambiguous"},
		{"two live sessions, other order", "deputy_session=" + f.cookie + "; deputy_session=" + other, "", "session_ambiguous"},
		{"too many to read", strings.Repeat("deputy_session=junk; ", 4) + "deputy_session=" + f.cookie, "", "session_ambiguous"},
		// A value naming a session that is not live (the browser's own,
		// ended) beside a live one: either may be the planted one.
		{"an ended session beside a live one", "deputy_session=" + ended + "; deputy_session=" + f.cookie, "", "session_ambiguous"},
		{"a live session beside an ended one", "deputy_session=" + f.cookie + "; deputy_session=" + ended, "", "session_ambiguous"},
		// Junk in front of an ended session: refused as the ended one,
		// which names whose session it was.
		{"junk before an ended session", "deputy_session=junk; deputy_session=" + ended, "", "session_ended"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := f.resolve(tc.header)
			if tc.reason != "" {
				if d != nil || sidecar.ErrorCode(err) != sidecar.EUNAUTHORIZED || sidecar.ErrorReason(err) != tc.reason {
					t.Fatalf("got %+v, %v; want %s", d, err, tc.reason)
				}
				var clear *sidecar.ClearCookie
				if tc.reason == "session_ambiguous" && errors.As(err, &clear) {
					t.Fatal("an ambiguous request clears a cookie that may be good")
				}
				var a *sidecar.Attempt
				if tc.reason == "session_ended" && (!errors.As(err, &a) || a.Session != "imp_3") {
					t.Fatalf("refusal %v does not name the ended session", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d == nil || d.Subject != tc.subject || d.ID != "imp_1" {
				t.Fatalf("delegation = %+v, want imp_1 on %s", d, tc.subject)
			}
		})
	}
}
