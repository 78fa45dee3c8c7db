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
