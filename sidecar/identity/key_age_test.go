package identity_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// While an issuer's key set cannot be fetched, its previous keys keep
// verifying, a key the issuer removed among them: KeySets shows how long
// ago each issuer's keys were last fetched, and how many fetches failed,
// for the metrics and the alert that make this visible.
func TestKeySetsShowAgeAndFailures(t *testing.T) {
	_, ek, _, _ := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	clock := newClock(epoch)
	v := startURLVerifier(t, srv.URL, clock)

	steps := []struct {
		name         string
		do           func()
		wantAge      time.Duration
		wantFailures uint64
	}{
		{name: "fetched at start", do: func() {}, wantAge: 0},
		{name: "time passes", do: func() { clock.Add(3 * time.Minute) }, wantAge: 3 * time.Minute},
		{name: "a refresh that succeeds", do: func() { v.Refresh(context.Background()) }, wantAge: 0},
		{name: "the provider fails", do: func() {
			srv.set([]byte("<html>maintenance</html>"))
			clock.Add(5 * time.Minute)
			v.Refresh(context.Background())
		}, wantAge: 5 * time.Minute, wantFailures: 1},
		{name: "and keeps failing", do: func() {
			clock.Add(5 * time.Minute)
			v.Refresh(context.Background())
		}, wantAge: 10 * time.Minute, wantFailures: 2},
		{name: "the provider answers again", do: func() {
			srv.set(jwks(ek))
			clock.Add(5 * time.Minute)
			v.Refresh(context.Background())
		}, wantAge: 0, wantFailures: 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			got := v.KeySets()
			if len(got) != 1 {
				t.Fatalf("KeySets() = %+v, want the one issuer", got)
			}
			if got[0].Issuer != testIssuer || got[0].Age != st.wantAge || got[0].FetchFailures != st.wantFailures {
				t.Fatalf("KeySets() = %+v, want age %s and %d failures", got[0], st.wantAge, st.wantFailures)
			}
		})
	}
}

// An issuer whose key set was never fetched reports its age since start;
// the dev issuer's key, held in process, never ages.
func TestKeySetsBeforeAnyFetch(t *testing.T) {
	dev, err := identity.GenerateDevIssuer()
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock(epoch)
	v, err := identity.New(identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: "http://127.0.0.1:1/jwks.json"}},
		Audiences: []string{testAudience},
		Dev:       identity.DevConfig{Enabled: true, Namespace: "dev"},
	}, identity.WithClock(clock.Now), identity.WithDevIssuer(dev))
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	clock.Add(time.Hour)
	got := map[string]identity.KeySetStatus{}
	for _, ks := range v.KeySets() {
		got[ks.Issuer] = ks
	}
	if ks := got[testIssuer]; ks.Age != time.Hour {
		t.Errorf("never fetched: %+v, want age 1h", ks)
	}
	if ks, ok := got[identity.DevIssuerName]; !ok || ks.Age != 0 {
		t.Errorf("dev issuer: %+v (%v), want age 0", ks, ok)
	}
}

// With identity.max_key_age, an issuer's keys stop verifying once its key
// set has not been fetched for that long: a key the issuer removed (to
// revoke it) cannot outlive the outage that keeps Deputy from seeing the
// removal. A token of that issuer, remembered as verified or not, is
// refused (stale_keys), and fetches the key set again under the rate
// bound of an unknown kid; once a fetch succeeds it verifies again.
// Without the setting the last keys keep verifying.
func TestMaxKeyAge(t *testing.T) {
	_, ek, _, _ := keys(t)
	for _, tc := range []struct {
		name      string
		maxKeyAge time.Duration
		reason    string
	}{
		{name: "off by default", reason: ""},
		{name: "set", maxKeyAge: 2 * time.Minute, reason: identity.ReasonStaleKeys},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJWKSServer(t, jwks(ek))
			clock := newClock(epoch)
			v := startURLVerifierWith(t, identity.Config{
				Issuers:         []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: srv.URL}},
				Audiences:       []string{testAudience},
				RefreshInterval: time.Minute,
				MaxKeyAge:       tc.maxKeyAge,
			}, clock)
			tok := sign(t, ek, ek.kid, goodClaims(epoch))
			if _, err := v.Verify(context.Background(), bearer(tok)); err != nil {
				t.Fatalf("fresh keys: %v", err)
			}
			srv.set([]byte("<html>maintenance</html>"))
			clock.Add(3 * time.Minute)
			v.Refresh(context.Background())
			before := srv.fetches.Load()
			_, err := v.Verify(context.Background(), bearer(tok))
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("keys 3m old: reason %q (%v), want %q", got, err, tc.reason)
			}
			if tc.reason == "" {
				return
			}
			if got := srv.fetches.Load() - before; got != 1 {
				t.Fatalf("the refused token made %d key set fetches, want 1", got)
			}
			_, err = v.Verify(context.Background(), bearer(tok))
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("again at once: reason %q (%v), want %q", got, err, tc.reason)
			}
			if got := srv.fetches.Load() - before; got != 1 {
				t.Fatalf("within the rate bound: %d fetches, want 1", got)
			}
			srv.set(jwks(ek))
			clock.Add(identity.MissRetry)
			if _, err := v.Verify(context.Background(), bearer(tok)); err != nil {
				t.Fatalf("once the provider answers: %v", err)
			}
		})
	}
}
