package identity_test

import (
	"context"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar/identity"
)

// Readiness is whether every issuer has keys, and a key set fetch in
// flight must not hold its answer: any client starts one with a junk
// token naming an unknown kid, and an identity provider that hangs keeps
// it in flight up to fetch_timeout, again and again. Were the probe to
// wait for it, the kubelet would take every replica out of its Service
// while every check is decided with the keys loaded.
func TestReadyAnswersDuringKeySetFetch(t *testing.T) {
	_, ek, _, other := keys(t)
	srv := newJWKSServer(t, jwks(ek))
	clock := newClock(epoch)
	// A fetch ends only when the test releases it: a held one is an
	// identity provider that hangs.
	v := startURLVerifierWith(t, identity.Config{
		Issuers:      []identity.IssuerConfig{{Issuer: testIssuer, JWKSURL: srv.URL}},
		Audiences:    []string{testAudience},
		FetchTimeout: time.Hour,
	}, clock)
	junk := sign(t, other, "nobody-knows", goodClaims(epoch))
	known := sign(t, ek, ek.kid, goodClaims(epoch))

	for _, tc := range []struct {
		name  string
		fetch func()
	}{
		{name: "fetch an unknown kid started", fetch: func() { v.Verify(context.Background(), bearer(junk)) }},
		{name: "periodic refresh", fetch: func() { v.Refresh(context.Background()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.Add(time.Minute) // past the unknown kid's rate bound
			arrived, release := srv.hold(t)
			fetched := make(chan struct{})
			go func() {
				defer close(fetched)
				tc.fetch()
			}()
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("no key set fetch started")
			}
			ready := make(chan error, 1)
			go func() { ready <- v.Ready() }()
			select {
			case err := <-ready:
				if err != nil {
					t.Fatalf("Ready() = %v with the issuer's keys loaded", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Ready() waits for the key set fetch in flight")
			}
			if _, err := v.Verify(context.Background(), bearer(known)); err != nil {
				t.Fatalf("token of a loaded key during the fetch: %v", err)
			}
			release()
			<-fetched
		})
	}
}

// Ready answers for the issuer without a namespace, the storefront's own;
// the issuers with a namespace beside it, partners' identity providers,
// are NamespacedReady's, so that one whose keys cannot be fetched does not
// keep a pod out of service while the others' tokens verify.
func TestReadyLeavesNamespacedIssuersApart(t *testing.T) {
	_, ek, _, other := keys(t)
	shopSrv, partnerSrv := newJWKSServer(t, jwks(ek)), newJWKSServer(t, []byte("<html>down</html>"))
	clock := newClock(epoch)
	v := startURLVerifierWith(t, identity.Config{
		Issuers: []identity.IssuerConfig{
			{Issuer: testIssuer, JWKSURL: shopSrv.URL},
			{Issuer: partnerIssuer, JWKSURL: partnerSrv.URL, Namespace: "partner"},
		},
		Audiences: []string{testAudience},
	}, clock)
	if !v.HasNamespacedReadiness() {
		t.Fatal("HasNamespacedReadiness() = false beside a namespaced issuer")
	}
	if err := v.Ready(); err != nil {
		t.Errorf("Ready() = %v with the shop issuer's keys loaded", err)
	}
	if err := v.NamespacedReady(); err == nil {
		t.Error("NamespacedReady() = nil with the partner's keys never fetched")
	}
	partnerSrv.set(jwks(other))
	v.Refresh(context.Background())
	if err := v.NamespacedReady(); err != nil {
		t.Errorf("NamespacedReady() = %v once the partner's keys are fetched", err)
	}
	shopSrv.set([]byte("<html>down</html>"))
	v.Refresh(context.Background())
	if err := v.Ready(); err != nil {
		t.Errorf("Ready() = %v with the shop issuer's previous keys held", err)
	}
}

// With issuers that all have a namespace, or one alone, Ready answers for
// every one as before.
func TestReadyWithoutNamespacedIssuersApart(t *testing.T) {
	srv := newJWKSServer(t, []byte("<html>down</html>"))
	clock := newClock(epoch)
	v := startURLVerifierWith(t, identity.Config{
		Issuers:   []identity.IssuerConfig{{Issuer: partnerIssuer, JWKSURL: srv.URL, Namespace: "partner"}},
		Audiences: []string{testAudience},
	}, clock)
	if v.HasNamespacedReadiness() {
		t.Error("HasNamespacedReadiness() = true for a lone issuer")
	}
	if err := v.Ready(); err == nil {
		t.Error("Ready() = nil with the lone issuer's keys never fetched")
	}
	if err := v.NamespacedReady(); err != nil {
		t.Errorf("NamespacedReady() = %v, want nil when Ready answers for every issuer", err)
	}
}
