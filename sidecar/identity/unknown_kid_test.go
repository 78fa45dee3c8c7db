package identity_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/identity"
)

func startURLVerifier(t *testing.T, url string, clock *fakeClock) *identity.Verifier {
	t.Helper()
	return startURLVerifierWith(t, identity.Config{
		Issuers:            []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: url}},
		Audiences:          []string{testAudience},
		MinRefreshInterval: 10 * time.Second,
	}, clock)
}

func startURLVerifierWith(t *testing.T, cfg identity.Config, clock *fakeClock) *identity.Verifier {
	t.Helper()
	v, err := identity.New(cfg, identity.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// An unknown kid makes the verifier fetch the key set, and the request
// that named it may go away (Envoy cancels the check when the client
// disconnects) while the fetch runs. The fetch is the verifier's, not the
// request's: it completes and is used. Were it aborted with its rate slot
// spent, one cancelled request per min_refresh_interval would keep every
// token of a rotated key refused as unknown_kid.
func TestCancelledMissStillFetchesRotatedKey(t *testing.T) {
	_, ek, _, other := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	clock := newClock(epoch)
	v := startURLVerifier(t, srv.URL+"/jwks.json", clock)

	// The issuer rotates: it now signs with "other".
	srv.set(jwks(ek, other))
	clock.Add(time.Minute) // well past min_refresh_interval since start

	// Attacker: any token with a kid nobody knows, and a client that goes
	// away while the fetch it started is in flight.
	arrived, release := srv.hold(t)
	forged := sign(t, other, "forged", goodClaims(clock.Now()))
	ctx, cancel := context.WithCancel(context.Background())
	refused := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, bearer(forged))
		refused <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the unknown kid started no key set fetch")
	}
	cancel()
	var err error
	select {
	case err = <-refused:
	case <-time.After(10 * time.Second):
		t.Fatal("the client that went away still waits for the fetch")
	}
	if got := reasonOf(t, err); got != identity.ReasonUnknownKid {
		t.Fatalf("forged kid: reason %q", got)
	}
	release() // the provider answers, after the client went away

	// A legitimate user, a second later, with a token of the new key.
	clock.Add(time.Second)
	legit := sign(t, other, other.kid, goodClaims(clock.Now()))
	id, err := v.Verify(context.Background(), bearer(legit))
	if err != nil {
		t.Fatalf("legitimate token of the rotated key refused: %v (want accepted: the issuer publishes the key)", err)
	}
	if id.Subject != "alice" {
		t.Fatalf("sub = %q", id.Subject)
	}
	if got := srv.fetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2 (start, and one shared by both misses)", got)
	}
}

// A flood of junk tokens that make the verifier fetch the key sets (a kid
// nobody knows, or no kid and a key nobody publishes), from clients that
// wait and clients that go away, makes at most one fetch per
// min_refresh_interval; and the fetch it makes serves the legitimate
// tokens of a rotated key.
func TestJunkTokenFloodFetchesOncePerInterval(t *testing.T) {
	_, ek, edk, other := keys(t)
	kinds := []struct {
		name   string
		keys   func(...testKey) []byte // the key sets the issuer publishes
		junk   func(round, i int) string
		reason string
		legit  string // a token of the key the issuer rotates to
	}{
		{name: "kid nobody knows", keys: jwks, reason: identity.ReasonUnknownKid,
			junk: func(round, i int) string {
				return sign(t, other, fmt.Sprintf("forged-%d-%d", round, i), goodClaims(epoch))
			},
			legit: sign(t, other, other.kid, goodClaims(epoch))},
		{name: "no kid", keys: kidless, reason: identity.ReasonBadSignature,
			junk: func(round, i int) string {
				return sign(t, edk, "", with(goodClaims(epoch), "jti", fmt.Sprint(round, "-", i)))
			},
			legit: sign(t, other, "", goodClaims(epoch))},
	}
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			srv := newJWKSServer(t, kind.keys(ek))
			clock := newClock(epoch)
			v := startURLVerifier(t, srv.URL, clock)

			round := 0
			flood := func(t *testing.T) {
				t.Helper()
				round++
				// The provider answers only once every client that goes
				// away has gone: the fetch any of them started is still in
				// flight then.
				_, release := srv.hold(t)
				var gone, waiting sync.WaitGroup
				for i := range 40 {
					wg := &waiting
					if i%2 == 1 {
						wg = &gone
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						ctx, cancel := context.WithCancel(context.Background())
						if i%2 == 1 {
							cancel() // a client already gone
						}
						defer cancel()
						if _, err := v.Verify(ctx, bearer(kind.junk(round, i))); sidecar.ErrorReason(err) != kind.reason {
							t.Errorf("junk token: %v", err)
						}
					}()
				}
				gone.Wait()
				release()
				waiting.Wait()
				// A client that waits joins the fetch still in flight, if
				// any, or finds the rate bound taken: either way no fetch
				// runs after it.
				if _, err := v.Verify(context.Background(), bearer(kind.junk(round, -1))); sidecar.ErrorReason(err) != kind.reason {
					t.Fatalf("junk token: %v", err)
				}
			}
			steps := []struct {
				name        string
				do          func()
				wantFetches int32
			}{
				{name: "first flood fetches once", wantFetches: 2},
				{name: "within the interval no fetch", do: func() { clock.Add(9 * time.Second) }, wantFetches: 2},
				{name: "past the interval one fetch", do: func() { clock.Add(2 * time.Second); srv.set(kind.keys(ek, other)) }, wantFetches: 3},
			}
			for _, st := range steps {
				t.Run(st.name, func(t *testing.T) {
					if st.do != nil {
						st.do()
					}
					flood(t)
					if got := srv.fetches.Load(); got != st.wantFetches {
						t.Fatalf("fetches = %d, want %d", got, st.wantFetches)
					}
				})
			}
			// The last flood's fetch brought the rotated key: it verifies.
			if _, err := v.Verify(context.Background(), bearer(kind.legit)); err != nil {
				t.Fatalf("rotated key after the flood: %v", err)
			}
			if got := srv.fetches.Load(); got != 3 {
				t.Fatalf("fetches = %d, want 3", got)
			}
		})
	}
}

// An issuer that signs without kids rotates unseen: a token of its new
// key names nothing the verifier does not know. When no key loaded
// verifies a token that names no kid, the key sets are fetched again,
// under the rate bound of an unknown kid, before it is refused; and the
// refusal is remembered only until the bound has passed, so the token
// verifies as soon as the bound lets its key be fetched.
func TestKidlessRotatedKeyFetched(t *testing.T) {
	rk, ek, edk, other := keys(t)
	srv := newJWKSServer(t, kidless(ek))
	clock := newClock(epoch)
	v := startURLVerifier(t, srv.URL, clock)
	token := func(k testKey, sub string) string { return sign(t, k, "", with(goodClaims(epoch), "sub", sub)) }
	junk := token(edk, "mallory") // of a key the issuer never publishes
	rotated, again := token(other, "alice"), token(rk, "bob")

	steps := []struct {
		name        string
		do          func()
		token       string
		reason      string
		wantFetches int32
	}{
		{name: "start fetched once", token: token(ek, "alice"), wantFetches: 1},
		{name: "issuer rotates: its new key is fetched", do: func() { srv.set(kidless(other)) }, token: rotated, wantFetches: 2},
		{name: "junk within the bound fetches nothing", token: junk, reason: identity.ReasonBadSignature, wantFetches: 2},
		{name: "issuer rotates again within the bound", do: func() { srv.set(kidless(rk)) },
			token: again, reason: identity.ReasonBadSignature, wantFetches: 2},
		{name: "the refused token verifies once the bound has passed", do: func() { clock.Add(11 * time.Second) },
			token: again, wantFetches: 3},
		{name: "junk after that fetch fetches nothing", token: junk, reason: identity.ReasonBadSignature, wantFetches: 3},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do()
			}
			_, err := v.Verify(context.Background(), bearer(st.token))
			if got := reasonOf(t, err); got != st.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, st.reason)
			}
			if got := srv.fetches.Load(); got != st.wantFetches {
				t.Fatalf("fetches = %d, want %d", got, st.wantFetches)
			}
		})
	}
}

// kidless is the key set of ks as an issuer that names no kids publishes it.
func kidless(ks ...testKey) []byte {
	for i := range ks {
		ks[i].kid = ""
	}
	return jwks(ks...)
}

// A fetch that failed takes the rate slot for time.Second only: the
// rotated key is fetched soon after the identity provider answers again,
// not a whole min_refresh_interval later.
func TestFailedMissFetchRetriedSoon(t *testing.T) {
	_, ek, _, other := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	clock := newClock(epoch)
	v := startURLVerifier(t, srv.URL, clock)
	rotated := sign(t, other, other.kid, goodClaims(epoch))

	steps := []struct {
		name        string
		do          func()
		reason      string
		wantFetches int32
	}{
		{name: "provider broken: fetch fails", do: func() { srv.set([]byte("<html>maintenance</html>")) },
			reason: identity.ReasonUnknownKid, wantFetches: 2},
		{name: "provider back, before the retry", do: func() { srv.set(jwks(ek, other)); clock.Add(identity.MissRetry / 2) },
			reason: identity.ReasonUnknownKid, wantFetches: 2},
		{name: "after the retry the key is fetched", do: func() { clock.Add(identity.MissRetry / 2) }, wantFetches: 3},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			_, err := v.Verify(context.Background(), bearer(rotated))
			if got := reasonOf(t, err); got != st.reason {
				t.Fatalf("reason = %q (%v), want %q", got, err, st.reason)
			}
			if got := srv.fetches.Load(); got != st.wantFetches {
				t.Fatalf("fetches = %d, want %d", got, st.wantFetches)
			}
		})
	}
}
