package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deputyhq/deputy/sidecar"
	"github.com/deputyhq/deputy/sidecar/actortoken"
	"github.com/deputyhq/deputy/sidecar/authz"
)

// Identity headers and actor tokens are kept per delegation and shared
// between checks. Under many concurrent checks for many delegations, with
// tokens replaced every few checks, every allowed check gets the headers
// of its own delegation and a token naming its own actor, subject and
// grant.
func TestIdentityHeadersPerCheckUnderConcurrency(t *testing.T) {
	key, err := actortoken.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var tick atomic.Int64
	start := time.Now()
	// Each signature moves the signer's clock on by 4 s: a token is
	// reused for at most 15 s, so tokens change every few checks.
	signer, err := actortoken.New(actortoken.Defaults(), actortoken.WithKeys(key),
		actortoken.WithClock(func() time.Time { return start.Add(time.Duration(tick.Add(4)) * time.Second) }))
	if err != nil {
		t.Fatal(err)
	}
	resolver := sidecar.DelegationResolverFunc(func(_ context.Context, r *sidecar.Request, _ *sidecar.Identity) (*sidecar.Delegation, error) {
		n := r.Headers["x-test-grant"]
		return &sidecar.Delegation{Mode: sidecar.ModePartner, ID: "g" + n, Actor: "actor-" + n, Subject: "cust-" + n,
			Level: "update", ExpiresAt: start.Add(24 * time.Hour)}, nil
	})
	p := authz.New(engineFor(t, "data.t.decision", "package t\n\ndecision := true\n", nil), authz.WithQuery("data.t.decision"),
		authz.WithResolvers(resolver), authz.WithActorTokenSigner(signer))

	const workers, checks, grants = 16, 150, 24
	var wg sync.WaitGroup
	var tokens sync.Map
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range checks {
				n := fmt.Sprint((w*7 + i) % grants)
				req := checkRequest(t, `{"attributes":{"request":{"http":{"method":"GET","path":"/","headers":{"x-test-grant":"`+n+`"}}}}}`)
				// The signer's time before the check: a token it hands
				// out then is still valid.
				before := start.Add(time.Duration(tick.Load()) * time.Second)
				tok, err := injectedFor(p.Check(context.Background(), req), n, before)
				if err != nil {
					errs <- err
					return
				}
				tokens.Store(tok, true)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	distinct := 0
	tokens.Range(func(any, any) bool { distinct++; return true })
	if distinct < 4*grants {
		t.Errorf("%d tokens for %d grants: tokens were not replaced during the test", distinct, grants)
	}
}

// injectedFor checks a response carries the identity headers, and an
// actor token, of grant n, the token valid after before; it returns the
// token.
func injectedFor(resp *authz.Response, n string, before time.Time) (string, error) {
	if !resp.Allowed {
		return "", fmt.Errorf("grant %s: denied (%s)", n, resp.Reason)
	}
	got := map[string]string{}
	for _, h := range resp.Injected {
		got[h.Key] = h.Value
	}
	want := map[string]string{"x-deputy-subject": "cust-" + n, "x-deputy-actor": "actor-" + n, "x-deputy-session": "g" + n,
		"x-deputy-mode": "partner", "x-deputy-level": "update", "x-on-behalf-of": "cust-" + n}
	for k, v := range want {
		if got[k] != v {
			return "", fmt.Errorf("grant %s: %s = %q, want %q", n, k, got[k], v)
		}
	}
	parts := strings.Split(got["x-deputy-token"], ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("grant %s: no actor token: %v", n, resp.Injected)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c actortoken.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", err
	}
	if c.Subject != "cust-"+n || c.Actor.Subject != "actor-"+n || c.Deputy.SessionID != "g"+n {
		return "", fmt.Errorf("grant %s: token for sub %q act %q sid %q", n, c.Subject, c.Actor.Subject, c.Deputy.SessionID)
	}
	if c.Expiry <= before.Unix() {
		return "", fmt.Errorf("grant %s: token expired at %d, before the check (%d)", n, c.Expiry, before.Unix())
	}
	return got["x-deputy-token"], nil
}
